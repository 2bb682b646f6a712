"""spaCy / Prodigy span JSONL <-> canonical records.

One object per line::

    {"text": "Frogs live in ponds.",
     "tokens": [{"text": "Frogs", "start": 0, "end": 5, "id": 0, "ws": true}, ...],
     "spans": [{"start": 0, "end": 5, "label": "SPECIES", "token_start": 0, "token_end": 0}],
     "relations": [{"head": 0, "child": 3, "label": "live_in",
                    "head_span": {"start": 0, "end": 5, ...}, "child_span": {...}}],
     "meta": {...}, "answer": "accept", "_input_hash": 1, "_task_hash": 2}

Character offsets are authoritative. Prodigy's ``token_end`` is inclusive and a relation's
``head``/``child`` is the ``token_end`` of its span; relations map to span indices through the
character offsets of ``head_span``/``child_span``.

Tokens are derived data, so the reader drops them and the writer recomputes them with adaptlab's
word segmentation (:mod:`adaptlab.data.words`); they may differ from spaCy's tokenizer, which only
matters to tools that read ``token_start``. The ``meta`` object becomes the record's meta; any other
top-level keys (``answer``, Prodigy hashes, ...) are kept in ``meta["spacy_extra"]`` and written
back at the top level.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from adaptlab.data.records import Record, Relation, Span, read_jsonl_records
from adaptlab.data.words import word_offsets
from adaptlab.errors import DataError
from adaptlab.runs import atomic_write_text

EXTRA_META_KEY = "spacy_extra"
_OWN_KEYS = {"text", "spans", "relations", "meta", "tokens"}


def read_spacy_jsonl(path: str | Path, allow_overlaps: bool = False) -> list[Record]:
    """Read spaCy/Prodigy span JSONL; errors name file:line."""
    return read_jsonl_records(path, object_to_record, allow_overlaps)


def object_to_record(obj: Any) -> Record:
    """Convert one parsed line; raises ``ValueError`` naming the bad field."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str):
        raise ValueError("'text' must be a string")
    raw_spans = obj.get("spans") or []
    if not isinstance(raw_spans, list):
        raise ValueError("'spans' must be a list")
    spans = [_parse_span(f"spans[{i}]", s, text) for i, s in enumerate(raw_spans)]
    index_of: dict[tuple, int] = {}
    for i, s in enumerate(spans):
        index_of.setdefault((s.start, s.end), i)
        index_of.setdefault((s.start, s.end, s.label), i)
    raw_relations = obj.get("relations") or []
    if not isinstance(raw_relations, list):
        raise ValueError("'relations' must be a list")
    relations = []
    for k, rel in enumerate(raw_relations):
        if not isinstance(rel, dict):
            raise ValueError(f"relations[{k}] must be an object, got {rel!r}")
        label = rel.get("label")
        if not isinstance(label, str):
            raise ValueError(f"relations[{k}] has no string 'label'")
        ends = []
        for role in ("head_span", "child_span"):
            ref = rel.get(role)
            if not (isinstance(ref, dict) and _is_int(ref.get("start")) and _is_int(ref.get("end"))):
                raise ValueError(f"relations[{k}].{role} must be an object with integer start and end")
            key = (ref["start"], ref["end"])
            if isinstance(ref.get("label"), str) and key + (ref["label"],) in index_of:
                key = key + (ref["label"],)
            if key not in index_of:
                raise ValueError(
                    f"relations[{k}].{role} [{key[0]}, {key[1]}] is not one of the line's spans; "
                    "add it to 'spans' so the relation has an entity to point at"
                )
            ends.append(index_of[key])
        relations.append(Relation(ends[0], ends[1], label))
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError("'meta' must be an object")
    meta = dict(meta)
    extra = {k: v for k, v in obj.items() if k not in _OWN_KEYS}
    if extra:
        meta[EXTRA_META_KEY] = extra
    return Record(text=text, spans=spans, relations=relations, meta=meta)


def _parse_span(where: str, s: Any, text: str) -> Span:
    if not isinstance(s, dict):
        raise ValueError(f"{where} must be an object with start, end, label; got {s!r}")
    start, end, label = s.get("start"), s.get("end"), s.get("label")
    if not (_is_int(start) and _is_int(end) and isinstance(label, str)):
        raise ValueError(f"{where} needs integer start and end and a string label, got {s!r}")
    claimed = s.get("text")
    if isinstance(claimed, str) and claimed != text[start:end]:
        raise ValueError(
            f"{where} text {claimed!r} does not equal the text slice [{start}:{end}] {text[start:end]!r}"
        )
    return Span(start, end, label)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def record_to_object(record: Record) -> dict[str, Any]:
    """Build one Prodigy-style line with tokens, token indices and relation token heads."""
    offsets = word_offsets(record.text)
    tokens = [
        {"text": record.text[s:e], "start": s, "end": e, "id": i,
         "ws": e < len(record.text) and record.text[e].isspace()}
        for i, (s, e) in enumerate(offsets)
    ]

    def span_dict(span: Span) -> dict[str, Any]:
        inside = [i for i, (s, e) in enumerate(offsets) if s < span.end and span.start < e]
        out: dict[str, Any] = {"start": span.start, "end": span.end}
        if inside:
            out["token_start"], out["token_end"] = inside[0], inside[-1]
        out["label"] = span.label
        return out

    span_dicts = [span_dict(s) for s in record.spans]
    relations = []
    for rel in record.relations:
        head, child = span_dicts[rel.head], span_dicts[rel.tail]
        relations.append({
            "head": head.get("token_end"), "child": child.get("token_end"),
            "head_span": head, "child_span": child, "label": rel.label,
        })
    meta = dict(record.meta)
    extra = meta.pop(EXTRA_META_KEY, None) or {}
    obj: dict[str, Any] = {"text": record.text, "tokens": tokens, "spans": span_dicts,
                           "relations": relations, "meta": meta}
    for key, value in extra.items():
        obj.setdefault(key, value)
    return obj


def write_spacy_jsonl(records: Iterable[Record], path: str | Path) -> Path:
    """Write one Prodigy-style object per line, atomically."""
    lines = []
    for index, record in enumerate(records):
        try:
            lines.append(json.dumps(record_to_object(record), ensure_ascii=False))
        except IndexError:
            raise DataError(
                f"record {index}: a relation points at a span that does not exist", path
            ) from None
    return atomic_write_text(path, "".join(line + "\n" for line in lines))
