"""``adaptlab multitask train`` end to end on three tasks with a tiny random BERT: metrics and a report section per
task, the sampling in metrics.json, and exports that ``transformers.pipeline`` and adaptlab's own predictors load,
giving the multi-task model's logits; ``strategy.layers`` reaches the shared encoder, other strategies are refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from task_data import FAST, write_config

TASKS = ("species", "relations", "topic")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    """One run on the three tasks; the multi-task model is caught at export to compare the exports with it."""
    from adaptlab.cli import main
    from adaptlab.recipes import multitask

    root = tmp_path_factory.mktemp("multitask")
    config = write_config(root, tiny_bert_dir, sampling="temperature", temperature=2.0)
    caught = {}

    def export_and_catch(model, name, tokenizer, directory):
        caught["model"] = model
        return multitask_export(model, name, tokenizer, directory)

    multitask_export = multitask.export_task
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(multitask, "export_task", export_and_catch)
        code = main(["multitask", "train", str(config), "--output", str(root / "run"), "--epochs", "6", *FAST])
    assert code == 0
    return root, root / "run", caught["model"].eval()


def test_every_task_is_learnt_scored_and_reported(trained):
    _, run, _ = trained
    assert {p.name for p in run.iterdir()} == {"config.yaml", "metrics.json", "report.html", "log.txt", "tasks"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["tasks"]) == set(TASKS)
    for name in TASKS:
        task = metrics["tasks"][name]
        assert task["dev_f1"] >= 0.8, (name, task["dev_f1"])  # chance is about 0.5 for re and cls, 0 for ner
        assert task["export"] == f"tasks/{name}"
    species = metrics["tasks"]["species"]
    assert species["dev_f1"] == species["dev"]["strict"]["macro"]["f1"]
    assert species["labels"] == ["O", "B-ANIMAL", "I-ANIMAL", "B-PLACE", "I-PLACE"]
    assert metrics["tasks"]["relations"]["labels"] == ["feed_on", "live_in"]
    assert metrics["tasks"]["topic"]["dev"]["accuracy"] >= 0.8
    assert metrics["best_mean_dev_f1"] == pytest.approx(sum(metrics["tasks"][n]["dev_f1"] for n in TASKS) / 3)
    assert not [w for w in metrics["warnings"] if "predicts" in w]  # no task collapsed
    logged = {key for row in metrics["history"] for key in row}
    assert {"loss_species", "loss_relations", "loss_topic", "eval_mean_f1", "eval_species_macro_f1"} <= logged
    html = (run / "report.html").read_text()
    for heading in ("Tasks", "Sampling", "Training", "species (ner): Per type", "relations (re): Per class",
                    "topic (cls): Confusion matrix"):
        assert f"<h2>{heading}</h2>" in html
    saved = (run / "config.yaml").read_text()
    assert "text_column" in saved and saved.count("text_column") == 1  # cls keys only on the cls task


def test_the_epoch_and_the_shares_are_logged_and_recorded(trained):
    _, run, _ = trained
    sampling = json.loads((run / "metrics.json").read_text())["sampling"]
    sizes = {"species": 48, "relations": 24, "topic": 32}
    assert sampling["mode"] == "temperature" and sampling["temperature"] == 2.0
    assert sampling["batches_per_epoch"] == sum(math.ceil(n / 8) for n in sizes.values()) == 13
    root = sum(math.sqrt(n) for n in sizes.values())
    for name, n in sizes.items():
        assert sampling["tasks"][name]["probability"] == pytest.approx(math.sqrt(n) / root, abs=1e-4)
    assert sum(t["batches_per_epoch"] for t in sampling["tasks"].values()) == 13
    assert "one epoch = 13 batches of up to 8 examples" in (run / "log.txt").read_text()


def test_the_exports_share_one_encoder(trained):
    _, run, _ = trained
    weights = {name: load_file(run / "tasks" / name / "model.safetensors") for name in TASKS}
    for key in ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.1.output.dense.weight"):
        assert torch.equal(weights["species"][key], weights["relations"][key])
        assert torch.equal(weights["species"][key], weights["topic"][key])
    assert weights["species"]["bert.embeddings.word_embeddings.weight"].shape[0] == 30522 + 4  # RE's markers
    assert not any(key.startswith("bert.pooler") for key in weights["species"])  # a token classifier has none
    assert not torch.equal(weights["relations"]["classifier.weight"], weights["topic"]["classifier.weight"])


def _task_logits(model, name: str, encoded) -> torch.Tensor:
    index = [spec.name for spec in model.specs].index(name)
    with torch.no_grad():
        return model(task=torch.tensor([index]), **encoded).logits[0]


def test_pipeline_loads_each_export_with_the_multitask_logits(trained):
    from transformers import pipeline

    _, run, model = trained
    tagger = pipeline("token-classification", model=str(run / "tasks" / "species"), ignore_labels=[])
    for text in ("Zorbowl often lives near the lakeside", "a small Zorbfish and a pond"):
        encoded = tagger.tokenizer(text, return_tensors="pt")
        ours = _task_logits(model, "species", encoded)
        with torch.no_grad():
            assert torch.allclose(tagger.model(**encoded).logits[0], ours, atol=1e-5)
        probabilities = torch.softmax(ours, dim=-1)
        rows = tagger(text)
        assert len(rows) == encoded["input_ids"].shape[1] - 2  # every subword but [CLS] and [SEP]
        for row in rows:
            assert row["score"] == pytest.approx(float(probabilities[row["index"]].max()), abs=1e-5)
            assert row["entity"] == model.view("species").config.id2label[int(probabilities[row["index"]].argmax())]
    for name, texts in {"relations": ["[E1]Zorbfish[/E1] eats [E2]algae[/E2]",
                                      "[E1]Zorbtoad[/E1] lives in the [E2]pond[/E2]"],
                        "topic": ["the lake here", "some seeds again"]}.items():
        classifier = pipeline("text-classification", model=str(run / "tasks" / name), top_k=None)
        id2label = model.view(name).config.id2label
        for text, scores in zip(texts, classifier(texts)):
            encoded = classifier.tokenizer(text, return_tensors="pt")
            probabilities = torch.softmax(_task_logits(model, name, encoded), dim=-1)
            assert {row["label"]: row["score"] for row in scores} == pytest.approx(
                {id2label[i]: float(p) for i, p in enumerate(probabilities)}, abs=1e-5)
        assert [max(s, key=lambda row: row["score"])["label"] for s in classifier(texts)] == (
            ["feed_on", "live_in"] if name == "relations" else ["water", "food"])


def test_adaptlab_predictors_load_each_export(trained, run_cli):
    root, run, _ = trained
    metrics = json.loads((run / "metrics.json").read_text())
    code, out, err = run_cli("ner", "evaluate", "--model", run / "tasks" / "species", "--data", root / "ner_dev.jsonl",
                             "--json")
    assert code == 0, err
    assert json.loads(out)["strict"]["macro"]["f1"] == metrics["tasks"]["species"]["dev_f1"]
    code, out, err = run_cli("cls", "predict", "--model", run / "tasks" / "topic", "--text", "the pond there")
    assert code == 0, err
    assert json.loads(out)["label"] == "water"
    code, out, err = run_cli("re", "predict", "--model", run / "tasks" / "relations",
                             "--text", "[E1]Zorbowl[/E1] eats [E2]seeds[/E2]")
    assert code == 0, err
    assert json.loads(out)["label"] == "feed_on"


def test_strategy_layers_freezes_the_shared_encoder(tmp_path, tiny_bert_dir, run_cli):
    from transformers import BertModel

    config = write_config(tmp_path, tiny_bert_dir, tasks=("species", "topic"))
    code, _, err = run_cli("multitask", "train", config, "--output", tmp_path / "run", "--epochs", "1",
                           "strategy.layers.freeze_first=1", "strategy.layers.freeze_embeddings=true", *FAST)
    assert code == 0, err
    before = BertModel.from_pretrained(tiny_bert_dir).state_dict()
    for name in ("species", "topic"):
        after = load_file(tmp_path / "run" / "tasks" / name / "model.safetensors")
        for key in ("embeddings.word_embeddings.weight", "encoder.layer.0.output.dense.weight"):
            assert torch.equal(before[key], after[f"bert.{key}"])
        assert not torch.equal(before["encoder.layer.1.output.dense.weight"],
                               after["bert.encoder.layer.1.output.dense.weight"])
    layers = json.loads((tmp_path / "run" / "metrics.json").read_text())["strategies"]["layers"]
    assert layers["frozen_layers"] == [0] and layers["frozen_embeddings"] is True


@pytest.mark.parametrize("override, needle", [
    ("strategy.peft.r=4", "strategy.peft: multitask train does not apply it: a PEFT adapter wraps one task model"),
    ("strategy.fewshot.examples_per_class=4", "strategy.fewshot: multitask train does not apply it"),
    ("strategy.dynamic.loss=dft", "strategy.dynamic: loss: dft reweights a causal LM's next-token loss"),
])
def test_a_strategy_that_does_not_fit_is_refused_before_anything_is_written(override, needle, tmp_path,
                                                                            tiny_bert_dir, run_cli):
    config = write_config(tmp_path, tiny_bert_dir, tasks=("species", "topic"))
    code, out, err = run_cli("multitask", "train", config, "--output", tmp_path / "run", override, *FAST)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # after transformers' loading bars
    assert len(errors) == 1 and needle in errors[0], err
    assert "Traceback" not in out + err and not (tmp_path / "run").exists()
