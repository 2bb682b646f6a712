"""Entity-marker sentences <-> canonical records.

Relation-classification data often marks the two arguments inline::

    [E1]Inyo Mountains salamander[/E1] live in [E2]the Inyo Mountains[/E2]

``[E1]`` is the head and ``[E2]`` the tail; E2 may come first. A marked sentence becomes a record
whose text has the markers removed, with span 0 = E1, span 1 = E2 and, when a relation label is
known, one relation ``[0, 1, label]``. Spans keep the exact text between the markers (no trimming)
so that marking a record again reproduces the sentence.

Three file shapes are read (chosen by :func:`marker_file_shape` from the suffix or, for other
suffixes, the first line): plain lines, TSV ``marked<TAB>label`` and the CSV of the biospecies RE
file (header ``"Sentence","Label"``, rows ``"<marked>","<label>"``; it ships as a ``.txt``).
Some rows of that file hold unescaped double quotes inside the sentence, so a strict CSV reader
splits them; each line is matched with :data:`CSV_ROW` instead, and doubled quotes (proper CSV
escaping, which the writer uses) are undone. A line that does not match is read as standard CSV,
as Python's ``csv.writer`` and spreadsheets write it (quotes only around fields that need them).

Entity labels are not in the markers, so readers take ``head_label``/``tail_label``: a string, or
a mapping from relation label to entity label (biospecies: the tail of ``live_in`` is a HABITAT).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from adaptlab.data.records import Record, Relation, Span, read_text_lines
from adaptlab.errors import DataError
from adaptlab.runs import atomic_write_text

# The four marker strings; RE models add them to the tokenizer as special tokens.
MARKERS = ("[E1]", "[/E1]", "[E2]", "[/E2]")
MARKER = re.compile(r"\[(/?)E([12])\]")
CSV_ROW = re.compile(r'^"(.*)","([a-z_]+)"$')
LABEL = re.compile(r"^[a-z_]+$")
CSV_HEADER = '"Sentence","Label"'
EntityLabel = str | Mapping[str, str]


def _entity_label(spec: EntityLabel, relation_label: str | None, role: str) -> str:
    if isinstance(spec, str):
        return spec
    if relation_label is None or relation_label not in spec:
        raise DataError(
            f"no {role} entity label for relation {relation_label!r}; the mapping covers {sorted(spec)}"
        )
    return spec[relation_label]


def record_from_marked(
    marked: str,
    relation_label: str | None = None,
    head_label: EntityLabel = "HEAD",
    tail_label: EntityLabel = "TAIL",
) -> Record:
    """Strip ``[E1]..[/E1]`` and ``[E2]..[/E2]`` and return a record with two spans.

    Raises :class:`DataError` (without a location; file readers add file:line) when a marker is
    missing, repeated, closed before it opens, empty, or when the two entities nest or cross.
    """
    found = list(MARKER.finditer(marked))
    names = [m.group(0) for m in found]
    for name in MARKERS:
        count = names.count(name)
        if count != 1:
            problem = "is missing" if count == 0 else f"appears {count} times"
            raise DataError(f"marker {name} {problem}; each of [E1] [/E1] [E2] [/E2] must appear once")
    pieces, plain_at, cursor, length = [], {}, 0, 0
    for m in found:
        pieces.append(marked[cursor : m.start()])
        length += m.start() - cursor
        plain_at[m.group(0)] = (length, m.start())
        cursor = m.end()
    pieces.append(marked[cursor:])
    text = "".join(pieces)
    bounds = {}
    for n in ("1", "2"):
        (start, raw_open), (end, raw_close) = plain_at[f"[E{n}]"], plain_at[f"[/E{n}]"]
        if raw_close < raw_open:
            raise DataError(f"[/E{n}] comes before [E{n}]")
        if start == end:
            raise DataError(f"entity E{n} is empty")
        bounds[n] = (raw_open, raw_close, start, end)
    o1, c1 = bounds["1"][:2]
    o2, c2 = bounds["2"][:2]
    if not (c1 < o2 or c2 < o1):
        raise DataError("entities E1 and E2 nest or cross; the markers must enclose separate stretches")
    head = Span(bounds["1"][2], bounds["1"][3], _entity_label(head_label, relation_label, "head"))
    tail = Span(bounds["2"][2], bounds["2"][3], _entity_label(tail_label, relation_label, "tail"))
    relations = [Relation(0, 1, relation_label)] if relation_label is not None else []
    return Record(text=text, spans=[head, tail], relations=relations)


def marked_from_record(record: Record, relation: int | tuple[int, int] = 0) -> str:
    """Insert markers around a relation's head (E1) and tail (E2).

    ``relation`` is an index into ``record.relations`` or a ``(head_span, tail_span)`` pair.
    """
    if isinstance(relation, tuple):
        head_index, tail_index = relation
    else:
        if not 0 <= relation < len(record.relations):
            raise DataError(f"relation {relation} does not exist (the record has {len(record.relations)})")
        head_index, tail_index = record.relations[relation].head, record.relations[relation].tail
    for idx in (head_index, tail_index):
        if not 0 <= idx < len(record.spans):
            raise DataError(f"span {idx} does not exist (the record has {len(record.spans)})")
    head, tail = record.spans[head_index], record.spans[tail_index]
    if head_index == tail_index or head.overlaps(tail):
        raise DataError("head and tail spans overlap; markers cannot enclose them separately")
    # (position, closing-before-opening at the same position, marker)
    inserts = sorted([(head.start, 1, "[E1]"), (head.end, 0, "[/E1]"),
                      (tail.start, 1, "[E2]"), (tail.end, 0, "[/E2]")])
    out, cursor = [], 0
    for pos, _, name in inserts:
        out.append(record.text[cursor:pos])
        out.append(name)
        cursor = pos
    out.append(record.text[cursor:])
    return "".join(out)


def _parse_line(path, lineno, marked, label, head_label, tail_label) -> Record:
    try:
        record = record_from_marked(marked, label, head_label, tail_label)
    except DataError as exc:
        raise DataError(str(exc), path, lineno) from None
    record.meta["source"] = f"{path}:{lineno}"
    return record


def read_marked_lines(
    path: str | Path,
    relation_label: str | None = None,
    head_label: EntityLabel = "HEAD",
    tail_label: EntityLabel = "TAIL",
) -> list[Record]:
    """One marked sentence per non-blank line; all get ``relation_label`` (or no relation)."""
    return [
        _parse_line(path, lineno, line, relation_label, head_label, tail_label)
        for lineno, line in enumerate(read_text_lines(path), start=1)
        if line.strip()
    ]


def read_marked_tsv(
    path: str | Path, head_label: EntityLabel = "HEAD", tail_label: EntityLabel = "TAIL"
) -> list[Record]:
    """``marked<TAB>label`` lines; a first line without markers is taken as a header."""
    records = []
    for lineno, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        if not records and "[E1]" not in line and "[E2]" not in line and lineno == 1:
            continue
        marked, sep, label = line.rstrip().rpartition("\t")
        if not sep or not label:
            raise DataError("expected 'marked sentence<TAB>label'", path, lineno)
        records.append(_parse_line(path, lineno, marked, label, head_label, tail_label))
    return records


def read_marked_csv(
    path: str | Path, head_label: EntityLabel = "HEAD", tail_label: EntityLabel = "TAIL"
) -> list[Record]:
    """The biospecies RE CSV: a header line, then ``"<marked>","<label>"`` per line."""
    records = []
    for lineno, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        if lineno == 1 and "[E1]" not in line:
            continue  # header, e.g. "Sentence","Label"
        row = _csv_row(line.rstrip("\r\n"))
        if row is None:
            raise DataError(
                'expected "<sentence with [E1]..[/E1] and [E2]..[/E2]>","<label in a-z_>" (or the same as standard '
                f"CSV, quotes only where needed), got {_clip(line)!r}",
                path,
                lineno,
            )
        records.append(_parse_line(path, lineno, *row, head_label, tail_label))
    return records


def _csv_row(line: str) -> tuple[str, str] | None:
    """``(marked, label)`` of one line: the biospecies shape (every field quoted, stray quotes tolerated) or
    standard CSV as Python's ``csv.writer`` and spreadsheets write it (quotes only where needed)."""
    match = CSV_ROW.match(line.rstrip())
    if match is not None:
        return match.group(1).replace('""', '"'), match.group(2)
    try:
        fields = next(csv.reader([line]))
    except (csv.Error, StopIteration):
        return None
    if len(fields) == 2 and LABEL.match(fields[1].strip()):
        return fields[0], fields[1].strip()
    return None


