"""One entry point for reading and writing records in any supported format.

:data:`FORMATS` maps a format name to its ``(reader, writer)``; adding a format means adding one
entry there (and, if it has its own file suffix, one line in :func:`detect_format`). Readers are
called as ``reader(path, **kw)`` and writers as ``writer(records, path, **kw)``, so format-specific
options (``source="predictions"`` for Label Studio, ``tail_label=`` for markers) pass straight
through :func:`load_records` and :func:`save_records`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from adaptlab.data.formats import conll, hf, labelstudio, markers, spacy_jsonl
from adaptlab.data.records import Record, read_records, write_records
from adaptlab.errors import DataError


class Format(NamedTuple):
    reader: Callable[..., list[Record]]
    writer: Callable[..., Any]


FORMATS: dict[str, Format] = {
    "jsonl": Format(read_records, write_records),
    "conll": Format(conll.read_conll, conll.write_conll),
    "labelstudio": Format(labelstudio.read_labelstudio, labelstudio.write_labelstudio),
    "spacy": Format(spacy_jsonl.read_spacy_jsonl, spacy_jsonl.write_spacy_jsonl),
    "markers": Format(markers.read_markers, markers.write_markers),
    "hf": Format(hf.read_hf, hf.write_hf),
}

# Other names people use for the same formats.
ALIASES = {
    "canonical": "jsonl", "bio": "conll", "iob": "conll", "label-studio": "labelstudio",
    "label_studio": "labelstudio", "ls": "labelstudio", "prodigy": "spacy", "spacy_jsonl": "spacy",
    "csv": "markers", "datasets": "hf",
}

# Suffixes whose format never depends on the content; .jsonl, .tsv and .txt are sniffed.
SUFFIX_FORMATS = {
    ".json": "labelstudio", ".conll": "conll", ".conllu": "conll", ".bio": "conll", ".iob": "conll",
    ".csv": "markers",
}
SNIFF_BYTES = 64 * 1024


def resolve_format(fmt: str) -> str:
    """Canonical format name for ``fmt`` (or an alias); unknown names list the known ones."""
    name = ALIASES.get(fmt.lower(), fmt.lower())
    if name not in FORMATS:
        raise DataError(
            f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)} "
            f"(aliases: {', '.join(sorted(ALIASES))})"
        )
    return name


def _first_lines(path: Path, n: int = 5) -> list[str]:
    """The first non-blank lines, decoded leniently: sniffing must not fail where the reader
    would give a better error (bad bytes are reported with their line by the reader)."""
    with path.open("rb") as fh:
        head = fh.read(SNIFF_BYTES).decode("utf-8-sig", errors="replace")
    lines = [line for line in head.splitlines() if line.strip() and not line.startswith("-DOCSTART-")]
    return lines[:n]


def _looks_spacy(lines: list[str]) -> bool:
    """True when the first line that tells (has spans, relations or tokens) uses span dicts."""
    for line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            return False  # the canonical reader reports the bad line
        if not isinstance(obj, dict):
            return False
        if "tokens" in obj or "_input_hash" in obj:
            return True
        for key in ("spans", "relations"):
            items = obj.get(key)
            if isinstance(items, list) and items:
                return isinstance(items[0], dict)
    return False


def detect_format(path: str | Path) -> str:
    """Guess the format of an existing file or directory from its suffix and first lines."""
    path = Path(path)
    if path.is_dir():
        if hf.is_saved_dataset(path):
            return "hf"
        raise DataError("is a directory but not one written by datasets' save_to_disk", path)
    if not path.exists():
        raise DataError("file not found", path)
    suffix = path.suffix.lower()
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    if suffix not in (".jsonl", ".ndjson", ".tsv", ".txt"):
        raise DataError(
            f"cannot tell the format from the suffix {suffix or '(none)'!r}; pass fmt= one of "
            f"{', '.join(FORMATS)}",
            path,
        )
    lines = _first_lines(path)
    if suffix in (".jsonl", ".ndjson"):
        return "spacy" if _looks_spacy(lines) else "jsonl"
    if any("[E1]" in line or "[E2]" in line for line in lines):
        return "markers"
    if not lines or len(lines[0].split()) == 2 or suffix == ".tsv":
        # An empty file gets the reader's "file is empty" error, a later line with the wrong
        # number of columns the CoNLL reader's file:line error.
        return "conll"
    raise DataError(
        "cannot tell the format: the first lines are neither 'token tag' pairs nor [E1]/[E2] "
        f"marked sentences; pass fmt= one of {', '.join(FORMATS)}",
        path,
    )


def load_records(path: str | Path, fmt: str | None = None, **kw: Any) -> list[Record]:
    """Read records from ``path`` in ``fmt`` (detected when None); ``kw`` goes to the reader."""
    name = resolve_format(fmt) if fmt is not None else detect_format(path)
    return FORMATS[name].reader(path, **kw)


def format_for_output(path: str | Path) -> str:
    """The format :func:`save_records` uses for ``path`` when none is given."""
    suffix = Path(path).suffix.lower()
    by_suffix = {**SUFFIX_FORMATS, ".jsonl": "jsonl", ".ndjson": "jsonl", ".tsv": "conll", ".txt": "conll"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    if not suffix:
        return "hf"
    raise DataError(f"cannot tell the output format from the suffix {suffix!r}; pass fmt=", path)


def save_records(records: Iterable[Record], path: str | Path, fmt: str | None = None, **kw: Any) -> Path:
    """Write records to ``path`` in ``fmt`` (from the suffix when None; no suffix means an HF dataset
    directory); ``kw`` goes to the writer."""
    name = resolve_format(fmt) if fmt is not None else format_for_output(path)
    result = FORMATS[name].writer(list(records), path, **kw)
    return Path(result) if result is not None else Path(path)
