"""The ``tasks:`` map of ``adaptlab multitask train``: each task's config, and its data read and checked.

Each task is read as its single-task command reads it (``ner train``: records in any format; ``re train``: records
with relations or the marker CSV, turned into marked pairs with ``no_relation`` negatives; ``cls train``: JSONL,
CSV/TSV or label-text examples) and held out for dev the same way, with the same minimum dev size
(``data.splits``: below it nothing is held out, and a dev file that small gets a warning). Every problem is one
message that begins with the task and key, ``tasks.<name>.train: <file>: ...``, before anything is trained or
written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_serializer, model_validator

from adaptlab.config import StrictModel
from adaptlab.data.classification import check_known_labels, label_set, read_examples
from adaptlab.data.io import load_records
from adaptlab.data.splits import DEV_EXAMPLES_PER_LABEL, MIN_DEV_RECORDS, dev_split
from adaptlab.errors import AdaptlabError, ConfigError, DataError, ModelError
from adaptlab.ie.ner import check_labels
from adaptlab.ie.relations import relation_examples
from adaptlab.ie.tagging import bio_labels, entity_types
from adaptlab.recipes.cls import DataFormat
from adaptlab.recipes.relations import DERIVE_HELP, DeriveRelations, relation_records
from adaptlab.synth.schema import resolve_schema

TASK_TYPES = ("ner", "re", "cls")
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
ONLY_FOR = {"negatives": "re", "derive_relations": "re", "format": "cls", "text_column": "cls",
            "label_column": "cls", "multi_label": "cls"}  # keys that one task type reads


class TaskConfig(StrictModel):
    """One task of ``tasks:``: its type and data files; the keys marked re / cls apply to that type only."""

    type: Literal["ner", "re", "cls"] = Field(
        description="ner: entity spans (token classification); re: the relation of a marked span pair; cls: text "
                    "classification (single- or multi-label)")
    train: str = Field(description="training data, read as by `ner train`, `re train` or `cls train`")
    dev: str | None = Field(None, description="dev data; without it dev_fraction of train is held out")
    negatives: bool = Field(True, description="re: unrelated pairs (a span of a type that heads a relation, a span of "
                            "another type) become no_relation examples")
    derive_relations: DeriveRelations = Field(None, description=f"re: {DERIVE_HELP}")
    format: DataFormat = Field("auto", description="cls: auto (by suffix), jsonl, csv, tsv or label-text")
    text_column: str = Field("text", description="cls: the text key or column")
    label_column: str = Field("label", description="cls: the label key or column")
    multi_label: bool = Field(False, description="cls: several labels per text (a sigmoid per label)")

    @model_validator(mode="after")
    def _keys_of_its_type(self) -> TaskConfig:
        foreign = sorted(key for key in self.model_fields_set if ONLY_FOR.get(key, self.type) != self.type)
        if foreign:
            raise ValueError(f"{foreign[0]} applies to {ONLY_FOR[foreign[0]]} tasks only, and this task has type "
                             f"{self.type}")
        return self

    @model_serializer(mode="wrap")
    def _own_keys(self, handler: Any) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if ONLY_FOR.get(key, self.type) == self.type}


def check_tasks(tasks: dict[str, TaskConfig]) -> dict[str, TaskConfig]:
    """At least one task, each named so that it can name a directory (``tasks/<name>/``) and metric keys."""
    if not tasks:
        raise ValueError("no tasks; give at least one, e.g. tasks: {species: {type: ner, train: ner.jsonl}}")
    for name in tasks:
        if not TASK_NAME.fullmatch(name):
            raise ValueError(f"the task name {name!r} may hold only letters, digits, '_' and '-' (it names "
                             "tasks/<name>/ in the run directory and the task's metrics)")
    return tasks


@dataclass
class TaskInput:
    """A task's checked data: ``train``/``dev`` are records (ner), marked pairs (re) or examples (cls), ``labels``
    the head's label names in id order (IOB2 tags for ner); ``notes`` say what the dev split decided (nothing held
    out), ``warnings`` what the user should look at (a dev file too small), each beginning with the task's name."""

    name: str
    type: str
    labels: list[str]
    train: list
    dev: list
    multi_label: bool = False
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@contextmanager
def task_key(name: str, key: str) -> Iterator[None]:
    """Errors inside begin with ``tasks.<name>.<key>: `` (same error class: exit 2 through the CLI)."""
    try:
        yield
    except AdaptlabError as exc:
        kind = DataError if isinstance(exc, DataError) else ModelError if isinstance(exc, ModelError) else ConfigError
        raise kind(f"tasks.{name}.{key}: {exc}") from None


