"""Entity metrics over character-offset spans: strict, overlap (partial) and word-level P/R/F1.

Why three views: *strict* (exact start, end and type) is the number papers report and what
``seqeval`` computes from IOB2 tags; *overlap* forgives boundary disagreements (a teacher LLM that
says "the pond" where the gold says "pond"), which tells boundary errors apart from type errors;
*token* (word-level) scores give partial credit in proportion to how much of an entity was found.
The word confusion matrix shows which types are mistaken for which.

All functions are pure and work on plain spans: a :class:`~adaptlab.data.records.Span`, anything
with ``start``/``end``/``label`` attributes, or a ``(start, end, label)`` tuple. A corpus is a list
of documents, each a list of spans. Every result is plain Python (floats, ints, lists, dicts) so it
can be written to ``metrics.json`` as is.

Shared formulas (per type ``t``, summed over documents)::

    P_t = TP_t / PRED_t     R_t = TP_t / GOLD_t     F1_t = 2 P_t R_t / (P_t + R_t)

each 0 when its denominator is 0. *Micro* pools the counts of all types before dividing; *macro*
is the unweighted mean of the per-type P, R and F1 (not the F1 of the mean P and R) over the gold
types (or the ``labels=`` given).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from adaptlab.data.records import Record, Span
from adaptlab.data.words import word_offsets, words_in_spans
from adaptlab.errors import DataError

OUTSIDE = "O"
SPAN_MODES = ("strict", "overlap")

SpanTriple = tuple[int, int, str]


def as_triple(span: Any) -> SpanTriple:
    """``Span(0, 5, "X")`` or ``(0, 5, "X")`` -> ``(0, 5, "X")``."""
    if isinstance(span, tuple | list):
        start, end, label = span
        return int(start), int(end), str(label)
    return int(span.start), int(span.end), str(span.label)


def prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    """Precision ``tp / n_pred``, recall ``tp / n_gold``, ``F1 = 2PR / (P + R)``; 0 for a 0 denominator."""
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def summarize_counts(
    tp: Counter, n_pred: Counter, n_gold: Counter, labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Turn per-type counts into ``{"per_type", "micro", "macro"}``.

    Without ``labels``, ``per_type`` lists every type seen in gold or predictions (a type only
    predicted gets P = R = F1 = 0, support 0), micro pools all of them and macro averages over the
    gold types. With ``labels``, exactly those types are reported, pooled and averaged; counts for
    other types are ignored.
    """
    if labels is None:
        reported = sorted(set(n_gold) | set(n_pred))
        macro_labels = sorted(t for t in n_gold if n_gold[t] > 0)
    else:
        reported = list(dict.fromkeys(labels))
        macro_labels = reported
    per_type = {t: {**prf(tp[t], n_pred[t], n_gold[t]), "support": int(n_gold[t])} for t in reported}
    micro = prf(sum(tp[t] for t in reported), sum(n_pred[t] for t in reported),
                sum(n_gold[t] for t in reported))
    micro["support"] = int(sum(n_gold[t] for t in reported))
    if macro_labels:
        macro = {k: sum(per_type[t][k] for t in macro_labels) / len(macro_labels)
                 for k in ("precision", "recall", "f1")}
    else:
        macro = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    macro["support"] = int(sum(n_gold[t] for t in macro_labels))
    return {"per_type": per_type, "micro": micro, "macro": macro}


def _check_same_length(gold: Sequence, pred: Sequence, what: str) -> None:
    if len(gold) != len(pred):
        raise DataError(
            f"{len(gold)} gold {what} but {len(pred)} predicted; predictions must match the gold "
            "documents one-to-one and in the same order"
        )


