"""The model cards of `multitask train`: one per task export, each with its task's data, labels and dev scores, and
a pipeline() snippet that runs as written (the relation export reads a marked sentence)."""

from __future__ import annotations

import json

from task_data import FAST, write_config

from model_cards import read_card, resolved_config, run_load_snippet, section

PIPELINES = {"species": "token-classification", "relations": "text-classification", "topic": "text-classification"}


def test_every_task_export_has_its_own_card(tmp_path, tiny_bert_dir, run_cli):
    config = write_config(tmp_path, tiny_bert_dir)
    code, _, err = run_cli("multitask", "train", config, "--output", tmp_path / "run", "--epochs", "1", *FAST)
    assert code == 0, err
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert not (run / "README.md").exists()
    for name, pipeline in PIPELINES.items():
        export = run / "tasks" / name
        front, body = read_card(export)
        assert (front["pipeline_tag"], front["library_name"]) == (pipeline, "transformers")
        assert "multi-task" in front["tags"]
        assert body.startswith(f"\n# mt-test / {name}: ")
        assert f"It is the `{name}` task" in body and "3 tasks (species, relations, topic)" in body
        task = metrics["tasks"][name]
        assert f"| dev_f1 | {task['dev_f1']:.4g} |" in section(body, "Metrics")
        data = section(body, "Data")
        assert f"- train: `{tmp_path}/" in data and f"- train_examples: {task['train_examples']}" in data
        assert resolved_config(export) == resolved_config(run / "tasks" / "topic")  # the run's whole config
        assert run_load_snippet(export).startswith("[")
    _, body = read_card(run / "tasks" / "relations")
    assert "A relation classifier (BertForSequenceClassification)" in body
    assert "[E1]Aspirin[/E1] relieves [E2]headache[/E2]." in section(body, "How to load it")
    assert "relation-extraction" in read_card(run / "tasks" / "relations")[0]["tags"]
