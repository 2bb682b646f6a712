"""Classification and triple metrics: hand-computed cases and a cross-check against scikit-learn."""

from __future__ import annotations

import random

import pytest

from adaptlab.errors import DataError
from adaptlab.metrics.classification import classification_prf, normalise_entity_text, triple_prf

GOLD = ["a", "a", "a", "b", "b", "c"]
PRED = ["a", "a", "b", "b", "c", "c"]


def test_classification_hand_computed():
    m = classification_prf(GOLD, PRED)
    # a: TP 2, PRED 2, GOLD 3; b: TP 1, PRED 2, GOLD 2; c: TP 1, PRED 2, GOLD 1
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["micro"] == pytest.approx({"precision": 4 / 6, "recall": 4 / 6, "f1": 4 / 6, "support": 6})
    assert m["macro"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted"]["f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert m["weighted"]["recall"] == pytest.approx(4 / 6)  # weighted recall is accuracy
    assert m["confusion"] == {"labels": ["a", "b", "c"], "matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 1]]}


def test_classification_explicit_labels_and_errors():
    m = classification_prf(GOLD, PRED, labels=["c", "a"])
    assert list(m["per_class"]) == ["c", "a"]
    assert m["confusion"]["matrix"] == [[1, 0], [0, 2]]
    # micro over a and c only: TP 3, PRED 4, GOLD 4
    assert m["micro"]["f1"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(4 / 6)  # accuracy is over every item
    with pytest.raises(DataError, match="aligned"):
        classification_prf(["a"], [])
    assert classification_prf([], [])["accuracy"] == 0.0


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn warns when a draw has a single class
def test_classification_matches_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for _ in range(50):
        classes = ["none", "live_in", "eats", "part_of", 7][: rng.randint(1, 5)]
        n = rng.randint(1, 40)
        gold = [rng.choice(classes) for _ in range(n)]
        pred = [g if rng.random() < 0.6 else rng.choice(classes) for g in gold]
        gold_s, pred_s = [str(g) for g in gold], [str(p) for p in pred]
        ours = classification_prf(gold_s, pred_s)
        labels = ours["confusion"]["labels"]
        for average in ("weighted", "macro", "micro"):
            expected = sklearn_metrics.f1_score(gold_s, pred_s, average=average, zero_division=0)
            assert ours[average]["f1"] == pytest.approx(expected, abs=1e-9)
        p, r, f, s = sklearn_metrics.precision_recall_fscore_support(
            gold_s, pred_s, labels=labels, zero_division=0)
        for k, label in enumerate(labels):
            assert ours["per_class"][label] == pytest.approx(
                {"precision": p[k], "recall": r[k], "f1": f[k], "support": s[k]}, abs=1e-9)
        assert ours["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(gold_s, pred_s))
        cm = sklearn_metrics.confusion_matrix(gold_s, pred_s, labels=labels)
        assert ours["confusion"]["matrix"] == cm.tolist()


def test_classification_mixed_label_types():
    m = classification_prf([1, "x", 1], [1, 1, "x"])
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert set(m["per_class"]) == {1, "x"}


def test_triple_prf_hand_computed():
    gold = [
        {("frog", "live_in", "pond"), ("frog", "eats", "fly")},
        {("toad", "live_in", "garden")},
    ]
    pred = [
        [("frog", "live_in", "pond"), ("frog", "eats", "worm"), ("frog", "live_in", "pond")],  # duplicate
        [("toad", "live_in", "garden"), ("toad", "live_in", "pond")],
    ]
    m = triple_prf(gold, pred)
    # live_in: TP 2, PRED 3, GOLD 2; eats: TP 0, PRED 1, GOLD 1
    assert m["per_relation"]["live_in"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert m["per_relation"]["eats"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["micro"] == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert m["macro"]["f1"] == pytest.approx(0.4)
    assert m["counts"] == {"documents": 2, "gold": 3, "pred": 4, "tp": 2}


def test_triple_prf_is_per_document_and_accepts_doc_ids():
    # the right triple in the wrong document is not a true positive
    m = triple_prf([{("a", "r", "b")}, set()], [set(), {("a", "r", "b")}])
    assert m["micro"]["f1"] == 0.0
    flat_gold = [{("d1", "a", "r", "b"), ("d2", "c", "s", "d")}]
    flat_pred = [{("d1", "a", "r", "b"), ("d1", "c", "s", "d")}]
    m = triple_prf(flat_gold, flat_pred, relation_index=2)
    assert m["per_relation"]["r"]["f1"] == 1.0 and m["per_relation"]["s"]["f1"] == 0.0
    with pytest.raises(DataError, match="aligned"):
        triple_prf([set()], [])


def test_normalise_entity_text():
    assert normalise_entity_text("  The  Pond, ") == "pond"
    assert normalise_entity_text("“Rana  temporaria”") == "rana temporaria"
    assert normalise_entity_text("A") == "a"  # a lone article is kept
    assert normalise_entity_text("ＦＲＯＧ") == "frog"  # NFKC folds full-width letters
