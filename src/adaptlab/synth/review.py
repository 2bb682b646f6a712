"""People verify teacher-generated records in Label Studio: export a project, import the verdicts.

Why: a teacher LLM's annotations are good but not gold. A reviewer sees each sentence with the
teacher's spans and relations as *pre-annotations* (Label Studio "predictions"), fixes what is
wrong, and says whether the sentence is usable at all (verdict ``accept`` / ``reject``). What the
reviewer submits is the truth; what nobody looked at stays the teacher's and is flagged as such.

Rules applied on import, per task:

- a submitted annotation (the latest that was not cancelled, the same rule as
  :func:`~adaptlab.data.formats.labelstudio.read_labelstudio`) -> its spans and relations replace
  the teacher's; verdict ``reject`` removes the record ("rejected by reviewer"); no verdict counts
  as accepted, because the reviewer submitted it;
- only cancelled annotations (the reviewer pressed *Skip*) -> removed ("skipped by reviewer");
- no annotation -> kept with the teacher's prediction and ``meta["verified"] = False``, or removed
  ("not reviewed") with ``verified_only``;
- no annotation and no prediction -> removed ("neither reviewed nor predicted"): an unlabelled
  sentence is not a sentence without entities.

Kept records get ``meta["verified"]`` and ``meta["review"] = {"verdict", "edited", "reviewer",
"updated_at"}`` (the last two when Label Studio exported them; ``reviewer`` is its
``completed_by``). ``edited`` compares the annotation with the prediction as multisets of
``(start, end, label)`` spans and ``((head start, head end), (tail start, tail end), label)``
relations; it is ``None`` when the task had no prediction to compare with.

Agreement treats the reviewer as gold and the teacher as prediction over the verified tasks that
have a prediction: entity P/R/F1 per type with :func:`~adaptlab.metrics.spans.span_prf` (strict and
overlap), and relation P/R/F1 per label on offset triples (a relation counts as agreed when both
end spans have the same offsets and the label is the same, whatever the end spans' types).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.data.formats.labelstudio import (
    LS_META_KEY,
    choose_result_set,
    record_to_task,
    task_name,
    task_to_record,
)
from adaptlab.data.records import Record, read_text_lines
from adaptlab.errors import DataError
from adaptlab.metrics.spans import span_prf, summarize_counts
from adaptlab.runs import atomic_write_json, atomic_write_text, get_logger, refuse_existing
from adaptlab.synth.schema import Schema

TEXT_NAME = "text"
LABELS_NAME = "label"
VERDICT_NAME = "verdict"
ACCEPT, REJECT = "accept", "reject"
REASON_REJECTED = "rejected by reviewer"
REASON_SKIPPED = "skipped by reviewer"
REASON_NOT_REVIEWED = "not reviewed"
REASON_EMPTY = "neither reviewed nor predicted"

INSTRUCTIONS = """\
Reviewing teacher-generated sentences in Label Studio
=====================================================

1. Create a project. In Settings > Labeling Interface > Code, paste labeling_config.xml.
2. Import tasks.json (Import > Upload Files). Each sentence shows the teacher's entities and
   relations as pre-annotations.
3. For every sentence:
   - fix entity boundaries and types, delete wrong entities, add missing ones;
   - fix, delete or add relations;
   - choose a verdict: "accept" when the sentence is correct and usable, "reject" when it is
     wrong (a false fact, broken text) or unusable - rejected sentences are removed;
   - press Submit. Press Skip only if you cannot judge the sentence: skipped sentences are removed.
   Sentences nobody reviews stay in the data as the teacher wrote them, flagged unverified.
4. Export the project as JSON (Export > JSON, not JSON-MIN or CSV).
5. Bring the verified records back with
       adaptlab synth review import EXPORT.json ...
