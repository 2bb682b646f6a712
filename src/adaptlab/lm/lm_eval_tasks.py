"""lm-evaluation-harness task YAML in and out: its multiple-choice tasks run here, ours run there.

Why: users already have lm-eval tasks (fin-harness, their own) and want one number from either tool.
:func:`load_lm_eval_task` reads an lm-eval ``output_type: multiple_choice`` YAML over a local JSON
dataset into an :class:`~adaptlab.lm.mc_tasks.MCTask`, building every prompt and choice the way
lm-eval 0.4.x does for a zero-shot run with ``--model hf``; :func:`export_lm_eval_task` writes one of
our tasks as such a YAML plus its data, so ``lm_eval --include_path DIR --tasks NAME`` scores exactly
the prompts we score.

Supported YAML (anything else is a :class:`DataError` naming the key)::

    task: NAME                         output_type: multiple_choice
    dataset_path: json                 dataset_kwargs: {data_files: FILE | [FILE] | {SPLIT: FILE}}
    test_split: SPLIT (or validation_split)
    doc_to_text, doc_to_choice, doc_to_target, description: a field name or a Jinja template
    target_delimiter (default " "), fewshot_delimiter, num_fewshot: 0
    metric_list: acc, acc_norm         tag, metadata, training_split, fewshot_split (not used)

lm-eval's rules, followed here: a value that names a field of the documents is that field; any other
string is a Jinja template (undefined variables are errors; lm-eval's ``regex_replace`` filter); a
``doc_to_choice`` template must render a Python list literal; a ``doc_to_target`` that renders digits
is a choice index, other text must be one of the choices. The prompt is ``description +
doc_to_text``; choice ``i`` is scored as ``target_delimiter + choices[i]``. Relative ``data_files``
are read from the YAML's folder first, then from the working directory (lm-eval's only place). Data
files are JSON Lines or one JSON array of objects. Python hooks (``!function``), few-shot prompts,
``process_docs``, filters and multiple-input tasks are refused, because a silently different prompt
would be a different benchmark.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import yaml

from adaptlab.data.records import iter_json_lines
from adaptlab.errors import DataError
from adaptlab.lm.mc_tasks import MCItem, MCTask, load_mc_task
from adaptlab.metrics.lm import read_text_file
from adaptlab.runs import atomic_write_jsonl, atomic_write_text, refuse_existing

YAML_SUFFIXES = (".yaml", ".yml")
SUPPORTED_KEYS = {"task", "dataset_path", "dataset_name", "dataset_kwargs", "test_split", "validation_split",
                  "training_split", "fewshot_split", "output_type", "doc_to_text", "doc_to_choice", "doc_to_target",
                  "target_delimiter", "fewshot_delimiter", "description", "num_fewshot", "metric_list", "metadata",
                  "tag"}
SUPPORTED_METRICS = {"acc", "acc_norm"}
METRIC_KEYS = {"metric", "aggregation", "higher_is_better"}


class _PythonHook(str):
    """A ``!function module.name`` value: lm-eval runs Python there, adaptlab refuses it."""


class _TaskLoader(yaml.SafeLoader):
    pass


_TaskLoader.add_constructor("!function", lambda loader, node: _PythonHook(loader.construct_scalar(node)))


def load_task(path: str | Path, name: str | None = None) -> MCTask:
    """An lm-eval YAML task (``.yaml``/``.yml``) or our JSONL task format (anything else)."""
    if Path(path).suffix.lower() in YAML_SUFFIXES:
        return load_lm_eval_task(path, name)
    return load_mc_task(path, name)


def _template_environment():
    from jinja2 import BaseLoader, Environment, StrictUndefined

    environment = Environment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
    environment.filters["regex_replace"] = lambda text, pattern, repl, count=0: re.sub(pattern, repl, text,
                                                                                     count=count)
    return environment


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError("task file not found", path)
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskLoader)
    except yaml.YAMLError as exc:
        raise DataError(f"not valid YAML ({exc})", path) from None
    if not isinstance(config, dict):
        raise DataError("an lm-eval task YAML must be a mapping of keys (task, dataset_path, doc_to_text, ...)", path)
    unknown = sorted(set(config) - SUPPORTED_KEYS)
    if unknown:
        raise DataError(f"unsupported lm-eval task key(s) {unknown}; adaptlab runs zero-shot multiple-choice tasks "
                        f"over local JSON data with the keys {sorted(SUPPORTED_KEYS)}", path)
    hooks = sorted(key for key, value in config.items() if isinstance(value, _PythonHook))
    if hooks:
        raise DataError(f"{hooks[0]} is a Python hook (!function {config[hooks[0]]}), which adaptlab does not run; "
                        "write it as a field name or a Jinja template", path)
    return config


def _check_config(config: dict[str, Any], path: Path) -> None:
    if config.get("output_type") != "multiple_choice":
        raise DataError(f"output_type {config.get('output_type')!r} is not supported; adaptlab scores "
                        "output_type: multiple_choice tasks", path)
    if config.get("num_fewshot", 0) != 0:
        raise DataError(f"num_fewshot {config['num_fewshot']} is not supported; adaptlab scores zero-shot", path)
    for key in ("doc_to_text", "doc_to_choice", "doc_to_target"):
        if key not in config:
            raise DataError(f"missing key {key!r}", path)
    for entry in config.get("metric_list") or []:
        metric = entry.get("metric") if isinstance(entry, dict) else None
        if metric not in SUPPORTED_METRICS or set(entry) - METRIC_KEYS:
            raise DataError(f"metric_list entry {entry!r} is not supported; adaptlab computes "
                            f"{sorted(SUPPORTED_METRICS)} (mean, higher is better)", path)
    if config.get("dataset_path") != "json" or config.get("dataset_name") is not None:
        raise DataError(f"dataset_path {config.get('dataset_path')!r}: adaptlab reads local data only; use "
                        "dataset_path: json with dataset_kwargs: {data_files: FILE} (nothing is downloaded)", path)
    if set(config.get("dataset_kwargs") or {}) != {"data_files"}:
        raise DataError("dataset_kwargs must hold data_files only (a local JSON or JSON Lines file per split)", path)


def _data_file(config: dict[str, Any], path: Path) -> tuple[Path, str]:
    """The file of the split lm-eval would evaluate (test_split, else validation_split)."""
    split = config.get("test_split") or config.get("validation_split")
    if not split:
        raise DataError("missing key 'test_split' (or 'validation_split'): the split to evaluate", path)
    files = config["dataset_kwargs"]["data_files"]
    if isinstance(files, dict):
        if split not in files:
            raise DataError(f"data_files has no split {split!r} (it has {sorted(files)})", path)
        files = files[split]
    elif split != "train":  # HF datasets puts un-named data files in the split "train"
        raise DataError(f"data_files without split names form the split 'train', not {split!r}", path)
    if isinstance(files, list):
        if len(files) != 1:
            raise DataError("give one data file per split", path)
        files = files[0]
    for candidate in (path.parent / files, Path(files)):
        if candidate.is_file():
            return candidate, split
    raise DataError(f"data file {files} not found (looked beside the YAML and in the working directory)", path)


def read_documents(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line or element number, document)`` of a JSON Lines file or a JSON array of objects."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON ({exc.msg}, line {exc.lineno})", path) from None
    else:
        rows = list(iter_json_lines(path))
    for number, row in rows:
        if not isinstance(row, dict):
            raise DataError("each document must be a JSON object", path, number)
    if not rows:
        raise DataError("the data file holds no documents", path)
    return rows


class _DocRenderer:
    """lm-eval's doc_to_* resolution: a field of the documents, else a Jinja template."""

    def __init__(self, config: dict[str, Any], fields: set[str], data: Path):
        self.config, self.fields, self.data = config, fields, data
        self.environment = _template_environment()
        self.compiled: dict[str, Any] = {}

    def is_template(self, key: str) -> bool:
        return isinstance(self.config[key], str) and self.config[key] not in self.fields

    def render(self, key: str, doc: dict[str, Any], number: int) -> Any:
        from jinja2 import TemplateError

        value = self.config[key]
        if not self.is_template(key):
            return doc[value] if isinstance(value, str) else value
        try:
            if key not in self.compiled:
                self.compiled[key] = self.environment.from_string(value)
            return self.compiled[key].render(**doc)
        except TemplateError as exc:
            raise DataError(f"{key} {value!r} does not render for this document ({exc})", self.data, number) from None

    def choices(self, doc: dict[str, Any], number: int) -> list[str]:
        value = self.render("doc_to_choice", doc, number)
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise DataError(f"doc_to_choice renders {value!r}, which is not a Python list literal", self.data,
                                number) from None
        if isinstance(value, dict):
            value = list(value.values())
        if not isinstance(value, list) or not value:
            raise DataError(f"doc_to_choice renders no choices ({value!r}); it must give a non-empty list of "
                            "strings", self.data, number)
        if not all(isinstance(choice, str) for choice in value):
            raise DataError(f"doc_to_choice gives non-string choices {value!r}", self.data, number)
        return value

    def target(self, doc: dict[str, Any], number: int, choices: list[str]) -> int:
        value = self.render("doc_to_target", doc, number)
        if self.is_template("doc_to_target") and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise DataError(f"doc_to_target gives {value!r}; adaptlab scores one target per document (an index "
                            "or a choice's text)", self.data, number)
        if isinstance(value, str):
            if value not in choices:
                raise DataError(f"doc_to_target {value!r} is not one of the choices {choices}", self.data, number)
            value = choices.index(value)
        if not 0 <= value < len(choices):
            raise DataError(f"doc_to_target {value} is out of range for {len(choices)} choices", self.data, number)
        return value


