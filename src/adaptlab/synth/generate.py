"""Schema-driven generation of annotated sentences, one pure step at a time.

1. :func:`subject_requests` / :func:`parse_subjects` / :func:`dedupe_subjects`: ask the teacher
   for N subjects per group (e.g. endangered species per class) and keep each real subject once.
2. :func:`sentence_requests`: per subject, ask for sentences annotated as JSON.
3. :func:`parse_sentences`: align every entity string to character offsets
   (:mod:`adaptlab.synth.align`) and turn relations given by entity texts into span indices.
4. :func:`filter_records`: schema validation and near-duplicate removal
   (:mod:`adaptlab.synth.validate`).

Every step returns what it keeps *and* a :class:`Reject` with a reason for everything else, so a
run can prove ``proposed = accepted + rejected`` at every stage. Nothing here talks to a network;
the recipe (:mod:`adaptlab.recipes.synth`) sends the requests through the teacher runner.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any

from adaptlab.data.records import Record, Relation
from adaptlab.synth.align import align_entity_strings, normalise_sentence
from adaptlab.synth.schema import Schema
from adaptlab.synth.validate import NearDuplicateFilter, record_problems
from adaptlab.teacher.base import Sampling, TeacherRequest
from adaptlab.teacher.jsonparse import JSONExtractionError, extract_json
from adaptlab.teacher.prompts import PromptTemplate
from adaptlab.teacher.runner import Outcome

# Bounds of the answer schemas. Without them a small model decoding under the schema can stay inside
# the grammar forever: SmolLM2-135M repeated one entity until max_tokens, or nested invented keys.
MAX_NAME_CHARS = 100
MAX_SENTENCE_CHARS = 500
MAX_ITEMS_PER_SENTENCE = 12  # entities, and relations, of one sentence


def _string(max_chars: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_chars}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """An object with exactly these keys (no others), ``required`` among them, in this order."""
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def subjects_schema(per_group: int) -> dict[str, Any]:
    """JSON schema of a subject list answer: at most ``per_group`` subjects, each a name and an optional
    scientific name."""
    subject = _object({"name": _string(MAX_NAME_CHARS), "scientific_name": _string(MAX_NAME_CHARS)}, ["name"])
    return _object({"subjects": {"type": "array", "items": subject, "maxItems": per_group}}, ["subjects"])


@dataclass(frozen=True)
class Subject:
    name: str
    scientific_name: str | None = None
    group: str = ""

    @property
    def display(self) -> str:
        return f"{self.name} ({self.scientific_name})" if self.scientific_name else self.name


@dataclass
class Reject:
    """One thing that did not make it into the dataset, and why.

    ``stage`` is ``answer`` (a whole teacher answer), ``subject`` or ``sentence``; ``reason`` is a
    short stable category to count by, ``detail`` says exactly what was wrong.
    """

    stage: str
    reason: str
    detail: str
    request_hash: str = ""
    tag: str = ""
    item: Any = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SentenceBatch:
    """What one sentences answer turned into."""

    records: list[Record] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    proposed: int = 0


def sampling_of(cfg_sampling: Any) -> Sampling:
    return Sampling(temperature=cfg_sampling.temperature, top_p=cfg_sampling.top_p,
                    max_tokens=cfg_sampling.max_tokens, seed=cfg_sampling.seed)


def subject_requests(template: PromptTemplate, schema: Schema, groups: list[str], per_group: int,
                     sampling: Sampling) -> list[TeacherRequest]:
    subject_type = schema.subject
    description = next(e.description for e in schema.entities if e.name == subject_type) or subject_type
    return [
        TeacherRequest(
            messages=template.render(n=per_group, group=group, subject_type=subject_type.lower(),
                                     subject_description=description),
            sampling=sampling, json_schema=subjects_schema(per_group), tag=f"subjects:{group}",
        )
        for group in groups
    ]


def answer_failure(outcome: Outcome) -> Reject | None:
    """A Reject for a request that got no answer after its retries, else None."""
    if outcome.response is not None:
        return None
    return Reject("answer", "request failed", outcome.error or "no answer", outcome.request.hash,
                  outcome.request.tag)


def parse_answer(outcome: Outcome, key: str) -> tuple[list | None, Reject | None]:
    """The list under ``key`` in a JSON answer, or a Reject saying why there is none."""
    failure = answer_failure(outcome)
    if failure:
        return None, failure
    text = outcome.response.text
    reject = Reject("answer", "unparseable answer", "", outcome.request.hash, outcome.request.tag, text[:500])
    try:
        data = extract_json(text, expect=(dict, list))
    except JSONExtractionError as exc:
        reject.detail = str(exc)
        return None, reject
    if isinstance(data, dict):
        data = data.get(key)
    if not isinstance(data, list):
        reject.detail = f"expected a JSON object with a {key!r} list"
        return None, reject
    return data, None


def parse_subjects(outcome: Outcome, group: str) -> tuple[list[Subject], list[Reject]]:
    items, failure = parse_answer(outcome, "subjects")
    if failure:
        return [], [failure]
    subjects, rejects = [], []
    for item in items:
        name = item.get("name") if isinstance(item, dict) else item
        scientific = item.get("scientific_name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name.strip():
            rejects.append(Reject("subject", "malformed subject", "needs a non-empty 'name'",
                                  outcome.request.hash, outcome.request.tag, item))
            continue
        scientific = scientific.strip() if isinstance(scientific, str) and scientific.strip() else None
        subjects.append(Subject(" ".join(name.split()), scientific and " ".join(scientific.split()), group))
    return subjects, rejects


def _subject_keys(subject: Subject) -> set[str]:
    keys = {_fold(subject.name)}
    if subject.scientific_name:
        keys.add(_fold(subject.scientific_name))
    return keys


def _fold(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def dedupe_subjects(subjects: list[Subject]) -> tuple[list[Subject], list[Reject]]:
    """Keep the first of subjects sharing a common or scientific name (case/space-insensitive)."""
    seen: dict[str, Subject] = {}
    kept, rejects = [], []
    for subject in subjects:
        keys = _subject_keys(subject)
        earlier = next((seen[k] for k in keys if k in seen), None)
        if earlier is not None:
            rejects.append(Reject("subject", "duplicate subject", f"same as {earlier.display!r} ({earlier.group})",
                                  item=asdict(subject)))
            continue
        seen.update(dict.fromkeys(keys, subject))
        kept.append(subject)
    return kept, rejects


def sentences_schema(schema: Schema, per_request: int) -> dict[str, Any]:
    """JSON schema of a sentences answer (at most ``per_request`` sentences), for structured output and
    constrained decoding."""
    entity = _object({"text": _string(MAX_NAME_CHARS), "type": {"type": "string", "enum": schema.entity_names}},
                     ["text", "type"])
    relation_types = {"type": "string", "enum": [r.name for r in schema.relations]}
    relation = _object({"head": _string(MAX_NAME_CHARS), "type": relation_types, "tail": _string(MAX_NAME_CHARS)},
                       ["head", "type", "tail"])
    max_relations = MAX_ITEMS_PER_SENTENCE if schema.relations else 0
    sentence = _object({"text": _string(MAX_SENTENCE_CHARS),
                        "entities": {"type": "array", "items": entity, "maxItems": MAX_ITEMS_PER_SENTENCE},
                        "relations": {"type": "array", "items": relation, "maxItems": max_relations}},
                       ["text", "entities", "relations"])
    return _object({"sentences": {"type": "array", "items": sentence, "maxItems": per_request}}, ["sentences"])


def answer_schemas(schema: Schema, per_group: int, per_request: int) -> list[tuple[dict[str, Any], str]]:
    """``(JSON schema, where it comes from)`` of every answer a generation asks for, to check before a run."""
    return [(subjects_schema(per_group), "the subject list answers (config key 'subjects.per_group')"),
            (sentences_schema(schema, per_request),
             "the sentence answers (config keys 'schema' and 'sentences.per_request')")]


def guidelines(schema: Schema) -> tuple[str, str]:
    entities = "\n".join(f"- {e.name}: {e.description or e.name}" for e in schema.entities)
    relations = "\n".join(f"- {r.name}: {r.head} -> {r.tail}. {r.description}".rstrip()
                          for r in schema.relations) or "- (none)"
    return entities, relations


def sentence_requests(template: PromptTemplate, schema: Schema, subjects: list[Subject], per_request: int,
                      requests_per_subject: int, sampling: Sampling) -> list[TeacherRequest]:
    entity_text, relation_text = guidelines(schema)
    json_schema = sentences_schema(schema, per_request)
    requests = []
    for subject in subjects:
        messages = template.render(
            n_sentences=per_request, subject=subject.display, group=subject.group or "unspecified",
            subject_type=schema.subject.lower(), entity_guidelines=entity_text, relation_guidelines=relation_text,
        )
        requests.extend(
            TeacherRequest(messages, sampling, json_schema, variant=k, tag=f"sentences:{subject.display}")
            for k in range(requests_per_subject)
        )
    return requests


def parse_sentences(outcome: Outcome, subject: Subject, base_meta: dict[str, Any]) -> SentenceBatch:
    """Turn one sentences answer into aligned records (not yet validated) and rejects."""
    batch = SentenceBatch()
    items, failure = parse_answer(outcome, "sentences")
    if failure:
        batch.rejects.append(failure)
        return batch
    request = outcome.request
    for k, item in enumerate(items):
        batch.proposed += 1
        meta = {"id": f"{request.hash[:12]}-{k}", "subject": subject.display, "group": subject.group,
                **base_meta, "request_hash": request.hash}
        record, problem = sentence_record(item, meta)
        if problem:
            batch.rejects.append(Reject("sentence", problem[0], problem[1], request.hash, request.tag, item))
        else:
            batch.records.append(record)
    return batch


def sentence_record(item: Any, meta: dict[str, Any]) -> tuple[Record | None, tuple[str, str] | None]:
    """Align one ``{"text", "entities", "relations"}`` item; (record, None) or (None, (reason, detail))."""
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        return None, ("malformed sentence", "expected an object with a 'text' string")
    entities, relations = item.get("entities") or [], item.get("relations") or []
    if not isinstance(entities, list) or not isinstance(relations, list):
        return None, ("malformed sentence", "'entities' and 'relations' must be lists")
    pairs = []
    for entity in entities:
        if not (isinstance(entity, dict) and isinstance(entity.get("text"), str)
                and isinstance(entity.get("type"), str)):
            return None, ("malformed sentence", f"entity {entity!r} needs 'text' and 'type' strings")
        pairs.append((entity["text"], entity["type"]))
    text = normalise_sentence(item["text"])
    alignments = align_entity_strings(text, pairs)
    unaligned = [a for a in alignments if a.span is None]
    if unaligned:
        first = unaligned[0]
        return None, ("entity not aligned", f"{first.entity_text!r} ({first.label}): {first.reason}")
    spans = [a.span for a in alignments]
    order = sorted(range(len(spans)), key=lambda i: (spans[i].start, spans[i].end))
    position = {old: new for new, old in enumerate(order)}
    record_relations = []
    for relation in relations:
        if not (isinstance(relation, dict) and all(isinstance(relation.get(k), str) for k in ("head", "type", "tail"))):
            return None, ("malformed sentence", f"relation {relation!r} needs 'head', 'type' and 'tail' strings")
        head = _entity_index(relation["head"], pairs)
        tail = _entity_index(relation["tail"], pairs)
        if head is None or tail is None:
            missing = relation["head"] if head is None else relation["tail"]
            return None, ("relation argument missing", f"{missing!r} of {relation['type']} is not an annotated entity")
        record_relations.append(Relation(position[head], position[tail], relation["type"]))
    record = Record(text, [spans[i] for i in order], sorted(record_relations, key=lambda r: (r.head, r.tail)), meta)
    return record, None


def _entity_index(text: str, pairs: list[tuple[str, str]]) -> int | None:
    wanted = _fold(text)
    return next((i for i, (entity_text, _) in enumerate(pairs) if _fold(entity_text) == wanted), None)


def filter_records(records: list[Record], schema: Schema, threshold: float) -> tuple[list[Record], list[Reject]]:
    """Schema validation, then near-duplicate removal in order (the first of a group is kept)."""
    kept, rejects = [], []
    repeats = NearDuplicateFilter(threshold)
    for record in records:
        meta = record.meta
        problems = record_problems(record, schema)
        if problems:
            rejects.append(Reject("sentence", problems[0].kind, "; ".join(map(str, problems)),
                                  meta.get("request_hash", ""), meta.get("id", ""), record.to_json()))
            continue
        earlier = repeats.check_and_add(record.text)
        if earlier is not None:
            rejects.append(Reject("sentence", "near duplicate", f"repeats {kept[earlier].meta.get('id')}: "
                                  f"{kept[earlier].text!r}", meta.get("request_hash", ""), meta.get("id", ""),
                                  record.to_json()))
            continue
        kept.append(record)
    return kept, rejects

