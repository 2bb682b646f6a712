"""Text to triples: raw sentence -> NER spans -> candidate (subject, argument) pairs -> relations.

The schema names the subject type and the relation of each argument type. Without an RE model,
relations follow the argument types (:func:`derive_relations`). With one, the candidates it scores
depend on what it learned: a model with a ``no_relation`` class sees every subject-argument pair
and filters them; a model trained on positive pairs only (as the released biospecies RE file)
labels the nearest-subject pair of each argument.
"""

from __future__ import annotations

from collections.abc import Sequence

from adaptlab.data.formats.markers import marked_from_record
from adaptlab.data.records import Record, Relation
from adaptlab.ie.ner import NERPredictor
from adaptlab.ie.pairs import NO_RELATION, candidate_pairs, derive_relations
from adaptlab.ie.relations import REPredictor
from adaptlab.synth.schema import Schema


def relate(records: Sequence[Record], re_model: REPredictor | None, schema: Schema) -> list[Record]:
    """Add relations to NER-tagged records (in place of any they had)."""
    if re_model is None:
        return [derive_relations(r, schema) for r in records]
    out = []
    for record in records:
        if NO_RELATION in re_model.labels:
            pairs = candidate_pairs(record, {schema.subject})
        else:
            pairs = [(r.head, r.tail) for r in derive_relations(record, schema).relations]
        predictions = re_model.predict([marked_from_record(record, p) for p in pairs]) if pairs else []
        relations = [Relation(h, t, label) for (h, t), (label, _) in zip(pairs, predictions)
                     if label != NO_RELATION]
        scores = [round(score, 4) for (label, score) in predictions if label != NO_RELATION]
        out.append(Record(record.text, list(record.spans), relations,
                          {**record.meta, "relation_scores": scores}))
    return out


def extract(texts: Sequence[str], ner_model: NERPredictor, re_model: REPredictor | None,
            schema: Schema) -> list[Record]:
    return relate(ner_model.predict(list(texts)), re_model, schema)
