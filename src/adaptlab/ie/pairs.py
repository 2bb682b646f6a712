"""Candidate (head, tail) span pairs for relation extraction, and relations derived from entity types.

A schema can state a relation through the argument's type alone: in the biospecies preset a
HABITAT span is where the species lives (``live_in``), FEEDING what it feeds on (``feed_on``).
:meth:`adaptlab.synth.schema.Schema.relation_by_tail` gives that rule (argument type -> relation, for
the relations of the schema's subject). Gold triples for text-to-triples evaluation are derived
from NER records by pairing every argument span with the nearest subject span before it (or,
when there is none before it, the nearest after it): sentences that name their subject at the
start of each clause are read this way. Nothing here knows a dataset: the caller passes the schema.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import NamedTuple

from adaptlab.data.records import Record, Relation
from adaptlab.metrics.classification import normalise_entity_text
from adaptlab.synth.schema import Schema

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


def derive_relations(record: Record, schema: Schema) -> Record:
    """A copy of ``record`` whose relations pair each argument span with its nearest subject span, labelled
    with the relation the schema gives the argument's type (other spans get none)."""
    by_tail = schema.relation_by_tail()
    relations = []
    for j, span in enumerate(record.spans):
        label = by_tail.get(span.label)
        head = nearest_head(record, j, schema.subject) if label else None
        if head is not None:
            relations.append(Relation(head, j, label))
    return Record(record.text, list(record.spans), relations, dict(record.meta))


def candidate_pairs(
    record: Record, head_labels: Collection[str], tail_labels: Collection[str] | None = None
) -> list[tuple[int, int]]:
    """Every (head, tail) pair of a span labelled in ``head_labels`` and a span of another type: one in
    ``tail_labels`` when given, else any type that is not a head type."""
    return [(i, j) for i, h in enumerate(record.spans) if h.label in head_labels
            for j, t in enumerate(record.spans)
            if j != i and t.label not in head_labels and (tail_labels is None or t.label in tail_labels)]


def head_types(records: Iterable[Record]) -> set[str]:
    """The entity types that head a relation in ``records``: where no schema is given, the data itself says
    which spans a candidate pair starts from."""
    return {record.spans[relation.head].label for record in records for relation in record.relations}


def record_triples(record: Record) -> set[Triple]:
    return {
        Triple(normalise_entity_text(record.span_text(record.spans[r.head])), r.label,
               normalise_entity_text(record.span_text(record.spans[r.tail])))
        for r in record.relations
    }


def triples_by_document(records: Sequence[Record]) -> list[set[Triple]]:
    return [record_triples(r) for r in records]