def load_lm_eval_task(path: str | Path, name: str | None = None) -> MCTask:
    """An lm-eval multiple-choice task YAML as an MCTask (module docstring); errors name the file and key."""
    path = Path(path)
    config = _read_yaml(path)
    _check_config(config, path)
    data, _ = _data_file(config, path)
    documents = read_documents(data)
    renderer = _DocRenderer(config, {key for _, doc in documents for key in doc}, data)
    delimiter = config.get("target_delimiter", " ")
    items = []
    for number, doc in documents:
        text = renderer.render("doc_to_text", doc, number)
        if not isinstance(text, str) or (renderer.is_template("doc_to_text") and text.isdigit()):
            raise DataError(f"doc_to_text gives {text!r}: multiple-input tasks (the text picks a choice) are not "
                            "supported", data, number)
        description = renderer.render("description", doc, number) if config.get("description") else ""
        choices = renderer.choices(doc, number)
        answer = renderer.target(doc, number, choices)
        items.append(MCItem(line=number, id=str(doc.get("id", f"doc {number - 1}")), prompt=description + text,
                            delimiter=delimiter, choices=choices, answer=answer))
    shared = config["doc_to_choice"] if isinstance(config["doc_to_choice"], list) else None
    return MCTask(name=name or str(config.get("task") or path.stem), path=str(path),
                  prompt_template=str(config["doc_to_text"]),
                  choice_template=f"target_delimiter {delimiter!r} + doc_to_choice {config['doc_to_choice']}",
                  shared_choices=shared, items=items)


