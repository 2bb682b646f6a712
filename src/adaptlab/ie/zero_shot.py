"""Zero-shot NER with a teacher LLM, scored exactly like a student.

Two prompts (templates in ``ie/prompts/``):

* ``universalner``: UniversalNER's conversation, one question per entity type
  ("Text: ..." / "I've read this text." / "What describes {type} in the text?"), answered with a
  JSON list of strings (the requests carry that schema, :data:`UNIVERSALNER_SCHEMA`).
  ``len(texts) * len(types)`` requests.
* ``json_spans``: one request per text asking a chat model for ``{"entities": [{"text", "type"}]}``.

Returned strings are mapped back to character spans with the generation aligner (exact, then
whitespace/case-insensitive, whole words, repeated strings left to right). Strings of one type are
aligned together, so two types may claim overlapping text, as a per-type question allows. A string
that is not in the text cannot become a span; it is counted (``unaligned``) and still takes part in
the string-level score.

Scores (see :func:`zero_shot_scores`): strict and overlap span P/R/F1 (the student's metrics) and
UniversalNER's string match, where per text the predicted set of ``(type, normalised string)``
is compared with the gold set; normalisation is :func:`~adaptlab.metrics.classification.normalise_entity_text`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from adaptlab.data.records import Record, Span
from adaptlab.metrics.classification import normalise_entity_text, triple_prf
from adaptlab.metrics.spans import span_prf
from adaptlab.synth.align import align_entity_strings
from adaptlab.teacher.base import Sampling, TeacherRequest
from adaptlab.teacher.jsonparse import JSONExtractionError, extract_json
from adaptlab.teacher.prompts import PromptTemplate
from adaptlab.teacher.runner import Outcome

PROMPTS = ("universalner", "json_spans")
# Bounds keep a small model decoding under the schema from looping until max_tokens.
MAX_ENTITIES = 16  # per answer (the biospecies sentences have at most 10)
MAX_ENTITY_CHARS = 100
UNIVERSALNER_SCHEMA: dict[str, Any] = {"type": "array", "maxItems": MAX_ENTITIES,
                                       "items": {"type": "string", "maxLength": MAX_ENTITY_CHARS}}


@dataclass
class Tagged:
    """The teacher's entities for one text: spans that align, and every string it named."""

    text: str
    spans: list[Span] = field(default_factory=list)
    strings: list[tuple[str, str]] = field(default_factory=list)  # (type, string)
    unaligned: int = 0
    unparseable: int = 0
    failed: int = 0


def universalner_requests(template: PromptTemplate, texts: Sequence[str], queries: dict[str, str],
                          sampling: Sampling) -> list[TeacherRequest]:
    """Requests in text-major order: for text i, one per type in ``queries`` order."""
    return [
        TeacherRequest(template.render(text=text, entity_type=query), sampling, UNIVERSALNER_SCHEMA,
                       tag=f"text {i}: {label}")
        for i, text in enumerate(texts)
        for label, query in queries.items()
    ]


def json_span_requests(template: PromptTemplate, texts: Sequence[str], descriptions: dict[str, str],
                       sampling: Sampling) -> list[TeacherRequest]:
    guidelines = "\n".join(f"- {label}: {text or label}" for label, text in descriptions.items())
    schema = json_spans_schema(list(descriptions))
    return [
        TeacherRequest(template.render(text=text, entity_guidelines=guidelines), sampling, schema, tag=f"text {i}")
        for i, text in enumerate(texts)
    ]


def json_spans_schema(labels: Sequence[str]) -> dict[str, Any]:
    """The JSON schema of a json_spans answer: ``{"entities": [{"text", "type" in labels}]}``."""
    entity = {"type": "object", "required": ["text", "type"], "additionalProperties": False,
              "properties": {"text": {"type": "string", "maxLength": MAX_ENTITY_CHARS},
                             "type": {"type": "string", "enum": list(labels)}}}
    return {"type": "object", "required": ["entities"], "additionalProperties": False,
            "properties": {"entities": {"type": "array", "items": entity, "maxItems": MAX_ENTITIES}}}


def _strings(outcome: Outcome, key: str | None) -> tuple[list[Any] | None, str | None]:
    """The list in an answer (top level, or under ``key``); or why there is none."""
    if outcome.response is None:
        return None, "failed"
    try:
        data = extract_json(outcome.response.text, expect=dict if key else list)
    except JSONExtractionError:
        return None, "unparseable"
    items = data.get(key) if key else data
    return (items, None) if isinstance(items, list) else (None, "unparseable")


def tag_universalner(texts: Sequence[str], labels: Sequence[str], outcomes: Sequence[Outcome]) -> list[Tagged]:
    """Collect per-type answers (outcomes in :func:`universalner_requests` order) into spans."""
    tagged = []
    for i, text in enumerate(texts):
        result = Tagged(text)
        for j, label in enumerate(labels):
            items, problem = _strings(outcomes[i * len(labels) + j], None)
            if problem:
                setattr(result, problem, getattr(result, problem) + 1)
                continue
            _add(result, [(s, label) for s in items if isinstance(s, str) and s.strip()])
        tagged.append(result)
    return tagged


def tag_json_spans(texts: Sequence[str], labels: Sequence[str], outcomes: Sequence[Outcome]) -> list[Tagged]:
    """Collect JSON-span answers into spans; entities of types outside ``labels`` are ignored."""
    known = set(labels)
    tagged = []
    for text, outcome in zip(texts, outcomes, strict=True):
        result = Tagged(text)
        items, problem = _strings(outcome, "entities")
        if problem:
            setattr(result, problem, 1)
        else:
            pairs = [(e["text"], e["type"]) for e in items
                     if isinstance(e, dict) and isinstance(e.get("text"), str) and e.get("type") in known]
            for label in labels:
                _add(result, [p for p in pairs if p[1] == label and p[0].strip()])
        tagged.append(result)
    return tagged


def _add(result: Tagged, pairs: list[tuple[str, str]]) -> None:
    for alignment in align_entity_strings(result.text, pairs):
        result.strings.append((alignment.label, alignment.entity_text))
        if alignment.span is None:
            result.unaligned += 1
        else:
            result.spans.append(alignment.span)
    result.spans.sort()


def string_sets(spans_or_strings: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(label, normalise_entity_text(s)) for label, s in spans_or_strings}


def zero_shot_scores(gold: Sequence[Record], pred_spans: Sequence[Sequence[Span]],
                     pred_strings: Sequence[Sequence[tuple[str, str]]], labels: Sequence[str]) -> dict:
    """Strict and overlap span P/R/F1 plus UniversalNER's normalised string match, per type."""
    gold_spans = [r.spans for r in gold]
    gold_strings = [string_sets([(s.label, r.span_text(s)) for s in r.spans]) for r in gold]
    strings = triple_prf(gold_strings, [string_sets(p) for p in pred_strings], relation_index=0, relations=labels)
    return {
        "strict": span_prf(gold_spans, pred_spans, "strict", labels),
        "overlap": span_prf(gold_spans, pred_spans, "overlap", labels),
        "string": {"per_type": strings["per_relation"], "micro": strings["micro"], "macro": strings["macro"]},
    }
