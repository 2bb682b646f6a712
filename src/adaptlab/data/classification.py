"""Text-classification examples: one text and its label (or labels), read from JSONL, CSV/TSV or label-text lines.

Formats (``format="auto"`` picks by suffix: ``.jsonl``/``.json`` JSONL, ``.csv`` CSV, ``.tsv`` TSV, anything else
label-text lines):

* **jsonl**: one object per line, ``{"text": "...", "label": "pos"}``; multi-label ``"label": ["a", "b"]`` (a
  single string is one label, ``[]`` none). Integer labels are read as their decimal string.
* **csv** / **tsv**: a header row naming the columns; the text and label columns are chosen by name. Multi-label
  cells hold the labels separated by ``|`` (:data:`LABEL_SEPARATOR`): ``sports|politics``; an empty cell is none.
* **label-text**: ``LABEL TEXT`` per line, the label being the first whitespace-separated token, as in the
  few-shot benchmark files (``1 this is great``); multi-label ``a|b some text``. Blank lines are skipped.

Every problem is a :class:`DataError` naming file:line: malformed JSON or CSV rows, an empty text, a missing
label, a missing column (naming the columns there are), a list label without ``multi_label``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.data.records import iter_json_lines, iter_table_rows, read_text_lines
from adaptlab.errors import DataError

LABEL_SEPARATOR = "|"
FORMATS = ("jsonl", "csv", "tsv", "label-text")
SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}
_INTEGER = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Example:
    """One classification example; ``labels`` has exactly one entry for single-label data. ``line`` is 1-based."""

    text: str
    labels: list[str]
    line: int


def detect_format(path: str | Path, fmt: str = "auto") -> str:
    """``fmt`` checked against :data:`FORMATS`, or with ``auto`` the format of ``path``'s suffix."""
    if fmt == "auto":
        return SUFFIX_FORMATS.get(Path(path).suffix.lower(), "label-text")
    if fmt not in FORMATS:
        raise DataError(f"unknown classification format {fmt!r}; use auto, {', '.join(FORMATS)}", path)
    return fmt


def read_examples(path: str | Path, format: str = "auto", text_column: str = "text", label_column: str = "label",
                  multi_label: bool = False) -> list[Example]:
    """All examples of ``path``; see the module docstring for the formats and the errors."""
    fmt = detect_format(path, format)
    if fmt == "jsonl":
        rows = _jsonl_rows(path, text_column, label_column)
    elif fmt in ("csv", "tsv"):
        rows = _table_rows(path, "\t" if fmt == "tsv" else ",", text_column, label_column)
    else:
        rows = _label_text_rows(path)
    examples = [_example(path, line, text, label, multi_label) for line, text, label in rows]
    if not examples:
        raise DataError("holds no examples", path)
    return examples


def texts_to_classify(path: str | Path, format: str = "auto", text_column: str = "text") -> list[str]:
    """Only the texts of a file to classify: JSONL objects' or the CSV/TSV column's texts (labels not needed),
    else one text per non-blank line (a plain text file; label-text lines are not guessed)."""
    fmt = detect_format(path, format)
    if fmt == "jsonl":
        texts = [_field(obj, text_column, path, line) for line, obj in _objects(path)]
    elif fmt in ("csv", "tsv"):
        table = _columns(path, "\t" if fmt == "tsv" else ",", [text_column])
        texts = [row[text_column] for _, row in table]
    else:
        texts = [line for line in read_text_lines(path) if line.strip()]
    if not texts:
        raise DataError("holds no texts", path)
    return texts


def label_set(examples: Iterable[Example]) -> list[str]:
    """The labels used, in natural order: numbers by value ("2" before "10"), then the others alphabetically."""
    found = {label for example in examples for label in example.labels}
    return sorted(found, key=lambda label: (0, int(label), "") if _INTEGER.fullmatch(label) else (1, 0, label))


def check_known_labels(examples: Sequence[Example], known: Sequence[str], where: str) -> None:
    """Refuse ``examples`` with labels outside ``known`` (a model could never predict them)."""
    unknown = sorted(set(label_set(examples)) - set(known))
    if unknown:
        raise DataError(f"{where} has the labels {unknown}, which the training data (the model) does not have "
                        f"(it has {list(known)}); relabel the data or train with these labels")


def _objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    for line, obj in iter_json_lines(path):
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object per line, got {type(obj).__name__}", path, line)
        yield line, obj


def _field(obj: dict, column: str, path: str | Path, line: int) -> Any:
    if column not in obj:
        raise DataError(f"no {column!r} key (the object has {sorted(obj)}); set text_column / label_column "
                        "to the keys your data uses", path, line)
    return obj[column]


def _jsonl_rows(path: str | Path, text_column: str, label_column: str) -> Iterator[tuple[int, Any, Any]]:
    for line, obj in _objects(path):
        yield line, _field(obj, text_column, path, line), _field(obj, label_column, path, line)


def _columns(path: str | Path, delimiter: str, columns: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """:func:`iter_table_rows`, whose missing-column error says which keys choose the columns."""
    return iter_table_rows(path, delimiter, columns, hint="set text_column / label_column to the columns your "
                                                          "data uses")


def _table_rows(path, delimiter: str, text_column: str, label_column: str) -> Iterator[tuple[int, Any, Any]]:
    for line, row in _columns(path, delimiter, [text_column, label_column]):
        yield line, row[text_column], _split_cell(row[label_column])


def _split_cell(cell: str) -> list[str] | str:
    """A label cell: one label, or with the separator a list (``"a|b"`` -> ``["a", "b"]``)."""
    if LABEL_SEPARATOR in cell:
        return [part.strip() for part in cell.split(LABEL_SEPARATOR)]
    return cell.strip()


def _label_text_rows(path: str | Path) -> Iterator[tuple[int, Any, Any]]:
    for line, raw in enumerate(read_text_lines(path), start=1):
        if not raw.strip():
            continue
        parts = raw.strip().split(maxsplit=1)
        if len(parts) < 2:
            raise DataError(f"expected 'LABEL TEXT', got only {parts[0]!r}; each line is a label, a space "
                            "and the text", path, line)
        yield line, parts[1], _split_cell(parts[0])


def _example(path: str | Path, line: int, text: Any, label: Any, multi_label: bool) -> Example:
    """Check one row's text and label(s) and build the example; every error names file:line."""
    if not isinstance(text, str):
        raise DataError(f"the text must be a string, got {type(text).__name__}", path, line)
    if not text.strip():
        raise DataError("empty text", path, line)
    labels = label if isinstance(label, list) else [label]
    for value in labels:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise DataError(f"a label must be a string (or an integer), got {value!r}", path, line)
    labels = [str(value).strip() for value in labels]
    if any(not value for value in labels) and not (multi_label and labels == [""]):
        raise DataError("empty label", path, line)
    if multi_label:
        return Example(text, sorted(set(labels) - {""}), line)
    if len(labels) != 1:
        raise DataError(f"{len(labels)} labels {labels} for a single-label task; set multi_label: true for "
                        "multi-label data", path, line)
    return Example(text, labels, line)