"""


def labeling_config(schema: Schema) -> str:
    """The Label Studio labelling config for reviewing records of ``schema``.

    Entity types become ``<Label>`` (description as hover hint), relation types ``<Relation>``,
    and a required single-choice ``verdict`` (accept / reject) decides whether the sentence stays.
    ElementTree escapes every attribute, so descriptions may contain quotes, ``&`` or ``<``.
    """
    view = ET.Element("View")
    labels = ET.SubElement(view, "Labels", name=LABELS_NAME, toName=TEXT_NAME)
    for entity in schema.entities:
        ET.SubElement(labels, "Label", _with_hint({"value": entity.name}, entity.description))
    ET.SubElement(view, "Text", name=TEXT_NAME, value=f"${TEXT_NAME}")
    if schema.relations:
        relations = ET.SubElement(view, "Relations")
        for relation in schema.relations:
            hint = f"{relation.head} -> {relation.tail}" + (f": {relation.description}" if relation.description else "")
            ET.SubElement(relations, "Relation", _with_hint({"value": relation.name}, hint))
    ET.SubElement(view, "Header", value="Is the sentence correct and usable?")
    choices = ET.SubElement(view, "Choices", name=VERDICT_NAME, toName=TEXT_NAME, choice="single",
                            required="true", showInline="true")
    ET.SubElement(choices, "Choice", value=ACCEPT, hint="correct and usable (after your edits)")
    ET.SubElement(choices, "Choice", value=REJECT, hint="wrong or unusable: the sentence will be removed")
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def _with_hint(attrs: dict[str, str], hint: str) -> dict[str, str]:
    return {**attrs, "hint": hint} if hint else attrs


def export_review(
    records: Sequence[Record], out_dir: str | Path, schema: Schema, model_version: str | None = None
) -> dict[str, Any]:
    """Write ``tasks.json``, ``labeling_config.xml`` and ``instructions.txt`` into ``out_dir``.

    The teacher's spans and relations go in as predictions tagged ``model_version`` (default: each
    record's ``meta["teacher"]``); record meta travels in the task's data. Nothing is overwritten.
    """
    out_dir = Path(out_dir)
    paths = {name: out_dir / name for name in ("tasks.json", "labeling_config.xml", "instructions.txt")}
    for path in paths.values():
        refuse_existing(path, "review file")
    allowed_entities, allowed_relations = set(schema.entity_names), {r.name for r in schema.relations}
    tasks = []
    for index, record in enumerate(records):
        where = f"record {index}" + (f" (id {record.meta['id']})" if "id" in record.meta else "")
        try:
            record.validate(allow_overlaps=True)
            _check_labels(record, allowed_entities, allowed_relations)
            version = model_version if model_version is not None else record.meta.get("teacher")
            tasks.append(record_to_task(record, as_predictions=True, from_name=LABELS_NAME, to_name=TEXT_NAME,
                                        model_version=version, text_key=TEXT_NAME))
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
    atomic_write_json(paths["tasks.json"], tasks)
    atomic_write_text(paths["labeling_config.xml"], labeling_config(schema))
    atomic_write_text(paths["instructions.txt"], INSTRUCTIONS)
    return {
        "tasks": len(tasks),
        "spans": sum(len(r.spans) for r in records),
        "relations": sum(len(r.relations) for r in records),
        "files": {name: str(path) for name, path in paths.items()},
    }


def _check_labels(record: Record, entities: set[str], relations: set[str]) -> None:
    for span in record.spans:
        if span.label not in entities:
            raise ValueError(
                f"span label {span.label!r} ({record.span_text(span)!r}) is not an entity type of the schema "
                f"({', '.join(sorted(entities))}); relabel it in Label Studio or add the type to the schema"
            )
    for relation in record.relations:
        if not relation.label:
            raise ValueError("a relation has no label; give it one of the schema's relation types or delete it")
        if relation.label not in relations:
            raise ValueError(
                f"relation label {relation.label!r} is not a relation type of the schema "
                f"({', '.join(sorted(relations)) or 'none'}); relabel it or add the type to the schema"
            )


@dataclass
class ReviewResult:
    """What :func:`import_review` kept, what it removed and why, and how far teacher and reviewer agree."""

    records: list[Record]
    removed: list[tuple[str, str]] = field(default_factory=list)  # (meta id or task id, reason)
    counts: dict[str, int] = field(default_factory=dict)
    agreement: dict[str, Any] = field(default_factory=dict)


def import_review(
    path: str | Path, schema: Schema, verified_only: bool = False, allow_overlaps: bool = False
) -> ReviewResult:
    """Read a Label Studio JSON export of a review project (see the module docstring for the rules).

    Raises :class:`DataError` naming the file and task for a malformed task, a label outside the
    schema or an unknown verdict.
    """
    tasks = _read_tasks(path)
    allowed_entities, allowed_relations = set(schema.entity_names), {r.name for r in schema.relations}
    kept: list[Record] = []
    removed: list[tuple[str, str]] = []
    counts = dict.fromkeys(("tasks", "verified", "unverified", "edited", "rejected", "skipped", "kept", "removed"), 0)
    reviewed_docs: list[Record] = []
    predicted_docs: list[Record] = []
    for index, task in enumerate(tasks):
        where = task_name(index, task)
        try:
            prediction, _ = task_to_record(task, "predictions", TEXT_NAME)
            annotation = choose_result_set(task, "annotations")
            if annotation is None:
                cancelled = bool(task.get("annotations"))
                record, verified, reason = prediction, False, REASON_SKIPPED if cancelled else None
                if reason is None and prediction is None:
                    reason = REASON_EMPTY
                elif reason is None and verified_only:
                    reason = REASON_NOT_REVIEWED
                review: dict[str, Any] = {"verdict": None, "edited": False}
            else:
                record, _ = task_to_record({**task, "annotations": [annotation]}, "annotations", TEXT_NAME)
                verdict = _pop_verdict(record)
                verified, reason = True, REASON_REJECTED if verdict == REJECT else None
                review = {"verdict": verdict, "edited": None if prediction is None else _differs(record, prediction)}
                for key, meta_key in (("completed_by", "reviewer"), ("updated_at", "updated_at")):
                    if annotation.get(key) is not None:
                        review[meta_key] = annotation[key]
            if reason is None:
                _check_labels(record, allowed_entities, allowed_relations)
                record.validate(allow_overlaps=allow_overlaps)
        except ValueError as exc:
            raise DataError(f"{where}: {exc}", path) from None
        if reason is not None:
            removed.append((_task_id(task, index), reason))
            counts["rejected"] += int(reason == REASON_REJECTED)
            counts["skipped"] += int(reason == REASON_SKIPPED)
            continue
        record.meta["verified"] = verified
        record.meta["review"] = review
        kept.append(record)
        counts["verified" if verified else "unverified"] += 1
        counts["edited"] += int(bool(review["edited"]))
        if verified and prediction is not None:
            reviewed_docs.append(record)
            predicted_docs.append(prediction)
    counts.update(tasks=len(tasks), kept=len(kept), removed=len(removed))
    result = ReviewResult(kept, removed, counts, teacher_agreement(reviewed_docs, predicted_docs, schema))
    get_logger().info("%s: %d task(s): %d verified (%d edited), %d unverified, %d removed (%d rejected, %d skipped)",
                      path, counts["tasks"], counts["verified"], counts["edited"], counts["unverified"],
                      counts["removed"], counts["rejected"], counts["skipped"])
    return result


def _read_tasks(path: str | Path) -> list[Any]:
    raw = "\n".join(read_text_lines(path))
    try:
        tasks = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})", path, exc.lineno) from None
    if not isinstance(tasks, list):
        raise DataError(f"expected a JSON array of tasks (Label Studio's JSON export), got {type(tasks).__name__}",
                        path)
    return tasks


def _task_id(task: dict, index: int) -> str:
    """The record's own id when the task carries one, else Label Studio's task id, else the position."""
    data = task.get("data") or {}
    if data.get("id") is not None:
        return str(data["id"])
    return f"task {task['id']}" if "id" in task else f"task #{index}"


def _pop_verdict(record: Record) -> str | None:
    """Take the verdict choice out of the record's Label Studio bookkeeping and return it."""
    ls_meta = record.meta.get(LS_META_KEY) or {}
    others = ls_meta.get("other_results") or []
    verdicts = [r for r in others if r.get("type") == "choices" and r.get("from_name") == VERDICT_NAME]
    if not verdicts:
        return None
    remaining = [r for r in others if r not in verdicts]
    if remaining:
        ls_meta["other_results"] = remaining
    else:
        ls_meta.pop("other_results", None)
    if not ls_meta:
        record.meta.pop(LS_META_KEY, None)
    chosen = [c for r in verdicts for c in (r.get("value") or {}).get("choices") or []]
    if len(chosen) != 1 or chosen[0] not in (ACCEPT, REJECT):
        raise ValueError(f"verdict must be exactly one of {ACCEPT!r} or {REJECT!r}, got {chosen!r}; "
                         "was the project created with this labelling config?")
    return chosen[0]


