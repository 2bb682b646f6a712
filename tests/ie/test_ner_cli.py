"""End-to-end NER student behaviour through the CLI, with a tiny random BERT."""

import json
from pathlib import Path

import pytest

from adaptlab.data.records import Record, Span, read_records, write_records
from zorb_records import zorb_records

DEMO = Path(__file__).resolve().parents[2] / "src" / "adaptlab" / "resources" / "demo"
FAST = ["training.progress=false", "training.per_device_eval_batch_size=64", "training.min_steps=0"]


def synthetic_records(n: int, seed: int) -> list[Record]:
    """An easy task a tiny model can learn: 'Zorb' words are ANIMAL, 'lake' words are PLACE."""
    return zorb_records(n, seed, ["Zorbfish", "Zorbtoad", "Zorbowl"], ["lake", "lakeside", "lakeshore"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    """Train once on the synthetic task; the run directory is shared by the tests below."""
    from adaptlab.cli import main

    root = tmp_path_factory.mktemp("ner")
    write_records(synthetic_records(160, 0), root / "train.jsonl")
    write_records(synthetic_records(40, 1), root / "dev.jsonl")
    run = root / "run"
    code = main(["ner", "train", "--train", str(root / "train.jsonl"), "--dev", str(root / "dev.jsonl"),
                 "--model", str(tiny_bert_dir), "--output", str(run), "--epochs", "12", "--lr", "3e-3",
                 "training.per_device_train_batch_size=16", "training.early_stopping_patience=12", *FAST])
    assert code == 0
    return root, run


def test_run_directory_is_complete(trained):
    _, run = trained
    assert {"config.yaml", "metrics.json", "report.html", "log.txt", "model"} <= {p.name for p in run.iterdir()}
    assert not (run / "checkpoints").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["labels"] == ["O", "B-ANIMAL", "I-ANIMAL", "B-PLACE", "I-PLACE"]
    assert any("eval_macro_f1" in h for h in metrics["history"])
    html = (run / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3


def test_student_learns_the_task(trained, run_cli):
    root, run = trained
    write_records(synthetic_records(40, 2), root / "test.jsonl")
    code, out, _ = run_cli("ner", "evaluate", "--model", run, "--data", root / "test.jsonl", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["strict"]["macro"]["f1"] > 0.9
    assert report["token"]["macro"]["f1"] > 0.9


def test_predict_text_input_and_output(trained, run_cli, tmp_path):
    root, run = trained
    code, out, _ = run_cli("ner", "predict", "--model", run, "--text", "the Zorbtoad lives near a lake")
    assert code == 0
    record = json.loads(out)
    assert [(record["text"][s:e], lab) for s, e, lab in record["spans"]] == [
        ("Zorbtoad", "ANIMAL"), ("lake", "PLACE")]
    assert len(record["meta"]["span_scores"]) == 2
    texts = tmp_path / "texts.txt"
    texts.write_text("a Zorbowl\nquiet lakeshore\n")
    out_file = tmp_path / "pred.jsonl"
    assert run_cli("ner", "predict", "--model", run, "--input", texts, "--output", out_file)[0] == 0
    assert len(read_records(out_file)) == 2
    code, _, err = run_cli("ner", "predict", "--model", run, "--input", texts, "--output", out_file)
    assert code == 2 and "already exists" in err


def test_saved_model_works_in_plain_pipeline(trained):
    from transformers import pipeline

    _, run = trained
    tagger = pipeline("token-classification", model=str(run / "model"), aggregation_strategy="first")
    groups = tagger("the Zorbfish lives near a lake")
    assert {g["entity_group"] for g in groups} == {"ANIMAL", "PLACE"}


def test_conll_training_file_is_accepted(tmp_path, tiny_bert_dir, run_cli):
    conll = tmp_path / "train.conll"
    conll.write_text("Zorbfish\tB-ANIMAL\nnear\tO\nlake\tB-PLACE\n\nthe\tO\nZorbowl\tB-ANIMAL\n")
    code, _, err = run_cli("ner", "train", "--train", conll, "--model", tiny_bert_dir, "--output",
                           tmp_path / "run", "--epochs", "1", "dev_fraction=0", *FAST)
    assert code == 0, err


@pytest.mark.parametrize("case", ["missing_model", "label_mismatch", "existing_output", "empty_train",
                                  "three_columns", "bad_config_key", "missing_config", "span_outside"])
def test_bad_input_is_a_clear_error(case, trained, tmp_path, tiny_bert_dir, run_cli):
    root, run = trained
    train = str(root / "train.jsonl")
    base = ["ner", "train", "--model", str(tiny_bert_dir), "--epochs", "1", *FAST]
    if case == "missing_model":
        args, needle = ["ner", "evaluate", "--model", tmp_path / "nope", "--data", train], "does not exist"
    elif case == "label_mismatch":
        bad = tmp_path / "bad.jsonl"
        write_records([Record("a Zorbfish", [Span(2, 10, "FISH")])], bad)
        args, needle = ["ner", "evaluate", "--model", run, "--data", bad], "'FISH'"
    elif case == "existing_output":
        args, needle = base + ["--train", train, "--output", run], "already exists"
    elif case == "empty_train":
        (tmp_path / "empty.jsonl").write_text("")
        args, needle = base + ["--train", tmp_path / "empty.jsonl"], "empty.jsonl: file is empty"
    elif case == "three_columns":
        (tmp_path / "x.conll").write_text("a\tO\nZorb fish\tB-ANIMAL\n")
        args, needle = base + ["--train", tmp_path / "x.conll"], "x.conll:2"
    elif case == "bad_config_key":
        args, needle = base + ["--train", train, "training.lr=1"], "unknown key 'training.lr'"
    elif case == "missing_config":
        args, needle = ["ner", "train", tmp_path / "c.yaml", *base[2:], "--train", train], "c.yaml not found"
    else:
        (tmp_path / "o.jsonl").write_text('{"text": "abc", "spans": [[1, 9, "X"]]}\n')
        args, needle = base + ["--train", tmp_path / "o.jsonl"], "o.jsonl:1"
    before = sorted(p.name for p in run.iterdir())
    code, out, err = run_cli(*args)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err
    assert sorted(p.name for p in run.iterdir()) == before


def test_debug_flag_shows_the_traceback(tmp_path):
    from adaptlab.cli import main
    from adaptlab.errors import ModelError

    with pytest.raises(ModelError):
        main(["--debug", "ner", "evaluate", "--model", str(tmp_path / "nope"), "--data", "x.jsonl"])


def test_evaluate_writes_a_run_directory_from_config(trained, run_cli, tmp_path):
    root, run = trained
    config = tmp_path / "eval.yaml"
    config.write_text(f"model: {run}\ndata: {root / 'dev.jsonl'}\nbatch_size: 8\n")
    out = tmp_path / "eval-run"
    code, _, err = run_cli("ner", "evaluate", config, "--output", out, "constrained_decoding=false")
    assert code == 0, err
    assert {"config.yaml", "metrics.json", "report.html", "log.txt", "predictions.jsonl"} == {
        p.name for p in out.iterdir()}
    assert "evaluating" in (out / "log.txt").read_text()
    assert "constrained_decoding: false" in (out / "config.yaml").read_text()
    assert len(read_records(out / "predictions.jsonl")) == 40
    code, _, err = run_cli("ner", "evaluate", config, "--output", out)
    assert code == 2 and "already exists" in err


def test_predict_reads_a_conll_file_as_records_not_lines(trained, run_cli, tmp_path):
    _, run = trained
    conll = tmp_path / "gold.txt"
    conll.write_text("the\tO\nZorbfish\tB-ANIMAL\nswims\tO\n\na\tO\nlake\tB-PLACE\n", encoding="utf-8")
    code, out, err = run_cli("ner", "predict", "--model", run, "--input", conll)
    assert code == 0, err
    assert [json.loads(line)["text"] for line in out.splitlines()] == ["the Zorbfish swims", "a lake"]


def test_a_text_longer_than_the_model_reads_is_tagged_in_overlapping_windows(trained, run_cli):
    """The tiny model reads 128 positions: a 301-word text is tagged in windows, to its last word."""
    _, run = trained
    sentence = "the Zorbfish lives near a quiet lake"
    long_text = " ".join([sentence] * 43)
    code, out, err = run_cli("ner", "predict", "--model", run, "--text", long_text)
    assert code == 0, err
    record = json.loads(out)
    assert record["meta"]["windows"] >= 3 and "untagged_words" not in record["meta"]
    found = [(record["text"][s:e], label) for s, e, label in record["spans"]]
    assert found == [("Zorbfish", "ANIMAL"), ("lake", "PLACE")] * 43  # as the sentence alone is tagged
    assert record["spans"][-1][1] == len(long_text)
    assert "warning" not in err


def test_training_longer_records_than_the_position_table_does_not_crash(tmp_path, tiny_bert_dir, run_cli):
    """tiny_bert_dir has 128 positions and the default max_length is 256: inputs are cut at 128."""
    records = synthetic_records(8, 3) + [Record(" ".join(["Zorbfish lives near a lake"] * 40),
                                                [Span(0, 8, "ANIMAL")])]
    write_records(records, tmp_path / "train.jsonl")
    code, _, err = run_cli("ner", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                           "--output", tmp_path / "run", "--epochs", "1", *FAST)
    assert code == 0, err