def _write_task(output_dir: str | Path, name: str, rows: list[dict[str, Any]], settings: dict[str, Any]) -> Path:
    """``NAME.jsonl`` (the rows) and ``NAME.yaml`` (a task over that local file) in a new folder; the YAML path."""
    output = refuse_existing(output_dir, "output")
    output.mkdir(parents=True, exist_ok=True)
    data = output / f"{name}.jsonl"
    config = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
              "test_split": "test", **settings}
    atomic_write_jsonl(data, rows)
    return atomic_write_text(output / f"{name}.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


def export_lm_eval_task(task: MCTask, output_dir: str | Path) -> Path:
    """Write ``NAME.yaml`` and ``NAME.jsonl`` to ``output_dir`` (new or empty); returns the YAML path.

    Each row holds the rendered prompt, the choices and the answer index; the YAML names them as
    fields, so lm-eval reads the very prompts adaptlab scores. An item whose choices start with
    another delimiter than the first item's cannot share one ``target_delimiter`` and is an error.
    """
    delimiters = {item.delimiter for item in task.items}
    if len(delimiters) > 1:
        raise DataError(f"the items' choices start with different whitespace ({sorted(delimiters)}); lm-eval has one "
                        "target_delimiter per task", task.path)
    rows = [{"id": item.id, "prompt": item.prompt, "choices": item.choices, "answer": item.answer}
            for item in task.items]
    return _write_task(output_dir, task.name, rows, {
        "output_type": "multiple_choice", "doc_to_text": "prompt", "doc_to_choice": "choices",
        "doc_to_target": "answer", "target_delimiter": delimiters.pop(),
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")],
        "metadata": {"version": 1.0, "exported_from": task.path}})


def export_perplexity_task(name: str, documents: list[str], source: str, output_dir: str | Path) -> Path:
    """The documents of a text file as an lm-eval ``loglikelihood_rolling`` task (word and byte perplexity,
    bits per byte, as lm-eval's wikitext reports them); returns the YAML path."""
    return _write_task(output_dir, name, [{"text": text} for text in documents], {
        "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "text",
        "metric_list": [{"metric": m} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")],
        "metadata": {"version": 1.0, "exported_from": source}})


def export_task(source: Path, output_dir: str | Path, name: str | None = None) -> tuple[str, str, Path]:
    """A ``.txt`` file as a perplexity task, anything else as a multiple-choice task (:func:`load_task`).

    Returns ``(task name, what it holds, e.g. "12 items", YAML path)``.
    """
    if source.suffix.lower() == ".txt":
        documents = read_text_file(source)
        name = name or source.stem
        return name, f"{len(documents)} documents", export_perplexity_task(name, documents, str(source), output_dir)
    task = load_task(source, name)
    return task.name, f"{len(task.items)} items", export_lm_eval_task(task, output_dir)
