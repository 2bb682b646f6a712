"""Text classification on tens of examples: no dev set of a handful of texts, the step budget, and a warning (exit
0) when the classifier predicts one label for everything."""

from __future__ import annotations

import json
from pathlib import Path

from test_cls_cli import single_label_rows, write_jsonl

FAST = ["training.progress=false", "training.per_device_train_batch_size=8", "training.min_steps=30"]


def test_tens_of_examples_train_everything_for_the_budget(tiny_bert_dir, run_cli, tmp_path):
    """24 texts, 3 labels: 10% would be 3 dev texts (one per label), under the 30 a dev score needs."""
    write_jsonl(tmp_path / "train.jsonl", single_label_rows(24, 0))
    code, out, err = run_cli("cls", "train", "--train", tmp_path / "train.jsonl", "--model", tiny_bert_dir,
                             "--output", tmp_path / "run", "--lr", "3e-3", *FAST)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["train_examples"], metrics["dev_examples"], "dev" in metrics) == (24, 0, False)
    assert metrics["notes"][0].startswith("no dev set held out: dev_fraction=0.1 of 24 examples would be 3, "
                                          "fewer than the 30")
    assert (metrics["training_plan"]["steps"], metrics["training_plan"]["trained_steps"]) == (30, 30)
    assert "note: no dev set held out" in " ".join(out.split())


def test_a_small_dev_file_and_a_collapsed_classifier_are_warnings(tiny_bert_dir, run_cli, tmp_path):
    """A rate of 5 sends the tiny classifier to one label for every text: exit 0, and it says so."""
    write_jsonl(tmp_path / "train.jsonl", single_label_rows(24, 0))
    write_jsonl(tmp_path / "dev.jsonl", single_label_rows(6, 1))
    code, out, err = run_cli("cls", "train", "--train", tmp_path / "train.jsonl", "--dev", tmp_path / "dev.jsonl",
                             "--model", tiny_bert_dir, "--output", tmp_path / "run", "--lr", "5", *FAST)
    assert code == 0, err
    small, collapsed = json.loads(Path(tmp_path / "run" / "metrics.json").read_text())["warnings"]
    assert small.startswith("the dev set has only 6 examples (fewer than 30)")
    assert collapsed.startswith("degenerate model: it predicts only ") and "on 24 of its own training rows" in collapsed
    assert "warning: degenerate model" in " ".join(out.split())
