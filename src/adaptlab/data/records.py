"""The canonical record: text, character-offset spans, relations between spans, free metadata.

One JSON object per line::

    {"text": "Frogs live in ponds.", "spans": [[0, 5, "SPECIES"], [14, 19, "HABITAT"]],
     "relations": [[0, 1, "live_in"]], "meta": {"id": "demo-1"}}

Offsets are Python string indices, ``end`` exclusive. A relation ``[h, t, label]`` points at
spans by their index in ``spans``. Every outside format converts to and from this record at the
edge; BIO tags exist only at the model boundary.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.errors import DataError
from adaptlab.runs import atomic_write_text


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    label: str

    def overlaps(self, other: Span) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class Relation:
    head: int
    tail: int
    label: str


@dataclass
class Record:
    text: str
    spans: list[Span] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def span_text(self, span: Span) -> str:
        return self.text[span.start : span.end]

    def validate(self, allow_overlaps: bool = False) -> None:
        """Raise ``ValueError`` naming the first inconsistency (the caller adds file:line)."""
        n = len(self.text)
        for i, s in enumerate(self.spans):
            if not (0 <= s.start < s.end <= n):
                raise ValueError(
                    f"span {i} [{s.start}, {s.end}, {s.label!r}] is outside the text (length {n}) "
                    "or empty; offsets are character indices with end exclusive"
                )
            if not s.label:
                raise ValueError(f"span {i} has an empty label")
        if not allow_overlaps:
            ordered = sorted(enumerate(self.spans), key=lambda p: (p[1].start, p[1].end))
            for (i, a), (j, b) in zip(ordered, ordered[1:]):
                if a.overlaps(b):
                    raise ValueError(
                        f"spans {i} {[a.start, a.end, a.label]} and {j} {[b.start, b.end, b.label]} "
                        "overlap; token tagging needs non-overlapping spans"
                    )
        for k, r in enumerate(self.relations):
            for role, idx in (("head", r.head), ("tail", r.tail)):
                if not 0 <= idx < len(self.spans):
                    raise ValueError(
                        f"relation {k} {role} index {idx} does not name a span (there are {len(self.spans)})"
                    )

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "spans": [[s.start, s.end, s.label] for s in self.spans],
            "relations": [[r.head, r.tail, r.label] for r in self.relations],
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Record:
        """Build a record from a parsed JSON object; raises ``ValueError`` on a wrong shape."""
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        unknown = set(obj) - {"text", "spans", "relations", "meta"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; a record has text, spans, relations, meta")
        text = obj.get("text")
        if not isinstance(text, str):
            raise ValueError("'text' must be a string")
        spans = []
        for i, s in enumerate(obj.get("spans") or []):
            if not (isinstance(s, list | tuple) and len(s) == 3 and _is_int(s[0]) and _is_int(s[1])
                    and isinstance(s[2], str)):
                raise ValueError(f"spans[{i}] must be [start, end, label], got {s!r}")
            spans.append(Span(int(s[0]), int(s[1]), s[2]))
        relations = []
        for i, r in enumerate(obj.get("relations") or []):
            if not (isinstance(r, list | tuple) and len(r) == 3 and _is_int(r[0]) and _is_int(r[1])
                    and isinstance(r[2], str)):
                raise ValueError(f"relations[{i}] must be [head_index, tail_index, label], got {r!r}")
            relations.append(Relation(int(r[0]), int(r[1]), r[2]))
        meta = obj.get("meta") or {}
        if not isinstance(meta, dict):
            raise ValueError("'meta' must be an object")
        return cls(text=text, spans=spans, relations=relations, meta=meta)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


LINE_END = re.compile(r"\r\n|\r|\n")


def read_text_lines(path: str | Path) -> list[str]:
    """Read a UTF-8 text file as lines, with errors that name the file (and line for bad bytes)."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_dir():
        raise DataError("is a directory, expected a file", path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
            path,
            line,
        ) from None
    if not text.strip():
        raise DataError("file is empty", path)
    # only \n, \r\n and \r end a line: str.splitlines() would also split inside a line at U+0085, U+2028, \x0b, ...
    lines = LINE_END.split(text)
    return lines[:-1] if lines[-1] == "" else lines


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed object)`` for every non-blank line of a JSONL file; bad JSON names file:line."""
    for lineno, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})", path, lineno) from None


def read_jsonl_records(
    path: str | Path, parse: Callable[[Any], Record], allow_overlaps: bool = False
) -> list[Record]:
    """Read a JSONL file whose lines ``parse`` turns into records; every error names file:line.

    ``parse`` raises ``ValueError`` for a line of the wrong shape; each record is then validated.
    """
    records = []
    for lineno, obj in iter_json_lines(path):
        try:
            record = parse(obj)
            record.validate(allow_overlaps=allow_overlaps)
        except ValueError as exc:
            raise DataError(str(exc), path, lineno) from None
        records.append(record)
    return records


def read_records(path: str | Path, allow_overlaps: bool = False) -> list[Record]:
    """Read canonical JSONL, validating every line; errors name file:line."""
    return read_jsonl_records(path, Record.from_json, allow_overlaps)


def iter_jsonl(records: Iterable[Record]) -> Iterator[str]:
    for r in records:
        yield json.dumps(r.to_json(), ensure_ascii=False)


def write_records(records: Iterable[Record], path: str | Path) -> Path:
    """Write canonical JSONL atomically (temp file + rename)."""
    return atomic_write_text(path, "".join(line + "\n" for line in iter_jsonl(records)))


def iter_table_rows(path: str | Path, delimiter: str, columns: Sequence[str] = (), hint: str = ""
                    ) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, row)`` for each data row of a CSV/TSV file with a header row; blank rows are skipped.

    A header without one of ``columns`` (its error ends with ``hint``), a malformed row or a row of the wrong
    width is a :class:`DataError` naming file:line.
    """
    lines = [line + "\n" for line in read_text_lines(path)]  # line ends kept: a quoted field may hold a newline
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise DataError(f"cannot read the header row ({exc})", path, 1) from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"no column {', '.join(map(repr, missing))}; the header has {header}"
                        + (f"; {hint}" if hint else ""), path, 1)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"malformed row ({exc})", path, reader.line_num) from None
        if not fields or not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise DataError(f"{len(fields)} fields, but the header has {len(header)} ({header}); quote fields "
                            "that contain the delimiter", path, reader.line_num)
        yield reader.line_num, dict(zip(header, fields))