def _clip(line: str, width: int = 80) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def _rows(records: Iterable[Record], path: str | Path, separator: str) -> list[tuple[str, str]]:
    """One (marked, label) row per relation; a record without relations is an error, not a skip."""
    rows = []
    for index, record in enumerate(records):
        if not record.relations:
            raise DataError(f"record {index} has no relation; each row holds one labelled pair", path)
        for k, rel in enumerate(record.relations):
            if not LABEL.match(rel.label):
                raise DataError(
                    f"record {index} relation {k}: label {rel.label!r} must match [a-z_]+ to be read back",
                    path,
                )
            try:
                marked = marked_from_record(record, k)
            except DataError as exc:
                raise DataError(f"record {index} relation {k}: {exc}", path) from None
            if "\n" in marked or "\r" in marked or separator in marked:
                raise DataError(f"record {index}: the text holds a line break or {separator!r}", path)
            rows.append((marked, rel.label))
    return rows


def write_marked_csv(records: Iterable[Record], path: str | Path) -> Path:
    """Write the biospecies CSV shape, with quotes inside sentences doubled as CSV requires."""
    rows = _rows(records, path, separator="\n")
    body = "".join(f'"{marked.replace(chr(34), chr(34) * 2)}","{label}"\n' for marked, label in rows)
    return atomic_write_text(path, CSV_HEADER + "\n" + body)


def write_marked_tsv(records: Iterable[Record], path: str | Path) -> Path:
    rows = _rows(records, path, separator="\t")
    return atomic_write_text(path, "".join(f"{marked}\t{label}\n" for marked, label in rows))


def marker_file_shape(path: str | Path) -> str:
    """``"csv"``, ``"tsv"`` or ``"lines"``: by suffix, else by the first non-blank line.

    The biospecies file is CSV in a ``.txt`` file, so the suffix alone is not enough.
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return suffix[1:]
    first = next((line for line in read_text_lines(path) if line.strip()), "")
    if CSV_ROW.match(first.rstrip()) or re.match(r'^"[^"]*","[^"]*"$', first.rstrip()):
        return "csv"
    return "tsv" if "\t" in first else "lines"


def read_markers(path: str | Path, **kw) -> list[Record]:
    """Read any marker file shape (see :func:`marker_file_shape`)."""
    readers = {"csv": read_marked_csv, "tsv": read_marked_tsv, "lines": read_marked_lines}
    return readers[marker_file_shape(path)](path, **kw)


def write_markers(records: Iterable[Record], path: str | Path) -> Path:
    if Path(path).suffix.lower() == ".tsv":
        return write_marked_tsv(records, path)
    return write_marked_csv(records, path)
