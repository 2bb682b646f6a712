"""Label Studio JSON task export <-> canonical records.

A Label Studio export is a JSON array of tasks::

    {"id": 7, "data": {"text": "...", "source": "..."},
     "annotations": [{"result": [...], "was_cancelled": false, "updated_at": "..."}],
     "predictions": [{"result": [...], "score": 0.9, "model_version": "v1"}]}

A span result is ``{"id", "from_name", "to_name", "type": "labels", "value": {"start", "end",
"text", "labels": [L]}}`` and a relation result is ``{"type": "relation", "from_id", "to_id",
"direction": "right", "labels": [L]}``.

Reading takes one result list per task: by default the latest annotation that was not cancelled
(latest by ``updated_at``/``created_at``, else by position), or with ``source="predictions"`` the
latest prediction. ``meta`` gets the task's other ``data`` fields and its ``id`` as
``meta["task_id"]``. Results of other types (choices, text areas) are not dropped: they are kept
verbatim in ``meta["labelstudio"]["other_results"]`` together with a prediction's ``score`` and
``model_version``, and the writer puts them back.

Offsets: Label Studio releases before late 2021 counted offsets in UTF-16 code units (JavaScript
string length), so every span after an emoji was shifted. When ``value.text`` disagrees with the
text slice but agrees with the UTF-16 reading, the offsets are converted and the repair is
counted in a warning; any other disagreement is an error, because silently trusting either the
offsets or the text would corrupt the labels.

Errors name the file and the task by its 0-based position in the JSON array (and its id).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from adaptlab.data.records import Record, Relation, Span, read_text_lines
from adaptlab.errors import DataError
from adaptlab.runs import atomic_write_text, get_logger

LS_META_KEY = "labelstudio"
TASK_ID_KEY = "task_id"
Source = Literal["annotations", "predictions"]


def read_labelstudio(
    path: str | Path,
    source: Source = "annotations",
    text_key: str = "text",
    allow_overlaps: bool = False,
    include_unlabelled: bool = False,
) -> list[Record]:
    """Read a Label Studio JSON export into records.

    Tasks with no usable result list (no annotation, or all cancelled) are skipped and counted in
    a warning unless ``include_unlabelled`` is set; an unlabelled task is not a task with no
    entities, and training on it as one would teach the model to miss entities.
    """
    if source not in ("annotations", "predictions"):
        raise DataError(f"source must be 'annotations' or 'predictions', got {source!r}", path)
    raw = "\n".join(read_text_lines(path))
    try:
        tasks = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})", path, exc.lineno) from None
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise DataError(f"expected a JSON array of tasks, got {type(tasks).__name__}", path)
    records, skipped, repaired = [], 0, 0
    for index, task in enumerate(tasks):
        where = task_name(index, task)
        try:
            record, n_repaired = task_to_record(task, source, text_key, include_unlabelled)
            if record is not None:
                record.validate(allow_overlaps=allow_overlaps)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}", path) from None
        if record is None:
            skipped += 1
            continue
        repaired += n_repaired
        records.append(record)
    log = get_logger()
    if skipped:
        log.warning("%s: skipped %d task(s) without a non-cancelled %s", path, skipped, source[:-1])
    if repaired:
        log.warning("%s: converted %d span(s) from UTF-16 offsets (older Label Studio) to characters",
                    path, repaired)
    return records


def task_name(index: int, task: Any) -> str:
    if isinstance(task, dict) and "id" in task:
        return f"task {index} (id {task['id']})"
    return f"task {index}"


def task_to_record(
    task: Any, source: Source = "annotations", text_key: str = "text", include_unlabelled: bool = False
) -> tuple[Record | None, int]:
    """Convert one task; returns ``(record or None if unlabelled, spans repaired)``.

    Raises ``ValueError`` with a message for people; the caller adds file and task.
    """
    if not isinstance(task, dict):
        raise ValueError(f"expected a task object, got {type(task).__name__}")
    data = task.get("data")
    if not isinstance(data, dict):
        raise ValueError(
            "no 'data' object; this reader expects Label Studio's JSON export (not JSON-MIN or CSV)"
        )
    text = data.get(text_key)
    if not isinstance(text, str):
        raise ValueError(f"data has no string field {text_key!r} (fields: {sorted(data)}); pass text_key=")
    chosen = choose_result_set(task, source)
    if chosen is None and not include_unlabelled:
        return None, 0
    meta: dict[str, Any] = {k: v for k, v in data.items() if k != text_key}
    if "id" in task:
        meta[TASK_ID_KEY] = task["id"]
    ls_meta: dict[str, Any] = {}
    if chosen is None:
        return Record(text=text, meta=meta), 0
    for key in ("score", "model_version"):
        if source == "predictions" and chosen.get(key) is not None:
            ls_meta[key] = chosen[key]
    results = chosen.get("result")
    if not isinstance(results, list):
        raise ValueError(f"the chosen {source[:-1]} has no 'result' list")
    spans, relations, other, repaired = _parse_results(results, text)
    if other:
        ls_meta["other_results"] = other
    if ls_meta:
        meta[LS_META_KEY] = ls_meta
    return Record(text=text, spans=spans, relations=relations, meta=meta), repaired


def choose_result_set(task: dict, source: Source) -> dict | None:
    """The latest non-cancelled annotation (or the latest prediction), or None."""
    items = task.get(source) or []
    if not isinstance(items, list):
        raise ValueError(f"'{source}' must be a list")
    candidates = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{source}[{position}] is not an object")
        if item.get("was_cancelled"):
            continue
        stamp = str(item.get("updated_at") or item.get("created_at") or "")
        candidates.append((stamp, position, item))
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c[0], c[1]))[2]


def _parse_results(results: list, text: str) -> tuple[list[Span], list[Relation], list[dict], int]:
    spans: list[Span] = []
    index_of_id: dict[str, int] = {}
    relation_results, other = [], []
    repaired = 0
    for k, result in enumerate(results):
        if not isinstance(result, dict):
            raise ValueError(f"result {k} is not an object")
        kind = result.get("type")
        if kind == "relation":
            relation_results.append((k, result))
            continue
        if kind != "labels":
            other.append(result)
            continue
        span, was_repaired = _parse_span_result(k, result, text)
        repaired += was_repaired
        region_id = result.get("id")
        if region_id is not None:
            if str(region_id) in index_of_id:
                raise ValueError(f"result {k}: region id {region_id!r} is used twice")
            index_of_id[str(region_id)] = len(spans)
        spans.append(span)
    relations = []
    for k, result in relation_results:
        ends = []
        for key in ("from_id", "to_id"):
            ref = result.get(key)
            if str(ref) not in index_of_id:
                raise ValueError(f"result {k}: relation {key} {ref!r} does not name a labelled region")
            ends.append(index_of_id[str(ref)])
        head, tail = ends
        if result.get("direction", "right") == "left":
            head, tail = tail, head
        labels = result.get("labels") or [""]
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise ValueError(f"result {k}: relation labels must be a list of strings, got {labels!r}")
        relations.extend(Relation(head, tail, label) for label in labels)
    return spans, relations, other, repaired


def _parse_span_result(k: int, result: dict, text: str) -> tuple[Span, int]:
    value = result.get("value")
    if not isinstance(value, dict):
        raise ValueError(f"result {k}: no 'value' object")
    start, end, labels = value.get("start"), value.get("end"), value.get("labels")
    if not (_is_int(start) and _is_int(end)):
        raise ValueError(f"result {k}: value.start and value.end must be integers, got {start!r}, {end!r}")
    if not (isinstance(labels, list) and len(labels) == 1 and isinstance(labels[0], str)):
        raise ValueError(
            f"result {k}: value.labels must hold exactly one label, got {labels!r}; "
            "adaptlab spans carry one label each"
        )
    claimed = value.get("text")
    repaired = 0
    if isinstance(claimed, str) and text[start:end] != claimed:
        fixed = _from_utf16(text, start, end)
        if fixed is not None and text[fixed[0] : fixed[1]] == claimed:
            (start, end), repaired = fixed, 1
        else:
            raise ValueError(
                f"result {k}: value.text {claimed!r} does not equal the text slice "
                f"[{start}:{end}] {text[start:end]!r}; the offsets and the task text disagree "
                "(was the text edited after labelling?)"
            )
    return Span(start, end, labels[0]), repaired


def _from_utf16(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Map UTF-16 code-unit offsets to character offsets; None if the text has no astral chars."""
    if all(ord(ch) <= 0xFFFF for ch in text):
        return None
    char_at_unit: dict[int, int] = {}
    units = 0
    for i, ch in enumerate(text):
        char_at_unit[units] = i
        units += 2 if ord(ch) > 0xFFFF else 1
    char_at_unit[units] = len(text)
    if start not in char_at_unit or end not in char_at_unit:
        return None
    return char_at_unit[start], char_at_unit[end]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def region_id(record: Record, span_index: int) -> str:
    """A stable 10-character region id: a hash of the text, the span's index, offsets and label.

    Stable means that writing the same records twice gives the same file, and reordering records
    keeps each region's id, so an exported-and-reimported project can be diffed.
    """
    span = record.spans[span_index]
    key = f"{span_index}\x1f{span.start}\x1f{span.end}\x1f{span.label}\x1f{record.text}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]


