"""Classification and triple-extraction metrics.

``classification_prf`` scores one label per item (relation classification between a marked entity
pair, response good/bad, sentence labels), ``multilabel_prf`` a set of labels per item, and
``text_classification_report`` puts either into the report of ``adaptlab cls evaluate``. The
numbers follow scikit-learn's ``precision_recall_fscore_support`` conventions, so they can be
compared with published results, but come in one JSON-ready dict (per class, micro, macro,
weighted, accuracy, confusion matrix) for ``metrics.json`` and the HTML report.

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
from collections.abc import Collection, Hashable, Iterable, Sequence
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
    correct = sum(1 for g, p in pairs if g == p)
    return {
        **_class_averages(tp, n_pred, n_gold, classes),
        "accuracy": correct / len(gold_labels) if gold_labels else 0.0,
        "confusion": {"labels": classes, "matrix": matrix.tolist()},
    }


def _class_averages(tp: Counter, n_pred: Counter, n_gold: Counter, classes: list) -> dict[str, Any]:
    """``per_class``, ``micro``, ``macro`` (:func:`summarize_counts`) and the support-``weighted`` average."""
    summary = summarize_counts(tp, n_pred, n_gold, classes)
    per_class = summary["per_type"]
    total = sum(n_gold[c] for c in classes)
    weighted = {k: (sum(n_gold[c] * per_class[c][k] for c in classes) / total) if total else 0.0
                for k in ("precision", "recall", "f1")}
    weighted["support"] = int(total)
    return {"per_class": per_class, "micro": summary["micro"], "macro": summary["macro"], "weighted": weighted}


def multilabel_prf(
    gold_sets: Sequence[Collection[Hashable]], pred_sets: Sequence[Collection[Hashable]],
    labels: Sequence[Hashable] | None = None,
) -> dict[str, Any]:
    """Multi-label classification scores (each item has a set of labels, possibly empty).

    Counts per class ``c`` over items ``i`` (scikit-learn's multi-label indicator conventions)::

        TP_c = #{i : c in G_i and c in P_i}   PRED_c = #{i : c in P_i}   GOLD_c = #{i : c in G_i}

    then P, R, F1, micro, macro and weighted as in :func:`classification_prf`. ``labels`` fixes the classes
    (default: the sorted union of gold and predicted labels). ``subset_accuracy`` (also ``accuracy``) is the
    share of items whose predicted set equals the gold set exactly (sklearn's ``accuracy_score`` on indicator
    matrices). ``confusion`` is the label co-occurrence matrix ``M[a][b] = #{i : a in G_i and b in P_i}`` (rows
    gold, columns predicted): its diagonal holds ``TP_c``, and for one label per item it is the ordinary
    confusion matrix.
    """
    gold_sets, pred_sets = [set(g) for g in gold_sets], [set(p) for p in pred_sets]
    if len(gold_sets) != len(pred_sets):
        raise DataError(f"{len(gold_sets)} gold label sets but {len(pred_sets)} predictions; they must be aligned")
    classes = (list(dict.fromkeys(labels)) if labels is not None
               else _sorted_labels([c for s in gold_sets + pred_sets for c in s]))
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    tp: Counter = Counter()
    n_gold: Counter = Counter()
    n_pred: Counter = Counter()
    for gold, pred in zip(gold_sets, pred_sets):
        gold, pred = gold & index.keys(), pred & index.keys()
        n_gold.update(gold)
        n_pred.update(pred)
        tp.update(gold & pred)
        for a in gold:
            for b in pred:
                matrix[index[a], index[b]] += 1
    exact = sum(1 for gold, pred in zip(gold_sets, pred_sets) if gold == pred)
    subset_accuracy = exact / len(gold_sets) if gold_sets else 0.0
    return {
        **_class_averages(tp, n_pred, n_gold, classes),
        "accuracy": subset_accuracy,
        "subset_accuracy": subset_accuracy,
        "confusion": {"labels": classes, "matrix": matrix.tolist()},
    }


def text_classification_report(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]],
                               labels: Sequence[str], multi_label: bool) -> dict[str, Any]:
    """The report of ``adaptlab cls evaluate``: headline numbers at the top level, then the details.

    ``gold`` and ``predicted`` hold each item's labels (one for single-label). Classes are the ``labels`` (the
    model's, in its order) that occur in gold or predictions, so macro averages match scikit-learn's defaults
    (``f1_score(average="macro")`` over the labels present). Keys: ``examples``, ``accuracy`` (subset accuracy
    for multi-label), ``macro_f1``, ``micro_f1``, ``weighted_f1``, ``per_class`` ``{label: {precision, recall,
    f1, support}}``, ``macro``/``micro``/``weighted`` ``{precision, recall, f1, support}``, ``confusion``
    ``{labels, matrix}`` and, for multi-label, ``subset_accuracy``.
    """
    present = {label for items in (*gold, *predicted) for label in items}
    classes = [label for label in labels if label in present]
    if multi_label:
        scores = multilabel_prf(gold, predicted, classes)
    else:
        scores = classification_prf([g[0] for g in gold], [p[0] for p in predicted], classes)
    headline = {"examples": len(gold), "accuracy": scores["accuracy"], "macro_f1": scores["macro"]["f1"],
                "micro_f1": scores["micro"]["f1"], "weighted_f1": scores["weighted"]["f1"]}
    return {**headline, **scores, "multi_label": multi_label}


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
