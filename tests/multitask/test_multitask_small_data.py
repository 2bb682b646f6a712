"""``multitask train`` on little data behaves as the single-task students do: at least ``training.min_steps``
optimizer steps, no dev set held out below the minimum, a warning for a dev file too small, and one for each task
whose head has collapsed on its own training data."""

from __future__ import annotations

import json

import yaml
from task_data import FAST, write_config


def test_few_examples_train_the_minimum_budget_and_say_why(tmp_path, tiny_bert_dir, run_cli):
    config = write_config(tmp_path, tiny_bert_dir, tasks=("species", "topic"))
    spec = yaml.safe_load(config.read_text())
    spec["tasks"]["species"]["dev"] = None  # 10% of 48 records would be 5 dev records
    config.write_text(yaml.safe_dump(spec))
    code, _, err = run_cli("multitask", "train", config, "--output", tmp_path / "run", "--epochs", "1",
                           "training.min_steps=30", *FAST)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    plan = metrics["training_plan"]
    # 48 ner records + 32 topic examples in batches of 8: 10 batches an epoch; one epoch would be 10 steps
    assert (plan["steps_per_epoch"], plan["steps"], plan["extended"], plan["trained_steps"]) == (10, 30, True, 30)
    species, topic = metrics["tasks"]["species"], metrics["tasks"]["topic"]
    assert (species["train_examples"], species["dev_examples"], "dev_f1" in species) == (48, 0, False)
    assert metrics["best_mean_dev_f1"] == topic["dev_f1"]  # only the task with dev data is scored
    assert any(note.startswith("task species: no dev set held out: dev_fraction=0.1 of 48 records would be 5")
               for note in metrics["notes"])
    assert any("training runs min_steps=30 steps instead" in note for note in metrics["notes"])
    assert metrics["warnings"][0] == (
        "task topic: the dev set has only 12 examples (fewer than 20), so the checkpoint chosen on it and the stopping "
        "point are mostly chance; with this little data give no dev file and let training run its fixed budget "
        "(dev_fraction=0, training.min_steps)")
    assert "warning: task topic: the dev set has only 12 examples" in err
    assert "task species: no dev set held out" in (tmp_path / "run" / "log.txt").read_text()
    html = (tmp_path / "run" / "report.html").read_text()
    assert "<h2>Warnings</h2>" in html and "<h2>Training notes</h2>" in html


def test_a_collapsed_task_is_a_warning_naming_it(tmp_path, tiny_bert_dir, run_cli):
    config = write_config(tmp_path, tiny_bert_dir, tasks=("species", "relations", "topic"))
    code, _, err = run_cli("multitask", "train", config, "--output", tmp_path / "run", "training.max_steps=2",
                           "training.learning_rate=1e-9", *FAST)
    assert code == 0, err
    warnings = json.loads((tmp_path / "run" / "metrics.json").read_text())["warnings"]
    collapsed = [w for w in warnings if "degenerate model" in w]
    assert [w.split(":")[0] for w in collapsed] == ["task relations", "task topic"]  # the random ner head guesses
    assert "task topic: degenerate model: it predicts only 'water' on 32 of its own training rows" in collapsed[1]
    assert all(f"warning: {w}" in err for w in collapsed)
