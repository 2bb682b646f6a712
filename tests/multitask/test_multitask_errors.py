"""Bad multi-task input through the CLI: one line naming the task and key, exit 2, and no run directory."""

from __future__ import annotations

import json

import pytest
from task_data import FAST, write_config


def fail(run_cli, tmp_path, config, *overrides) -> str:
    """Run ``multitask train`` expecting a user error; the error line."""
    code, out, err = run_cli("multitask", "train", config, "--output", tmp_path / "run", *overrides, *FAST)
    assert code == 2, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in out + err
    assert not (tmp_path / "run").exists()
    return errors[0]


@pytest.mark.parametrize("overrides, needles", [
    (["tasks.species.type=pos"], ["tasks.species.type: Input should be 'ner', 're' or 'cls'", "'pos'"]),
    (["tasks.species.text_column=body"], ["tasks.species: text_column applies to cls tasks only",
                                          "this task has type ner"]),
    (["tasks.species.negatives=false"], ["tasks.species: negatives applies to re tasks only"]),
    (["tasks={'my task': {type: ner, train: ner.jsonl}}"], ["tasks: the task name 'my task' may hold only"]),
    (["temperature=3"], ["temperature applies to sampling: temperature only, not proportional"]),
    (["training.group_by_length=true"], ["training.group_by_length: multitask batches are drawn one task at a time"]),
    (["sampling=mixed"], ["sampling: Input should be 'proportional', 'equal' or 'temperature'"]),
])
def test_a_bad_tasks_map_is_a_config_error(overrides, needles, tmp_path, tiny_bert_dir, run_cli):
    error = fail(run_cli, tmp_path, write_config(tmp_path, tiny_bert_dir), *overrides)
    assert error.startswith("error: invalid config")
    for needle in needles:
        assert needle in error, error


@pytest.mark.parametrize("tasks, needle", [
    ("", "tasks: no tasks; give at least one"),
    ("tasks: {}\n", "tasks: no tasks; give at least one"),
    ("tasks: {species: {train: ner.jsonl}}\n", "tasks.species.type: Field required"),
    ("tasks: {species: ner.jsonl}\n", "tasks.species: Input should be a valid dictionary"),
])
def test_no_tasks_or_a_task_without_a_type(tasks, needle, tmp_path, tiny_bert_dir, run_cli):
    config = tmp_path / "tasks.yaml"
    config.write_text(f"model: {tiny_bert_dir}\n{tasks}")
    assert needle in fail(run_cli, tmp_path, config)


@pytest.mark.parametrize("task, key, content, needle", [
    ("species", "train", "", "file is empty"),
    ("species", "train", None, "file not found"),
    ("species", "train", '{"text": "no spans here", "spans": []}\n', "has no entity spans"),
    ("species", "train", '{"text": "a Zorbfish", "spans": [[2, 10, "ANIMAL"]]}\n{"text": \n', ":2: invalid JSON"),
    ("species", "dev", '{"text": "a Zorbfish", "spans": [[2, 10, "FISH"]]}\n', "entity types ['FISH']"),
    ("relations", "train", '{"text": "Zorbfish eats algae", "spans": [[0, 8, "SPECIES"], [14, 19, "FEEDING"]]}\n',
     "holds no relations"),
    ("relations", "train", '{"text": "Zorbfish eats algae", "spans": [[0, 8, "SPECIES"], [14, 19, "FEEDING"]], '
                           '"relations": [[0, 1, "feed_on"]]}\n', "gives the relation labels ['feed_on']"),
    ("topic", "train", "", "file is empty"),
    ("topic", "train", '{"text": "the lake", "label": "water"}\n', "has the labels ['water']"),
    ("topic", "train", '{"body": "the lake", "label": "water"}\n', "no 'text' key"),
    ("topic", "dev", '{"text": "the lake", "label": "sky"}\n', "has the labels ['sky']"),
])
def test_bad_task_data_names_the_task_and_the_key(task, key, content, needle, tmp_path, tiny_bert_dir, run_cli):
    config = write_config(tmp_path, tiny_bert_dir)
    path = tmp_path / f"bad-{task}-{key}.jsonl"
    if content is not None:
        path.write_text(content)
    error = fail(run_cli, tmp_path, config, f"tasks.{task}.{key}={path}")
    assert error.startswith(f"error: tasks.{task}.{key}: "), error
    assert needle in error, error


def test_a_good_config_passes_these_checks(tmp_path, tiny_bert_dir):
    """The checks above fail for their reason, not the base config's: it loads, and its data reads."""
    from adaptlab.config import load_config
    from adaptlab.recipes.multitask import MultitaskConfig
    from adaptlab.recipes.multitask_data import read_task

    cfg = load_config(MultitaskConfig, write_config(tmp_path, tiny_bert_dir))
    inputs = [read_task(name, task, 0.1, 0) for name, task in cfg.tasks.items()]
    assert [(t.name, t.type, len(t.train), len(t.dev)) for t in inputs] == [
        ("species", "ner", 48, 16), ("relations", "re", 24, 12), ("topic", "cls", 32, 12)]
    saved = json.loads(cfg.model_dump_json())["tasks"]
    assert set(saved["species"]) == {"type", "train", "dev"}  # the other types' keys are not written
    assert set(saved["relations"]) == {"type", "train", "dev", "negatives", "derive_relations"}