def _span_multiset(record: Record) -> Counter:
    return Counter((s.start, s.end, s.label) for s in record.spans)


def _relation_multiset(record: Record) -> Counter:
    """Relations as ``((head start, head end), (tail start, tail end), label)``, independent of span order."""
    triples = Counter()
    for relation in record.relations:
        head, tail = record.spans[relation.head], record.spans[relation.tail]
        triples[((head.start, head.end), (tail.start, tail.end), relation.label)] += 1
    return triples


def _differs(reviewed: Record, predicted: Record) -> bool:
    return _span_multiset(reviewed) != _span_multiset(predicted) or (
        _relation_multiset(reviewed) != _relation_multiset(predicted))


def teacher_agreement(reviewed: Sequence[Record], predicted: Sequence[Record], schema: Schema) -> dict[str, Any]:
    """Reviewer (gold) vs teacher (prediction) on aligned records.

    Entities: :func:`span_prf` strict and overlap over the schema's entity types. Relations, per
    label ``r``: ``TP_r = sum_doc |gold_r ∩ pred_r|`` on offset triples (multisets), precision
    ``TP_r / PRED_r``, recall ``TP_r / GOLD_r``, F1 their harmonic mean.
    """
    gold_spans = [r.spans for r in reviewed]
    pred_spans = [r.spans for r in predicted]
    tp: Counter = Counter()
    n_gold: Counter = Counter()
    n_pred: Counter = Counter()
    for gold_doc, pred_doc in zip(reviewed, predicted, strict=True):
        gold, pred = _relation_multiset(gold_doc), _relation_multiset(pred_doc)
        for triple, count in gold.items():
            n_gold[triple[2]] += count
        for triple, count in pred.items():
            n_pred[triple[2]] += count
        for triple, count in (gold & pred).items():
            tp[triple[2]] += count
    return {
        "tasks": len(reviewed),
        "spans": {mode: span_prf(gold_spans, pred_spans, mode, schema.entity_names) for mode in ("strict", "overlap")},
        "relations": summarize_counts(tp, n_pred, n_gold, [r.name for r in schema.relations]),
    }


def agreement_rows(agreement: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten :func:`teacher_agreement` into table rows (one per entity type and relation label)."""
    rows = []
    strict, overlap = agreement["spans"]["strict"]["per_type"], agreement["spans"]["overlap"]["per_type"]
    for label, scores in strict.items():
        rows.append({"kind": "entity", "type": label, "support": scores["support"],
                     "strict_precision": scores["precision"], "strict_recall": scores["recall"],
                     "strict_f1": scores["f1"], "overlap_f1": overlap[label]["f1"]})
    for label, scores in agreement["relations"]["per_type"].items():
        rows.append({"kind": "relation", "type": label, "support": scores["support"],
                     "strict_precision": scores["precision"], "strict_recall": scores["recall"],
                     "strict_f1": scores["f1"], "overlap_f1": None})
    return rows