def read_task(name: str, task: TaskConfig, dev_fraction: float, seed: int) -> TaskInput:
    """The data of one task, checked and split (module docstring)."""
    reader = {"ner": _read_ner, "re": _read_re, "cls": _read_cls}[task.type]
    return reader(name, task, dev_fraction, seed)


def _read_ner(name: str, task: TaskConfig, dev_fraction: float, seed: int) -> TaskInput:
    with task_key(name, "train"):
        train = load_records(task.train)
        if not entity_types(train):
            raise DataError("has no entity spans; an ner task learns from labelled spans", task.train)
    dev = None
    if task.dev:
        with task_key(name, "dev"):
            dev = load_records(task.dev)
            check_labels(dev, entity_types(train), f"{task.dev}")
    train, dev, notes, warnings = _dev_split(name, train, dev, dev_fraction, seed, MIN_DEV_RECORDS)
    return TaskInput(name, "ner", bio_labels(entity_types(train)), train, dev, notes=notes, warnings=warnings)


def _read_re(name: str, task: TaskConfig, dev_fraction: float, seed: int) -> TaskInput:
    with task_key(name, "derive_relations"):
        derive_by = resolve_schema(task.derive_relations) if task.derive_relations else None
    with task_key(name, "train"):
        records = relation_records(task.train, derive_by)
    dev_records = None
    if task.dev:
        with task_key(name, "dev"):
            dev_records = relation_records(task.dev, derive_by)
    records, dev_records, notes, warnings = _dev_split(name, records, dev_records, dev_fraction, seed,
                                                       MIN_DEV_RECORDS)
    train, dev = relation_examples(records, task.negatives), relation_examples(dev_records, task.negatives)
    labels = sorted({example.label for example in train})
    with task_key(name, "train"):
        if len(labels) < 2:
            raise DataError(f"gives the relation labels {labels}; a relation classifier needs at least two (with "
                            "negatives: true, unrelated pairs are no_relation)", task.train)
    with task_key(name, "dev" if task.dev else "train"):
        unknown = sorted({example.label for example in dev} - set(labels))
        if unknown:
            raise DataError(f"the dev data has relation labels {unknown} absent from the training data {labels}")
    return TaskInput(name, "re", labels, train, dev, notes=notes, warnings=warnings)


def _read_cls(name: str, task: TaskConfig, dev_fraction: float, seed: int) -> TaskInput:
    columns = {"format": task.format, "text_column": task.text_column, "label_column": task.label_column,
               "multi_label": task.multi_label}
    with task_key(name, "train"):
        train = read_examples(task.train, **columns)
        labels = label_set(train)
        if len(labels) < (1 if task.multi_label else 2):
            raise DataError(f"has the labels {labels}; a single-label classifier needs at least two (set "
                            "multi_label: true for one yes/no label)", task.train)
    dev = None
    if task.dev:
        with task_key(name, "dev"):
            dev = read_examples(task.dev, **columns)
            check_known_labels(dev, labels, f"the dev data {task.dev}")
    train, dev, notes, warnings = _dev_split(name, train, dev, dev_fraction, seed,
                                             DEV_EXAMPLES_PER_LABEL * len(labels), "examples",
                                             stratum=lambda e: tuple(e.labels))
    return TaskInput(name, "cls", labels, train, dev, task.multi_label, notes, warnings)


def _dev_split(name: str, train: list, dev: list | None, dev_fraction: float, seed: int, minimum: int,
               unit: str = "records", stratum: Callable[[Any], Hashable] | None = None
               ) -> tuple[list, list, list[str], list[str]]:
    """``data.splits.dev_split``, as the task's single-task command splits, with notes and warnings that begin
    with the task's name."""
    with task_key(name, "train"):
        train, dev, notes, warnings = dev_split(train, dev, dev_fraction, seed, minimum, unit, stratum)
    return train, dev, [f"task {name}: {note}" for note in notes], [f"task {name}: {w}" for w in warnings]
