"""Ranking metrics: hand-computed AUCs, degenerate inputs, bag accuracy vs MAE, mean ± std."""

from __future__ import annotations

import math

import pytest

from adaptlab.errors import DataError
from adaptlab.metrics.ranking import bag_accuracy, mean_std, sentence_auc


def test_sentence_auc_hand_computed():
    # positives scored 0.9 and 0.4, negatives 0.5 and 0.1: 3 of 4 (pos, neg) pairs ranked right.
    m = sentence_auc([1, 0, 1, 0], [0.9, 0.5, 0.4, 0.1])
    assert m["auc_roc"] == pytest.approx(0.75)
    # ranking 0.9(+) 0.5(-) 0.4(+) 0.1(-): AP = 0.5 * 1 + 0.5 * 2/3
    assert m["auc_pr"] == pytest.approx(0.5 + 1 / 3)
    assert (m["n"], m["positives"], m["unlabelled"]) == (4, 2, 0)
    assert "reason" not in m


def test_sentence_auc_perfect_and_ties():
    assert sentence_auc([0, 0, 1], [0.1, 0.2, 0.3])["auc_roc"] == 1.0
    assert sentence_auc([0, 1], [0.5, 0.5])["auc_roc"] == pytest.approx(0.5)  # a tie counts half


def test_sentence_auc_ignores_unlabelled():
    m = sentence_auc([1, None, math.nan, 0], [0.8, 0.0, 1.0, 0.2])
    assert m["auc_roc"] == 1.0
    assert (m["n"], m["positives"], m["unlabelled"]) == (2, 1, 2)


@pytest.mark.parametrize("labels,reason", [([1, 1, None], "one class"), ([None, math.nan], "no labelled")])
def test_sentence_auc_undefined_is_nan_with_reason(labels, reason):
    m = sentence_auc(labels, [0.1] * len(labels))
    assert math.isnan(m["auc_roc"]) and math.isnan(m["auc_pr"])
    assert reason in m["reason"]


def test_sentence_auc_rejects_bad_input():
    with pytest.raises(DataError, match="2 labels but 3 scores"):
        sentence_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="0 or 1"):
        sentence_auc([0, 0.5, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError, match="NaN score"):
        sentence_auc([0, 1], [0.1, math.nan])
    # a NaN score on an unlabelled sentence does not matter
    assert sentence_auc([0, 1, None], [0.1, 0.9, math.nan])["auc_roc"] == 1.0


def test_bag_accuracy_binary():
    m = bag_accuracy([1, 0, 1, 0], [0.9, 0.5, 0.2, 0.1])
    assert m["accuracy"] == pytest.approx(0.5)  # 0.5 >= threshold counts as positive: wrong for label 0
    assert m["mae"] == pytest.approx((0.1 + 0.5 + 0.8 + 0.1) / 4)
    assert m["n"] == 4 and "reason" not in m
    assert bag_accuracy([1, 0], [0.6, 0.4], threshold=0.7)["accuracy"] == pytest.approx(0.5)


def test_bag_accuracy_fractional_labels_report_mae():
    m = bag_accuracy([0.5, 1.0, 0.25], [0.25, 1.0, 0.25])
    assert math.isnan(m["accuracy"]) and "mae" in m["reason"]
    assert m["mae"] == pytest.approx(0.25 / 3)


def test_bag_accuracy_empty_and_bad():
    m = bag_accuracy([], [])
    assert m["n"] == 0 and math.isnan(m["accuracy"]) and math.isnan(m["mae"])
    with pytest.raises(DataError, match="1 NaN labels"):
        bag_accuracy([1, math.nan], [0.2, 0.3])
    with pytest.raises(DataError, match="1 labels but 2 scores"):
        bag_accuracy([1], [0.2, 0.3])


def test_mean_std():
    assert mean_std([0.6, 0.7, 0.8]) == pytest.approx({"mean": 0.7, "std": 0.1, "n": 3, "skipped_nan": 0})
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1, "skipped_nan": 0}
    m = mean_std([0.6, math.nan, None, 0.8])
    assert m["mean"] == pytest.approx(0.7) and m["std"] == pytest.approx(math.sqrt(0.02))
    assert (m["n"], m["skipped_nan"]) == (2, 2)
    empty = mean_std([])
    assert math.isnan(empty["mean"]) and math.isnan(empty["std"]) and empty["n"] == 0
