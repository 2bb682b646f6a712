"""The demo students' test scores reach their own run: metrics.json, the report and the model card (a tiny random
BERT stands in for MiniLM; the real student's numbers are checked by the slow demo tests)."""

from __future__ import annotations

import json

from adaptlab.recipes import ner
from adaptlab.recipes.demo import demo_data, score_on_demo_test


def test_the_demo_test_scores_are_written_into_the_students_run(tmp_path, tiny_bert_dir):
    run, metrics = ner.train(ner.NERTrainConfig(
        name="tiny-demo-student", model=str(tiny_bert_dir), train=str(demo_data()[0]), output=str(tmp_path / "run"),
        training={"progress": False, "num_train_epochs": 1, "min_steps": 0}))
    assert "test" not in json.loads(run.metrics.read_text())

    scored = score_on_demo_test(run, metrics, "tiny demo student, scored on the demo test set")

    written = json.loads(run.metrics.read_text())
    assert written["test"] == scored["test"] and written["test_triples"] == scored["test_triples"]
    assert written["train_records"] == metrics["train_records"]
    card = (run.model / "README.md").read_text()
    assert f"| test strict macro F1 | {scored['test']['strict']['macro']['f1']:.4g}" in card
    assert "scored on the demo test set" in run.report.read_text()
