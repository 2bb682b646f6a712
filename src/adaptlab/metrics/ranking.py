"""Ranking metrics for sentence scorers (FRACTAL), and the mean ± std summary over folds and seeds.

Why these metrics: a sentence scorer trained from response labels is judged on how well its
scores *rank* sentences against their gold labels, independent of calibration. AUC-ROC is the
probability that a random positive sentence scores above a random negative one; AUC-PR (average
precision) weighs the top of the ranking and is the more telling number when positives are rare.
Both come from scikit-learn (``roc_auc_score``, ``average_precision_score``), so they match the
numbers papers report::

    AUC-ROC = P(score(pos) > score(neg))    (ties count 1/2)
    AP      = sum_n (R_n - R_{n-1}) * P_n   (P_n, R_n: precision and recall at the n-th threshold)

Bag accuracy checks the aggregated response scores against the response labels; for fractional
labels (AVG aggregation: the share of good sentences) a hit/miss makes no sense, so the mean
absolute error is the number to read there.

Every result is a plain dict of floats and ints, ready for ``metrics.json``. A metric that is not
defined (one class only, nothing labelled) is NaN with a ``reason`` key, never an exception, so one
degenerate fold does not abort an evaluation; :func:`mean_std` then counts and skips it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from adaptlab.errors import DataError

Number = float | int | None


def _as_float_array(values: Sequence[Number]) -> np.ndarray:
    """Floats, with ``None`` read as NaN (an unlabelled sentence)."""
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)


def _check_lengths(labels: Sequence[Any], scores: Sequence[Any], what: str) -> None:
    if len(labels) != len(scores):
        raise DataError(f"{what}: {len(labels)} labels but {len(scores)} scores; give one score per label")


def sentence_auc(labels: Sequence[Number], scores: Sequence[float]) -> dict[str, Any]:
    """AUC-ROC and AUC-PR of sentence ``scores`` against binary gold ``labels`` (1 = positive class).

    Sentences whose label is NaN or ``None`` are unlabelled and left out; how many is reported as
    ``unlabelled``. Returns ``{"auc_roc", "auc_pr", "n", "positives", "unlabelled"}`` where ``n``
    counts the labelled sentences scored; when only one class (or nothing) is labelled both AUCs
    are NaN and ``reason`` says why. Labels other than 0/1 or NaN scores on labelled sentences
    raise :class:`DataError`.
    """
    _check_lengths(labels, scores, "sentence_auc")
    y = _as_float_array(labels)
    s = _as_float_array(scores)
    labelled = ~np.isnan(y)
    y, s = y[labelled], s[labelled]
    bad = sorted({float(v) for v in y if v not in (0.0, 1.0)})
    if bad:
        raise DataError(f"sentence_auc needs sentence labels 0 or 1 (NaN/None = unlabelled); got {bad[:5]}")
    if np.isnan(s).any():
        raise DataError(f"sentence_auc: {int(np.isnan(s).sum())} labelled sentences have a NaN score; "
                        "the scorer produced NaN (check the model and its inputs)")
    positives = int(y.sum())
    result: dict[str, Any] = {"auc_roc": math.nan, "auc_pr": math.nan, "n": int(y.size), "positives": positives,
                              "unlabelled": int((~labelled).sum())}
    if y.size == 0:
        result["reason"] = "no labelled sentences"
    elif positives in (0, y.size):
        result["reason"] = f"only one class present (all {int(y[0])}); AUC is undefined"
    else:
        result["auc_roc"] = float(roc_auc_score(y, s))
        result["auc_pr"] = float(average_precision_score(y, s))
    return result


def bag_accuracy(bag_labels: Sequence[float], bag_scores: Sequence[float], threshold: float = 0.5
                 ) -> dict[str, Any]:
    """How well aggregated response scores match the response labels.

    Returns ``{"accuracy", "mae", "n"}``:

    * ``accuracy`` = mean of ``[score >= threshold] == label``, defined only when every label is
      0 or 1; with fractional labels (AVG bags, label = share of good sentences) it is NaN and
      ``reason`` says to read ``mae`` instead.
    * ``mae`` = mean ``|label - score|``, reported always (for binary labels it is the mean
      distance from the right answer, a softer companion to accuracy).

    An empty input gives NaN for both with a ``reason``; NaN labels or scores raise
    :class:`DataError` (every bag has a label).
    """
    _check_lengths(bag_labels, bag_scores, "bag_accuracy")
    y = _as_float_array(bag_labels)
    s = _as_float_array(bag_scores)
    if np.isnan(y).any() or np.isnan(s).any():
        raise DataError(f"bag_accuracy: {int(np.isnan(y).sum())} NaN labels and {int(np.isnan(s).sum())} NaN "
                        "scores; every bag needs a label and a score")
    result: dict[str, Any] = {"accuracy": math.nan, "mae": math.nan, "n": int(y.size)}
    if y.size == 0:
        result["reason"] = "no bags"
        return result
    result["mae"] = float(np.abs(y - s).mean())
    if np.isin(y, (0.0, 1.0)).all():
        result["accuracy"] = float(((s >= threshold) == (y == 1.0)).mean())
    else:
        result["reason"] = "fractional bag labels (AVG): accuracy is undefined, read 'mae'"
    return result


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation over folds or seeds: ``{"mean", "std", "n", "skipped_nan"}``.

    ``std = sqrt(sum (x - mean)^2 / (n - 1))`` (ddof=1) when ``n > 1``; 0.0 for a single value;
    NaN for none. NaN/``None`` values (a fold whose AUC is undefined) are left out and counted in
    ``skipped_nan``, so a table can say "mean of 4 of 5 folds".
    """
    x = _as_float_array(values)
    finite = x[~np.isnan(x)]
    n = int(finite.size)
    mean = float(finite.mean()) if n else math.nan
    std = float(finite.std(ddof=1)) if n > 1 else (0.0 if n == 1 else math.nan)
    return {"mean": mean, "std": std, "n": n, "skipped_nan": int(x.size - n)}
