"""The classification report against scikit-learn on fixed examples (single- and multi-label)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from adaptlab.metrics.classification import multilabel_prf, text_classification_report

sk = pytest.importorskip("sklearn.metrics")
from sklearn.preprocessing import MultiLabelBinarizer  # noqa: E402

LABELS = ["neg", "neu", "pos", "unused"]
GOLD = ["pos", "pos", "neg", "neu", "pos", "neg", "neu", "neu", "pos", "neg"]
PRED = ["pos", "neg", "neg", "pos", "pos", "neg", "neu", "pos", "neu", "neu"]


def test_single_label_report_equals_sklearn():
    report = text_classification_report([[g] for g in GOLD], [[p] for p in PRED], LABELS, multi_label=False)
    present = ["neg", "neu", "pos"]  # 'unused' is in neither, so it is not averaged (sklearn's default)
    assert report["accuracy"] == pytest.approx(sk.accuracy_score(GOLD, PRED)) == pytest.approx(0.5)
    assert report["macro_f1"] == pytest.approx(sk.f1_score(GOLD, PRED, average="macro"))
    assert report["micro_f1"] == pytest.approx(sk.f1_score(GOLD, PRED, average="micro"))
    assert report["weighted_f1"] == pytest.approx(sk.f1_score(GOLD, PRED, average="weighted"))
    expected = sk.classification_report(GOLD, PRED, output_dict=True, zero_division=0)
    assert list(report["per_class"]) == present
    for label in present:
        ours = report["per_class"][label]
        assert [ours["precision"], ours["recall"], ours["f1"], ours["support"]] == pytest.approx(
            [expected[label][k] for k in ("precision", "recall", "f1-score", "support")])
    assert report["confusion"] == {"labels": present,
                                   "matrix": sk.confusion_matrix(GOLD, PRED, labels=present).tolist()}
    assert report["confusion"]["matrix"] == [[2, 1, 0], [0, 1, 2], [1, 1, 2]]  # rows gold, columns predicted
    assert report["macro_f1"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)  # by hand: F1 neg, neu, pos


GOLD_SETS = [{"a"}, {"a", "b"}, set(), {"c"}, {"b", "c"}, {"a", "c"}, {"b"}, {"a", "b", "c"}]
PRED_SETS = [{"a"}, {"a"}, {"b"}, {"c"}, {"b", "c"}, {"c"}, set(), {"a", "b"}]


def indicators(sets, labels):
    return MultiLabelBinarizer(classes=labels).fit_transform(sets)


def test_multi_label_report_equals_sklearn():
    labels = ["a", "b", "c"]
    report = text_classification_report(GOLD_SETS, PRED_SETS, labels, multi_label=True)
    y_true, y_pred = indicators(GOLD_SETS, labels), indicators(PRED_SETS, labels)
    assert report["subset_accuracy"] == report["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred))
    assert report["subset_accuracy"] == pytest.approx(3 / 8)
    for average in ("macro", "micro", "weighted"):
        assert report[f"{average}_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average=average))
    p, r, f, s = sk.precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    for k, label in enumerate(labels):
        assert report["per_class"][label] == pytest.approx(
            {"precision": p[k], "recall": r[k], "f1": f[k], "support": s[k]})
    # the diagonal of the co-occurrence matrix is TP per label, as in sklearn's per-label 2x2 matrices
    tp = [m[1][1] for m in sk.multilabel_confusion_matrix(y_true, y_pred)]
    assert np.diag(report["confusion"]["matrix"]).tolist() == tp
    assert report["confusion"]["matrix"][0] == [3, 1, 1]  # gold a: predicted a in 3 items, b in 1, c in 1


def test_multi_label_random_draws_equal_sklearn():
    rng = random.Random(0)
    labels = ["w", "x", "y", "z"]
    for _ in range(30):
        gold = [set(rng.sample(labels, rng.randint(0, 3))) for _ in range(rng.randint(1, 25))]
        pred = [g if rng.random() < 0.5 else set(rng.sample(labels, rng.randint(0, 2))) for g in gold]
        ours = multilabel_prf(gold, pred, labels)
        y_true, y_pred = indicators(gold, labels), indicators(pred, labels)
        for average in ("macro", "micro", "weighted"):
            assert ours[average]["f1"] == pytest.approx(
                sk.f1_score(y_true, y_pred, average=average, zero_division=0), abs=1e-12)
        assert ours["subset_accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred))


def test_single_label_items_give_the_ordinary_confusion_matrix():
    ours = multilabel_prf([{g} for g in GOLD], [{p} for p in PRED], ["neg", "neu", "pos"])
    assert ours["confusion"]["matrix"] == sk.confusion_matrix(GOLD, PRED).tolist()
