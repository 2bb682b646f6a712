"""Candidate (head, tail) span pairs for relation extraction, and relations derived from NER types.

The biospecies schema states a relation through the argument's type: a HABITAT span is where the
species lives (``live_in``), FEEDING what it feeds on (``feed_on``), BREEDING how it breeds
(``breed_by``). Gold triples for text-to-triples evaluation are therefore derived from NER
records by pairing every argument span with the nearest SPECIES span before it (or, when there is
none before it, the nearest after it): the sentences name the species at the start of each clause.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from adaptlab.data.records import Record, Relation
from adaptlab.metrics.classification import normalise_entity_text

BIOSPECIES_RELATIONS = {"HABITAT": "live_in", "FEEDING": "feed_on", "BREEDING": "breed_by"}
NO_RELATION = "no_relation"


class Triple(NamedTuple):
    """A (head, relation, tail) fact with normalised mention strings (see ``normalise_entity_text``)."""

    head: str
    relation: str
    tail: str


def nearest_head(record: Record, tail_index: int, head_label: str) -> int | None:
    tail = record.spans[tail_index]
    heads = [i for i, s in enumerate(record.spans) if s.label == head_label]
    before = [i for i in heads if record.spans[i].end <= tail.start]
    if before:
        return max(before, key=lambda i: record.spans[i].end)
    after = [i for i in heads if record.spans[i].start >= tail.end]
    return min(after, key=lambda i: record.spans[i].start) if after else None


def derive_relations(
    record: Record, type_to_relation: dict[str, str] = BIOSPECIES_RELATIONS, head_label: str = "SPECIES"
) -> Record:
    """A copy of ``record`` whose relations pair each typed argument with its nearest head span."""
    relations = []
    for j, span in enumerate(record.spans):
        label = type_to_relation.get(span.label)
        head = nearest_head(record, j, head_label) if label else None
        if head is not None:
            relations.append(Relation(head, j, label))
    return Record(record.text, list(record.spans), relations, dict(record.meta))


def candidate_pairs(
    record: Record, head_label: str = "SPECIES", tail_labels: Iterable[str] | None = None
) -> list[tuple[int, int]]:
    """Every (head, tail) pair with a head-type span and a different-type tail span."""
    tails = set(tail_labels) if tail_labels is not None else None
    pairs = []
    for i, h in enumerate(record.spans):
        if h.label != head_label:
            continue
        for j, t in enumerate(record.spans):
            if j != i and t.label != head_label and (tails is None or t.label in tails):
                pairs.append((i, j))
    return pairs


def record_triples(record: Record) -> set[Triple]:
    return {
        Triple(normalise_entity_text(record.span_text(record.spans[r.head])), r.label,
               normalise_entity_text(record.span_text(record.spans[r.tail])))
        for r in record.relations
    }


def triples_by_document(records: Sequence[Record]) -> list[set[Triple]]:
    return [record_triples(r) for r in records]
