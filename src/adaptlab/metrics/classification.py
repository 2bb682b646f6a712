"""Classification and triple-extraction metrics.

``classification_prf`` scores one label per item (relation classification between a marked entity
pair, response good/bad, sentence labels). Its numbers follow scikit-learn's
``precision_recall_fscore_support`` conventions, so they can be compared with published results,
but it returns everything in one JSON-ready dict (per class, micro, macro, weighted, accuracy,
confusion matrix) for ``metrics.json`` and the HTML report.

``triple_prf`` scores end-to-end extraction (text -> ``(head, relation, tail)`` triples), where
there is no item-by-item alignment: a predicted triple is right when the same document's gold set
contains it. Normalise entity strings first (:func:`normalise_entity_text`) so that "the Pond" and
"pond" meet.

Formulas (per class ``c``)::

    P_c = TP_c / PRED_c     R_c = TP_c / GOLD_c     F1_c = 2 P_c R_c / (P_c + R_c)   (0 if 0/0)
    micro: the same formulas over counts pooled across classes
    macro: unweighted mean of P_c, R_c, F1_c
    weighted: sum_c GOLD_c * F1_c / sum_c GOLD_c   (likewise for P and R)
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np

from adaptlab.errors import DataError
from adaptlab.metrics.spans import summarize_counts


def _sorted_labels(values: Iterable[Hashable]) -> list:
    values = set(values)
    try:
        return sorted(values)
    except TypeError:  # mixed types (e.g. int and str): any fixed order will do
        return sorted(values, key=repr)


def classification_prf(
    gold_labels: Sequence[Hashable], pred_labels: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> dict[str, Any]:
    """Single-label classification scores.

    ``labels`` fixes the classes (and their order); by default it is the sorted union of gold and
    predicted labels, as in scikit-learn, so macro averages include classes that are only predicted.
    A gold (predicted) label outside ``labels`` does not count in any ``GOLD_c`` (``PRED_c``), as in
    scikit-learn's ``labels=``; with every label listed, micro P = R = F1 = accuracy.

    Returns ``{"per_class": {c: {precision, recall, f1, support}}, "micro", "macro", "weighted"``
    (each ``{precision, recall, f1, support}``), ``"accuracy"`` (``#correct / #items`` over all
    items) and ``"confusion": {"labels": [...], "matrix": [[...]]}`` (rows gold, columns predicted;
    items with a label outside ``labels`` are left out of the matrix).
    """
    gold_labels, pred_labels = list(gold_labels), list(pred_labels)
    if len(gold_labels) != len(pred_labels):
        raise DataError(
            f"{len(gold_labels)} gold labels but {len(pred_labels)} predictions; they must be aligned"
        )
    classes = list(dict.fromkeys(labels)) if labels is not None else _sorted_labels(gold_labels + pred_labels)
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for g, p in zip(gold_labels, pred_labels, strict=True):  # lengths checked above
        if g in index and p in index:
            matrix[index[g], index[p]] += 1
    pairs = list(zip(gold_labels, pred_labels, strict=True))
    tp: Counter = Counter(g for g, p in pairs if g == p and g in index)
    n_gold: Counter = Counter(g for g in gold_labels if g in index)
    n_pred: Counter = Counter(p for p in pred_labels if p in index)
    summary = summarize_counts(tp, n_pred, n_gold, classes)
    per_class = summary["per_type"]
    total = sum(n_gold[c] for c in classes)
    weighted = {k: (sum(n_gold[c] * per_class[c][k] for c in classes) / total) if total else 0.0
                for k in ("precision", "recall", "f1")}
    weighted["support"] = int(total)
    correct = sum(1 for g, p in pairs if g == p)
    return {
        "per_class": per_class,
        "micro": summary["micro"],
        "macro": summary["macro"],
        "weighted": weighted,
        "accuracy": correct / len(gold_labels) if gold_labels else 0.0,
        "confusion": {"labels": classes, "matrix": matrix.tolist()},
    }


_SPACES = re.compile(r"\s+")
_EDGE_PUNCT = "\"'“”‘’.,;:!?()[]{}"


def normalise_entity_text(text: str) -> str:
    """Canonical form of an entity string for triple matching: NFKC, casefolded, single spaces,
    surrounding quotes/brackets/punctuation and a leading English article removed.

    ``"  The  Pond, "`` -> ``"pond"``. Matching on normalised strings scores what was extracted
    rather than how the model happened to spell it.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _SPACES.sub(" ", text).strip().strip(_EDGE_PUNCT).strip()
    for article in ("the ", "a ", "an "):
        if text.startswith(article) and len(text) > len(article):
            text = text[len(article):]
            break
    return text


def triple_prf(
    gold_triples: Iterable[Iterable[tuple]],
    pred_triples: Iterable[Iterable[tuple]],
    relation_index: int = 1,
    relations: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """Set-based P/R/F1 of extracted triples, per relation and overall.

    ``gold_triples`` and ``pred_triples`` are aligned iterables with one collection of hashable
    tuples per document, typically ``(head, relation, tail)`` with normalised entity strings.
    Within a document duplicates collapse (a set); a predicted triple is a true positive when the
    same document's gold set contains it::

        TP_r = sum_doc |G_doc,r ∩ P_doc,r|   PRED_r = sum_doc |P_doc,r|   GOLD_r = sum_doc |G_doc,r|

    where ``r`` is the tuple element at ``relation_index`` (1 for ``(head, relation, tail)``).
    Corpus-level tuples that carry the document id, ``(doc_id, head, relation, tail)``, work too:
    pass them as a single document with ``relation_index=2``.

    Returns ``{"per_relation": {r: {precision, recall, f1, support}}, "micro", "macro", "counts"}``;
    macro averages over the gold relations (or ``relations``), as in :func:`span_prf`.
    """
    gold_docs = [set(doc) for doc in gold_triples]
    pred_docs = [set(doc) for doc in pred_triples]
    if len(gold_docs) != len(pred_docs):
        raise DataError(
            f"{len(gold_docs)} gold documents but {len(pred_docs)} predicted; they must be aligned"
        )
    tp: Counter = Counter()
    n_gold: Counter = Counter()
    n_pred: Counter = Counter()
    for g, p in zip(gold_docs, pred_docs, strict=True):
        n_gold.update(t[relation_index] for t in g)
        n_pred.update(t[relation_index] for t in p)
        tp.update(t[relation_index] for t in g & p)
    summary = summarize_counts(tp, n_pred, n_gold, relations)
    return {
        "per_relation": summary["per_type"],
        "micro": summary["micro"],
        "macro": summary["macro"],
        "counts": {
            "documents": len(gold_docs),
            "gold": int(sum(n_gold.values())),
            "pred": int(sum(n_pred.values())),
            "tp": int(sum(tp.values())),
        },
    }