def _overlap_matches(gold: list[SpanTriple], pred: list[SpanTriple]) -> int:
    """Number of one-to-one gold/pred pairs that overlap, for spans of one type in one document.

    Greedy by overlap length: all overlapping pairs are sorted by ``min(ends) - max(starts)``
    (longest first, ties by position) and accepted when neither side is taken yet. Greedy can miss
    the maximum matching only in contrived chains of nested overlaps; it is what most partial-match
    scorers do, and it never matches a span twice.
    """
    pairs = []
    for gi, (gs, ge, _) in enumerate(gold):
        for pi, (ps, pe, _) in enumerate(pred):
            overlap = min(ge, pe) - max(gs, ps)
            if overlap > 0:
                pairs.append((-overlap, gs, ps, gi, pi))
    pairs.sort()
    used_gold, used_pred = set(), set()
    for _, _, _, gi, pi in pairs:
        if gi not in used_gold and pi not in used_pred:
            used_gold.add(gi)
            used_pred.add(pi)
    return len(used_gold)


def span_prf(
    gold: Sequence[Iterable[Any]],
    pred: Sequence[Iterable[Any]],
    mode: str = "strict",
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Entity-level P/R/F1 over a corpus (one list of spans per document).

    ``mode="strict"``: a predicted span is a true positive when a gold span of the same document
    has the same ``(start, end, label)``; duplicates are counted as multisets, so
    ``TP_t = sum_doc sum_span min(count_gold, count_pred)``.

    ``mode="overlap"``: a predicted span is a true positive when it overlaps (shares at least one
    character with) a gold span of the same label in the same document, matched one-to-one
    (greedy by largest overlap, see :func:`_overlap_matches`). ``TP_t`` counts matched pairs, so
    precision and recall share a numerator.

    Returns ``{"per_type": {t: {precision, recall, f1, support}}, "micro": {...}, "macro": {...}}``
    (see :func:`summarize_counts` for which types are reported and averaged).
    """
    if mode not in SPAN_MODES:
        raise ValueError(f"unknown span matching mode {mode!r}; use one of {SPAN_MODES}")
    _check_same_length(gold, pred, "documents")
    tp: Counter = Counter()
    n_gold: Counter = Counter()
    n_pred: Counter = Counter()
    for gold_doc, pred_doc in zip(gold, pred, strict=True):
        g = [as_triple(s) for s in gold_doc]
        p = [as_triple(s) for s in pred_doc]
        n_gold.update(s[2] for s in g)
        n_pred.update(s[2] for s in p)
        if mode == "strict":
            common = Counter(g) & Counter(p)
            for (_, _, label), count in common.items():
                tp[label] += count
        else:
            for label in {s[2] for s in g} & {s[2] for s in p}:
                same_gold = [s for s in g if s[2] == label]
                tp[label] += _overlap_matches(same_gold, [s for s in p if s[2] == label])
    return summarize_counts(tp, n_pred, n_gold, labels)


def word_types(offsets: Sequence[tuple[int, int]], spans: Iterable[Any]) -> list[str]:
    """The entity type of each word, or ``"O"``: the type of the first-starting span it overlaps."""
    span_objs = [Span(*as_triple(s)) for s in spans]
    owner = words_in_spans(list(offsets), span_objs)
    return [span_objs[i].label if i >= 0 else OUTSIDE for i in owner]


def _doc_offsets(text_or_offsets: str | Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    if isinstance(text_or_offsets, str):
        return word_offsets(text_or_offsets)
    return [(int(s), int(e)) for s, e in text_or_offsets]


def corpus_word_types(
    gold_spans: Sequence[Iterable[Any]],
    pred_spans: Sequence[Iterable[Any]],
    texts: Sequence[str | Sequence[tuple[int, int]]],
) -> tuple[list[str], list[str]]:
    """Flatten a corpus into aligned per-word gold and predicted types (``"O"`` outside entities)."""
    _check_same_length(gold_spans, pred_spans, "documents")
    _check_same_length(gold_spans, texts, "documents (texts)")
    gold_words: list[str] = []
    pred_words: list[str] = []
    for g, p, t in zip(gold_spans, pred_spans, texts, strict=True):
        offsets = _doc_offsets(t)
        gold_words.extend(word_types(offsets, g))
        pred_words.extend(word_types(offsets, p))
    return gold_words, pred_words


def token_prf(
    gold_spans: Sequence[Iterable[Any]],
    pred_spans: Sequence[Iterable[Any]],
    texts: Sequence[str | Sequence[tuple[int, int]]],
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Word-level P/R/F1 per type, micro and macro.

    Each document is split into words (``texts[i]`` is the text, segmented with
    :func:`adaptlab.data.words.word_offsets`, or already a list of ``(start, end)`` word offsets).
    Each word gets the type of the span it overlaps, else ``"O"``. Per type ``t``::

        TP_t = #words with gold t and pred t,  PRED_t = #words with pred t,  GOLD_t = #words with gold t

    ``"O"`` is never a type: micro pools the entity types only. Same output shape as
    :func:`span_prf`; ``support`` counts gold words.
    """
    gold_words, pred_words = corpus_word_types(gold_spans, pred_spans, texts)
    return word_prf(gold_words, pred_words, labels)


def word_prf(
    gold_words: Sequence[str], pred_words: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """:func:`token_prf` on already aligned per-word types (``"O"`` for outside)."""
    pairs = zip(gold_words, pred_words, strict=True)
    tp: Counter = Counter(g for g, p in pairs if g == p and g != OUTSIDE)
    n_gold: Counter = Counter(g for g in gold_words if g != OUTSIDE)
    n_pred: Counter = Counter(p for p in pred_words if p != OUTSIDE)
    return summarize_counts(tp, n_pred, n_gold, labels)


def confusion_matrix(
    gold_words: Sequence[str], pred_words: Sequence[str], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """Word type confusion: ``matrix[i][j]`` = #words with gold type ``labels[i]``, predicted ``labels[j]``.

    Rows are gold, columns predicted; ``"O"`` is always the last label. Explicit ``labels`` come
    first in the given order, followed by any other observed type (sorted) so that nothing is hidden.
    """
    observed = (set(gold_words) | set(pred_words)) - {OUTSIDE}
    given = [t for t in dict.fromkeys(labels or []) if t != OUTSIDE]
    order = given + sorted(observed - set(given)) + [OUTSIDE]
    index = {t: i for i, t in enumerate(order)}
    matrix = [[0] * len(order) for _ in order]
    for g, p in zip(gold_words, pred_words, strict=True):
        matrix[index[g]][index[p]] += 1
    return {"labels": order, "matrix": matrix}


def ner_report(
    gold_records: Sequence[Record], pred_records: Sequence[Record], labels: Sequence[str] | None = None
) -> dict[str, Any]:
    """All entity metrics for aligned gold and predicted records (same texts, same order).

    Returns ``{"strict", "overlap", "token"}`` (each as :func:`span_prf`), ``"confusion"`` (word
    types, see :func:`confusion_matrix`) and ``"counts"`` (documents, words, gold and predicted
    spans). Raises :class:`~adaptlab.errors.DataError` when the records do not line up.
    """
    _check_same_length(gold_records, pred_records, "records")
    for i, (g, p) in enumerate(zip(gold_records, pred_records, strict=True)):
        if g.text != p.text:
            raise DataError(
                f"predicted record {i} has a different text from gold record {i} "
                f"({p.text[:40]!r} vs {g.text[:40]!r}); predictions must be made on the gold texts, "
                "in the same order"
            )
    gold = [r.spans for r in gold_records]
    pred = [r.spans for r in pred_records]
    texts = [r.text for r in gold_records]
    gold_words, pred_words = corpus_word_types(gold, pred, texts)
    return {
        "strict": span_prf(gold, pred, "strict", labels),
        "overlap": span_prf(gold, pred, "overlap", labels),
        "token": word_prf(gold_words, pred_words, labels),
        "confusion": confusion_matrix(gold_words, pred_words, labels),
        "counts": {
            "documents": len(gold_records),
            "words": len(gold_words),
            "gold_spans": sum(len(s) for s in gold),
            "pred_spans": sum(len(s) for s in pred),
        },
    }
