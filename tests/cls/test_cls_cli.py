"""Text classification end to end through the CLI with a tiny random BERT: train, evaluate, predict, pipeline()."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

# A tiny random BERT learns two labels first and the third after a plateau of up to 12 epochs (so no early
# stopping); 30 epochs of batch 8 at 3e-3 reached dev macro F1 1.0 from each of 8 random initialisations tried.
FAST = ["training.progress=false", "training.early_stopping_patience=null", "training.per_device_train_batch_size=8",
        "training.min_steps=0"]
KEYWORDS = {"sport": ["football", "goal", "match"], "food": ["pizza", "pasta", "soup"],
            "tech": ["laptop", "phone", "chip"]}
FILLERS = ["the", "a", "today", "great", "new", "my", "was", "very"]


def sentence(rng: random.Random, labels: list[str]) -> str:
    """A few filler words and one keyword per label, shuffled: an easy task a tiny model learns in seconds."""
    words = [rng.choice(FILLERS) for _ in range(3)] + [rng.choice(KEYWORDS[label]) for label in labels]
    rng.shuffle(words)
    return " ".join(words)


def single_label_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": sentence(rng, [label]), "label": label} for label in (rng.choice(list(KEYWORDS))
                                                                          for _ in range(n))]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    """Train once (with an empty strategy block from the shared registry); the tests below share the run."""
    from adaptlab.cli import main

    root = tmp_path_factory.mktemp("cls")
    write_jsonl(root / "train.jsonl", single_label_rows(120, 0))
    write_jsonl(root / "dev.jsonl", single_label_rows(30, 1))
    write_jsonl(root / "test.jsonl", single_label_rows(60, 2))
    run = root / "run"
    code = main(["cls", "train", "--train", root / "train.jsonl", "--dev", root / "dev.jsonl", "--model",
                 tiny_bert_dir, "--output", run, "--epochs", "30", "--lr", "3e-3", "strategy={}", *FAST])
    assert code == 0
    return root, run


def test_run_directory_is_complete(trained):
    _, run = trained
    assert {"config.yaml", "metrics.json", "report.html", "log.txt", "model"} <= {p.name for p in run.iterdir()}
    assert not (run / "checkpoints").exists()
    assert "strategy: {}" in (run / "config.yaml").read_text()
    assert "dev set has only" not in (run / "log.txt").read_text()  # 30 dev texts, 10 per label: no warning
    assert json.loads((run / "metrics.json").read_text())["warnings"] == []
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["labels"] == ["food", "sport", "tech"]
    assert (metrics["train_examples"], metrics["dev_examples"], metrics["multi_label"]) == (120, 30, False)
    assert metrics["dev"]["macro_f1"] > 0.9
    assert any("eval_macro_f1" in row for row in metrics["history"])
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # F1 per class, confusion matrix, learning curve
    assert "Confusion matrix" in html and "Per class" in html


def test_evaluate_scores_held_out_data(trained, run_cli):
    root, run = trained
    code, out, _ = run_cli("cls", "evaluate", "--model", run, "--data", root / "test.jsonl", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["examples"] == 60 and report["accuracy"] > 0.9 and report["macro_f1"] > 0.9
    assert set(report["per_class"]) == {"food", "sport", "tech"}
    assert sum(map(sum, report["confusion"]["matrix"])) == 60

    code, _, _ = run_cli("cls", "evaluate", "--model", run / "model", "--data", root / "test.jsonl",
                         "--output", root / "eval")
    assert code == 0
    written = json.loads((root / "eval" / "metrics.json").read_text())
    assert written["accuracy"] == report["accuracy"]
    rows = [json.loads(line) for line in (root / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and {"text", "label", "gold", "scores"} <= set(rows[0])
    assert sum(row["label"] == row["gold"] for row in rows) / 60 == pytest.approx(report["accuracy"])
    assert (root / "eval" / "report.html").read_text().count("data:image/png;base64,") == 2


def test_predict_texts_and_files(trained, run_cli, tmp_path):
    _, run = trained
    code, out, _ = run_cli("cls", "predict", "--model", run, "--text", "my pizza was great",
                           "--text", "a new laptop today")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["label"] for row in rows] == ["food", "tech"]
    assert sum(rows[0]["scores"].values()) == pytest.approx(1.0, abs=1e-3)  # softmax over the labels

    texts = tmp_path / "texts.txt"
    texts.write_text("the goal\n\nsoup today\n", encoding="utf-8")
    code, _, _ = run_cli("cls", "predict", "--model", run, "--input", texts, "--output", tmp_path / "p.jsonl")
    assert code == 0
    assert [json.loads(line)["label"] for line in (tmp_path / "p.jsonl").read_text().splitlines()] == ["sport", "food"]
    code, _, err = run_cli("cls", "predict", "--model", run, "--input", texts, "--output", tmp_path / "p.jsonl")
    assert code == 2 and "already exists" in err
    code, _, err = run_cli("cls", "predict", "--model", run)
    assert code == 2 and "--input FILE" in err


def test_saved_model_works_in_a_transformers_pipeline(trained):
    from transformers import pipeline

    from adaptlab.recipes.cls import predict

    _, run = trained
    texts = ["my pizza was great", "the match today", "a phone"]
    ours = predict(str(run), texts)
    theirs = pipeline("text-classification", model=str(run / "model"), top_k=None, device="cpu")(texts)
    for mine, scores in zip(ours, theirs):
        assert max(scores, key=lambda s: s["score"])["label"] == mine["label"]
        assert {s["label"]: round(s["score"], 4) for s in scores} == pytest.approx(mine["scores"], abs=1e-4)


def test_unhappy_paths_exit_2_with_one_line(trained, run_cli, tiny_bert_dir):
    root, run = trained
    bad_dev = write_jsonl(root / "bad_dev.jsonl", [{"text": "the goal", "label": "sport"},
                                                   {"text": "the news", "label": "politics"}])
    code, _, err = run_cli("cls", "train", "--train", root / "train.jsonl", "--dev", bad_dev, "--model",
                           tiny_bert_dir, "--output", root / "never", *FAST)
    assert code == 2 and "['politics']" in err and "food" in err
    assert not (root / "never").exists()
    code, _, err = run_cli("cls", "evaluate", "--model", run, "--data", bad_dev)
    assert code == 2 and "the evaluation data has the labels ['politics']" in err
    one_label = write_jsonl(root / "one.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])
    code, _, err = run_cli("cls", "train", "--train", one_label, "--model", tiny_bert_dir, *FAST)
    assert code == 2 and "needs at least two" in err
    code, _, err = run_cli("cls", "train", "--train", root / "train.jsonl", "text_column=sentence", "--model",
                           tiny_bert_dir, *FAST)
    assert code == 2 and "no 'sentence' key (the object has ['label', 'text'])" in err
    code, _, err = run_cli("cls", "train", "--train", root / "train.jsonl", "strategy.nope={}", *FAST)
    assert code == 2 and "unknown key 'strategy.nope'" in err
    code, _, err = run_cli("cls", "predict", "--model", tiny_bert_dir, "--text", "some text")
    assert code == 2 and "BertModel, not a sequence classifier" in err


def test_multi_label_end_to_end(tiny_bert_dir, run_cli, tmp_path):
    rng = random.Random(0)
    sets = [sorted(rng.sample(list(KEYWORDS), rng.randint(0, 2))) for _ in range(240)]
    lines = ["text,label"] + [f"{sentence(rng, labels)},{'|'.join(labels)}" for labels in sets]
    (tmp_path / "all.csv").write_text("\n".join(lines[:201]) + "\n", encoding="utf-8")
    (tmp_path / "test.csv").write_text("\n".join(lines[:1] + lines[201:]) + "\n", encoding="utf-8")
    config = tmp_path / "cls.yaml"
    config.write_text("multi_label: true\nstrategy: {}\ntraining:\n  learning_rate: 3.0e-3\n"
                      "  num_train_epochs: 30\n", encoding="utf-8")
    # (slower to learn than one label: from 5 random initialisations, test micro F1 0.71-1.0 after 30 epochs)
    code, _, err = run_cli("cls", "train", config, "train=all.csv", "--model", tiny_bert_dir, "--output", "run",
                           "dev_fraction=0.2", *FAST)
    assert code == 0, err
    model_config = json.loads(Path("run/model/config.json").read_text())
    assert model_config["problem_type"] == "multi_label_classification"
    assert json.loads(Path("run/metrics.json").read_text())["dev_examples"] > 30  # held out from train

    code, out, _ = run_cli("cls", "evaluate", "--model", "run", "--data", tmp_path / "test.csv", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["multi_label"] and report["examples"] == 40
    assert report["micro_f1"] > 0.75 and report["subset_accuracy"] > 0.5  # predicting every label: micro F1 0.5
    assert report["accuracy"] == report["subset_accuracy"]

    code, out, _ = run_cli("cls", "predict", "--model", "run", "--text", "the pizza and the laptop",
                           "--text", "the day")
    rows = [json.loads(line) for line in out.splitlines()]
    for row in rows:  # a sigmoid per label (they need not sum to 1), each label taken at p >= 0.5
        assert row["labels"] == [label for label, p in row["scores"].items() if p >= 0.5]
    assert "food" in rows[0]["labels"] and sum(rows[0]["scores"].values()) > 1.2
    assert rows[1]["labels"] == []
