"""Text to triples: raw sentence -> NER spans -> candidate (SPECIES, argument) pairs -> relations.

Without an RE model, relations follow the argument types (:func:`derive_relations`). With one,
the candidates it scores depend on what it learned: a model with a ``no_relation`` class sees every
SPECIES-argument pair and filters them; a model trained on positive pairs only (as the released
biospecies RE file) labels the nearest-species pair of each argument.
"""

from __future__ import annotations

from collections.abc import Sequence

from adaptlab.data.formats.markers import marked_from_record
from adaptlab.data.records import Record, Relation
from adaptlab.ie.ner import NERPredictor
from adaptlab.ie.pairs import NO_RELATION, candidate_pairs, derive_relations
from adaptlab.ie.relations import REPredictor


def relate(records: Sequence[Record], re_model: REPredictor | None) -> list[Record]:
    """Add relations to NER-tagged records (in place of any they had)."""
    if re_model is None:
        return [derive_relations(r) for r in records]
    out = []
    for record in records:
        if NO_RELATION in re_model.labels:
            pairs = candidate_pairs(record)
        else:
            pairs = [(r.head, r.tail) for r in derive_relations(record).relations]
        predictions = re_model.predict([marked_from_record(record, p) for p in pairs]) if pairs else []
        relations = [Relation(h, t, label) for (h, t), (label, _) in zip(pairs, predictions)
                     if label != NO_RELATION]
        scores = [round(score, 4) for (label, score) in predictions if label != NO_RELATION]
        out.append(Record(record.text, list(record.spans), relations,
                          {**record.meta, "relation_scores": scores}))
    return out


def extract(texts: Sequence[str], ner_model: NERPredictor, re_model: REPredictor | None = None) -> list[Record]:
    return relate(ner_model.predict(list(texts)), re_model)
