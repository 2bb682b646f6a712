"""Hugging Face ``datasets`` <-> canonical records.

Records become a :class:`datasets.Dataset` with columns ``text``, ``spans`` (a list of
``{start, end, label}``), ``relations`` (a list of ``{head, tail, label}``) and ``meta`` (a JSON
string, because free-form dicts with varying keys do not fit an Arrow schema).

:func:`dataset_to_records` reads that layout back, and also token-classification datasets in the
CoNLL-2003 style (``tokens`` plus ``ner_tags`` as ClassLabel ids or tag strings) through
:func:`adaptlab.data.formats.conll.tokens_to_record`. Scalar columns of such a dataset (``id``)
go into meta; token-level list columns (``pos_tags``, ``chunk_tags``) are left out because they
no longer line up with anything once spans are in character offsets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from adaptlab.data.formats.conll import tokens_to_record
from adaptlab.data.records import Record, Relation, Span
from adaptlab.errors import DataError


def _features():
    from datasets import Features, Value

    span = {"start": Value("int32"), "end": Value("int32"), "label": Value("string")}
    relation = {"head": Value("int32"), "tail": Value("int32"), "label": Value("string")}
    # A plain Python list means "list of structs" in every datasets release since 2.x.
    return Features({"text": Value("string"), "spans": [span], "relations": [relation],
                     "meta": Value("string")})


def records_to_dataset(records: Iterable[Record]):
    """Build a ``datasets.Dataset`` in the canonical layout."""
    from datasets import Dataset

    columns: dict[str, list[Any]] = {"text": [], "spans": [], "relations": [], "meta": []}
    for r in records:
        columns["text"].append(r.text)
        columns["spans"].append([{"start": s.start, "end": s.end, "label": s.label} for s in r.spans])
        columns["relations"].append([{"head": x.head, "tail": x.tail, "label": x.label} for x in r.relations])
        columns["meta"].append(json.dumps(r.meta, ensure_ascii=False, sort_keys=True))
    return Dataset.from_dict(columns, features=_features())


def dataset_to_records(ds, tag_names: Sequence[str] | None = None, source: str = "dataset") -> list[Record]:
    """Convert a canonical-layout or a ``tokens``/``ner_tags`` dataset into records.

    ``tag_names`` maps integer tags to strings when the ``ner_tags`` feature is not a ClassLabel.
    ``source`` names the dataset in error messages (a path, or a hub id).
    """
    columns = set(ds.column_names)
    if {"text", "spans"} <= columns:
        return _canonical_rows(ds, source)
    if {"tokens", "ner_tags"} <= columns:
        return _token_rows(ds, tag_names, source)
    raise DataError(
        f"columns {sorted(columns)} are neither text+spans (canonical) nor tokens+ner_tags (CoNLL style)",
        source,
    )


def _as_rows(value: Any) -> list[dict]:
    """Accept both a list of structs and the dict-of-lists that ``Sequence({...})`` features give."""
    if value is None:
        return []
    if isinstance(value, dict):
        keys = list(value)
        return [dict(zip(keys, items, strict=True)) for items in zip(*(value[k] for k in keys), strict=True)]
    return list(value)


def _canonical_rows(ds, source: str) -> list[Record]:
    has_relations, has_meta = "relations" in ds.column_names, "meta" in ds.column_names
    records = []
    for i, row in enumerate(ds):
        try:
            spans = [Span(int(s["start"]), int(s["end"]), str(s["label"])) for s in _as_rows(row["spans"])]
            relations = [Relation(int(r["head"]), int(r["tail"]), str(r["label"]))
                         for r in _as_rows(row["relations"] if has_relations else None)]
            meta = row["meta"] if has_meta else None
            if isinstance(meta, str):
                meta = json.loads(meta) if meta else {}
            if meta is not None and not isinstance(meta, dict):
                raise ValueError("'meta' must be a JSON object")
            record = Record(text=row["text"], spans=spans, relations=relations, meta=meta or {})
            record.validate(allow_overlaps=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"row {i}: {exc}", source) from None
        records.append(record)
    return records


def _tag_names(ds, tag_names: Sequence[str] | None) -> list[str] | None:
    if tag_names is not None:
        return list(tag_names)
    feature = getattr(ds.features["ner_tags"], "feature", None)
    names = getattr(feature, "names", None)
    return list(names) if names else None


def _token_rows(ds, tag_names: Sequence[str] | None, source: str) -> list[Record]:
    names = _tag_names(ds, tag_names)
    scalar_columns = [
        c for c in ds.column_names
        if c not in ("tokens", "ner_tags") and not isinstance(ds.features[c], list | dict)
        and not hasattr(ds.features[c], "feature")
    ]
    records = []
    for i, row in enumerate(ds):
        tokens, tags = list(row["tokens"]), list(row["ner_tags"])
        if len(tokens) != len(tags):
            raise DataError(f"row {i}: {len(tokens)} tokens but {len(tags)} ner_tags", source)
        if tags and not isinstance(tags[0], str):
            if names is None:
                raise DataError(
                    "ner_tags are integers without ClassLabel names; pass tag_names=[...] in id order",
                    source,
                )
            try:
                tags = [names[t] for t in tags]
            except IndexError:
                raise DataError(f"row {i}: a tag id is outside the {len(names)} tag names", source) from None
        meta = {c: row[c] for c in scalar_columns}
        records.append(tokens_to_record(tokens, tags, meta))
    return records


def is_saved_dataset(path: str | Path) -> bool:
    """True for a directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file()
                                 for name in ("dataset_info.json", "state.json", "dataset_dict.json"))


def read_hf(
    path: str | Path, split: str | None = None, tag_names: Sequence[str] | None = None
) -> list[Record]:
    """Load a dataset saved with ``save_to_disk``; a DatasetDict needs ``split`` unless it has one split."""
    from datasets import DatasetDict, load_from_disk

    if not is_saved_dataset(path):
        raise DataError("not a directory written by datasets' save_to_disk", path)
    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        splits = list(ds)
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in ds:
            raise DataError(f"choose a split with split=...; this dataset has {splits}", path)
        ds = ds[split]
    elif split is not None:
        raise DataError(f"split={split!r} given but the directory holds a single Dataset", path)
    return dataset_to_records(ds, tag_names=tag_names, source=str(path))


def write_hf(records: Iterable[Record], path: str | Path) -> Path:
    """Save records with ``save_to_disk`` into a new directory (never over an existing one)."""
    from adaptlab.runs import refuse_existing

    path = refuse_existing(path, "dataset directory")
    records_to_dataset(records).save_to_disk(str(path))
    return path