def record_to_task(
    record: Record,
    as_predictions: bool = False,
    from_name: str = "label",
    to_name: str = "text",
    model_version: str | None = None,
    text_key: str = "text",
) -> dict[str, Any]:
    """Build one importable task; the inverse of :func:`task_to_record`."""
    meta = dict(record.meta)
    ls_meta = dict(meta.pop(LS_META_KEY, None) or {})
    if text_key in meta:
        raise ValueError(f"meta key {text_key!r} clashes with the task's text field; rename it")
    ids = [region_id(record, i) for i in range(len(record.spans))]
    result: list[dict[str, Any]] = []
    for rid, span in zip(ids, record.spans, strict=True):
        result.append({
            "id": rid, "from_name": from_name, "to_name": to_name, "type": "labels",
            "value": {"start": span.start, "end": span.end, "text": record.span_text(span),
                      "labels": [span.label]},
        })
    for rel in record.relations:
        result.append({
            "type": "relation", "from_id": ids[rel.head], "to_id": ids[rel.tail],
            "direction": "right", "labels": [rel.label] if rel.label else [],
        })
    result.extend(ls_meta.get("other_results", []))
    # Label Studio ignores an imported task "id", so the old id travels as an ordinary data field.
    task: dict[str, Any] = {"data": {text_key: record.text, **meta}}
    if as_predictions:
        prediction: dict[str, Any] = {"result": result}
        version = model_version if model_version is not None else ls_meta.get("model_version")
        if version is not None:
            prediction["model_version"] = version
        if ls_meta.get("score") is not None:
            prediction["score"] = ls_meta["score"]
        task["predictions"] = [prediction]
    else:
        task["annotations"] = [{"result": result}]
    return task


def write_labelstudio(
    records: Iterable[Record],
    path: str | Path,
    as_predictions: bool = False,
    from_name: str = "label",
    to_name: str = "text",
    model_version: str | None = None,
    text_key: str = "text",
) -> Path:
    """Write a JSON array of tasks that Label Studio imports (annotations, or pre-annotations).

    ``from_name``/``to_name`` must match the ``name`` of the ``<Labels>`` and ``<Text>`` tags of
    the project's labelling config, or Label Studio shows the task without its regions.
    """
    tasks = []
    for index, record in enumerate(records):
        try:
            tasks.append(record_to_task(record, as_predictions, from_name, to_name, model_version, text_key))
        except (ValueError, IndexError) as exc:
            raise DataError(f"record {index}: {exc}", path) from None
    return atomic_write_text(path, json.dumps(tasks, ensure_ascii=False, indent=2) + "\n")
