"""lm-evaluation-harness task YAML: read into our tasks with lm-eval's prompts, exported back, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from adaptlab.errors import DataError
from adaptlab.lm.lm_eval_tasks import export_lm_eval_task, load_lm_eval_task, load_task
from adaptlab.recipes.lm_evaluate import resolve_input

DOCS = [
    {"q": "Which usually carries more risk?", "options": ["a bond", "a stock"], "label": "B", "topic": "risk"},
    {"q": "What do rising rates do to bond prices?", "options": ["raise them", "lower them", "nothing"],
     "label": "B", "topic": "rates"},
]
JINJA_TASK = {
    "task": "quiz", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": "quiz.jsonl"}},
    "test_split": "test", "output_type": "multiple_choice",
    "description": "Answer the {{topic}} question.\n\n",
    "doc_to_text": "Question: {{q}}\n{% for o in options %}{{ 'ABCD'[loop.index0] }}. {{o}}\n{% endfor %}Answer:",
    "doc_to_choice": "{{ ['A','B','C','D'][:options|length] }}",
    "doc_to_target": "{{ ['A','B','C','D'].index(label) }}",
    "metric_list": [{"metric": "acc"}, {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
}


def write(folder: Path, config: dict, docs: list[dict] = DOCS, data: str = "quiz.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / data).write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    path = folder / "quiz.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def lm_eval_requests(folder: Path, name: str) -> list[tuple[str, str]]:
    from lm_eval.tasks import TaskManager

    task = TaskManager(include_path=[str(folder)], include_defaults=False).load([name])["tasks"][name]
    task.build_all_requests(rank=0, world_size=1)
    return [inst.arguments for inst in sorted(task.instances, key=lambda i: (i.doc_id, i.idx))]


def test_prompts_and_choices_equal_the_requests_lm_eval_builds(tmp_path):
    path = write(tmp_path, {**JINJA_TASK, "dataset_kwargs": {"data_files": {"test": str(tmp_path / "quiz.jsonl")}}})
    task = load_lm_eval_task(path)
    ours = [(item.prompt, continuation) for item in task.items for continuation in item.continuations]
    assert ours == lm_eval_requests(tmp_path, "quiz")
    assert task.name == "quiz" and [item.answer for item in task.items] == [1, 1]
    assert task.items[0].prompt.startswith("Answer the risk question.\n\nQuestion: Which")


def test_field_names_text_targets_and_shared_choices(tmp_path):
    docs = [{"sentence": "Sales rose.", "sentiment": "positive"}, {"sentence": "Profit fell.", "sentiment": "negative"}]
    config = {"task": "sent", "dataset_path": "json", "dataset_kwargs": {"data_files": "quiz.jsonl"},
              "validation_split": "train", "output_type": "multiple_choice", "doc_to_text": "sentence",
              "doc_to_choice": ["positive", "negative"], "doc_to_target": "sentiment", "target_delimiter": ": "}
    task = load_task(write(tmp_path, config, docs))
    assert task.shared_choices == ["positive", "negative"]
    assert task.items[1].prompt == "Profit fell." and task.items[1].continuations == [": positive", ": negative"]
    assert [item.answer for item in task.items] == [0, 1]


def test_a_json_array_and_data_beside_the_yaml(tmp_path, monkeypatch):
    folder = tmp_path / "tasks"
    path = write(folder, {**JINJA_TASK, "dataset_kwargs": {"data_files": {"test": "quiz.json"}}}, data="quiz.json")
    (folder / "quiz.json").write_text(json.dumps(DOCS), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # relative data files resolve beside the YAML first
    assert len(load_lm_eval_task(path).items) == 2


def test_export_then_import_gives_the_same_task(tmp_path):
    original = load_task(resolve_input("packaged:finance_basics"))
    exported = load_lm_eval_task(export_lm_eval_task(original, tmp_path / "out"))
    assert exported.name == "finance_basics" and len(exported.items) == len(original.items)
    for a, b in zip(original.items, exported.items):
        assert (a.id, a.prompt, a.continuations, a.answer) == (b.id, b.prompt, b.continuations, b.answer)
    with pytest.raises(Exception, match="already exists"):
        export_lm_eval_task(original, tmp_path / "out")


@pytest.mark.parametrize(("change", "message"), [
    ({"process_docs": "x"}, r"unsupported lm-eval task key\(s\) \['process_docs'\]"),
    ({"output_type": "generate_until"}, "output_type 'generate_until' is not supported"),
    ({"num_fewshot": 5}, "num_fewshot 5 is not supported; adaptlab scores zero-shot"),
    ({"dataset_path": "EleutherAI/arc"}, "dataset_path 'EleutherAI/arc': adaptlab reads local data only"),
    ({"dataset_kwargs": {"data_files": {"test": "absent.jsonl"}}}, "data file absent.jsonl not found"),
    ({"test_split": "validation"}, "data_files has no split 'validation'"),
    ({"metric_list": [{"metric": "f1"}]}, "metric_list entry {'metric': 'f1'} is not supported"),
    ({"doc_to_choice": "{{ [] }}"}, "quiz.jsonl:1: doc_to_choice renders no choices"),
    ({"doc_to_choice": "{{ q }}"}, "quiz.jsonl:1: doc_to_choice renders 'Which usually carries more risk\\?', which "
                                   "is not a Python list literal"),
    ({"doc_to_target": "{{ topic }}"}, r"quiz.jsonl:1: doc_to_target 'risk' is not one of the choices \[.A., .B.\]"),
    ({"doc_to_target": "{{ 7 }}"}, "quiz.jsonl:1: doc_to_target 7 is out of range for 2 choices"),
    ({"doc_to_text": "{{ question }}"}, "quiz.jsonl:1: doc_to_text '{{ question }}' does not render"),
])
def test_unsupported_or_broken_tasks_name_the_key(tmp_path, change, message):
    path = write(tmp_path, {**JINJA_TASK, **change})
    with pytest.raises(DataError, match=message):
        load_lm_eval_task(path)


def test_python_hooks_are_refused_by_name(tmp_path):
    path = write(tmp_path, JINJA_TASK)
    path.write_text(path.read_text().replace("doc_to_target: '{{", "doc_to_target: !function utils.target #"),
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"quiz.yaml: doc_to_target is a Python hook \(!function utils.target"):
        load_lm_eval_task(path)
    path.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(DataError, match="must be a mapping"):
        load_lm_eval_task(path)
