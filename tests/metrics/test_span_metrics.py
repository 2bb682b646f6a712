"""Entity metrics: hand-computed cases, and strict F1 checked against seqeval on random IOB2 tags."""

from __future__ import annotations

import random
import warnings

import pytest

from adaptlab.data.formats.conll import tokens_to_record
from adaptlab.data.records import Record, Span
from adaptlab.errors import DataError
from adaptlab.metrics.spans import confusion_matrix, ner_report, span_prf, token_prf

# Doc: gold A(0,5) B(10,15) A(20,25); pred A(0,5) exact, B(10,14) partial, B(20,25) wrong type,
# A(30,35) spurious.
GOLD = [[Span(0, 5, "A"), Span(10, 15, "B"), Span(20, 25, "A")]]
PRED = [[(0, 5, "A"), (10, 14, "B"), (20, 25, "B"), (30, 35, "A")]]


def test_strict_hand_computed():
    m = span_prf(GOLD, PRED, "strict")
    assert m["per_type"]["A"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_type"]["B"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # micro: TP 1, PRED 4, GOLD 3 -> P 1/4, R 1/3, F1 = 2/7
    assert m["micro"] == pytest.approx({"precision": 0.25, "recall": 1 / 3, "f1": 2 / 7, "support": 3})
    assert m["macro"] == pytest.approx({"precision": 0.25, "recall": 0.25, "f1": 0.25, "support": 3})


def test_overlap_hand_computed():
    m = span_prf(GOLD, PRED, "overlap")
    assert m["per_type"]["A"]["f1"] == pytest.approx(0.5)  # the wrong-type B(20,25) does not help A
    assert m["per_type"]["B"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    # micro: TP 2, PRED 4, GOLD 3 -> P 1/2, R 2/3, F1 4/7
    assert m["micro"] == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert m["macro"]["f1"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_overlap_is_one_to_one_and_greedy_by_overlap():
    # two predictions inside one gold span: only one matches
    m = span_prf([[(0, 10, "A")]], [[(0, 4, "A"), (5, 10, "A")]], "overlap")
    assert m["micro"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    # one prediction across two gold spans: matches one (the larger overlap), recall 1/2
    m = span_prf([[(0, 10, "A"), (12, 14, "A")]], [[(8, 13, "A")]], "overlap")
    assert m["micro"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    # touching is not overlapping (end is exclusive)
    assert span_prf([[(0, 5, "A")]], [[(5, 9, "A")]], "overlap")["micro"]["f1"] == 0.0


def test_matches_stay_within_documents():
    gold = [[(0, 5, "A")], []]
    pred = [[], [(0, 5, "A")]]
    for mode in ("strict", "overlap"):
        assert span_prf(gold, pred, mode)["micro"]["f1"] == 0.0


def test_predicted_only_type_and_explicit_labels():
    m = span_prf([[(0, 5, "A")]], [[(0, 5, "A"), (6, 9, "C")]])
    assert m["per_type"]["C"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["micro"]["precision"] == pytest.approx(0.5)  # the spurious C counts in micro
    assert m["macro"]["f1"] == pytest.approx(1.0)  # macro averages the gold types only
    m = span_prf([[(0, 5, "A")]], [[(0, 5, "A"), (6, 9, "C")]], labels=["A", "B"])
    assert list(m["per_type"]) == ["A", "B"]
    assert m["micro"]["precision"] == pytest.approx(1.0)  # C ignored
    assert m["macro"]["f1"] == pytest.approx(0.5)  # mean of A (1.0) and B (0.0)


def test_empty_corpus_and_errors():
    m = span_prf([[]], [[]])
    assert m["micro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro"]["f1"] == 0.0 and m["per_type"] == {}
    with pytest.raises(ValueError, match="mode"):
        span_prf([[]], [[]], mode="fuzzy")
    with pytest.raises(DataError, match="1 gold documents but 2"):
        span_prf([[]], [[], []])


TEXT = "Frogs live in ponds near Lake Erie ."
GOLD_RECORD = Record(TEXT, [Span(0, 5, "SPECIES"), Span(14, 19, "HABITAT"), Span(25, 34, "HABITAT")])
# pred: "Frogs live" SPECIES (too long), "ponds" SPECIES (wrong type), "Lake" HABITAT (too short)
PRED_RECORD = Record(TEXT, [Span(0, 10, "SPECIES"), Span(14, 19, "SPECIES"), Span(25, 29, "HABITAT")])


def test_token_prf_hand_computed():
    # gold words: S O O H O H H O ; pred words: S S O S O H O O
    m = token_prf([GOLD_RECORD.spans], [PRED_RECORD.spans], [TEXT])
    assert m["per_type"]["SPECIES"] == pytest.approx(
        {"precision": 1 / 3, "recall": 1.0, "f1": 0.5, "support": 1})
    assert m["per_type"]["HABITAT"] == pytest.approx(
        {"precision": 1.0, "recall": 1 / 3, "f1": 0.5, "support": 3})
    assert m["micro"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 4})
    assert m["macro"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 0.5, "support": 4})
    # pre-computed word offsets give the same result
    offsets = [(0, 5), (6, 10), (11, 13), (14, 19), (20, 24), (25, 29), (30, 34), (35, 36)]
    assert token_prf([GOLD_RECORD.spans], [PRED_RECORD.spans], [offsets]) == m


def test_ner_report_hand_computed():
    report = ner_report([GOLD_RECORD], [PRED_RECORD])
    assert report["strict"]["micro"]["f1"] == 0.0
    assert report["overlap"]["per_type"]["SPECIES"] == pytest.approx(
        {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert report["overlap"]["per_type"]["HABITAT"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert report["token"]["micro"]["f1"] == pytest.approx(0.5)
    assert report["confusion"] == {
        "labels": ["HABITAT", "SPECIES", "O"],
        "matrix": [[1, 1, 1], [0, 1, 0], [0, 1, 3]],
    }
    assert report["counts"] == {"documents": 1, "words": 8, "gold_spans": 3, "pred_spans": 3}
    with pytest.raises(DataError, match="different text"):
        ner_report([GOLD_RECORD], [Record("Toads live in ponds.", [])])


def test_confusion_matrix_explicit_labels_first():
    cm = confusion_matrix(["B", "A", "O", "Z"], ["B", "O", "A", "Z"], labels=["B", "A"])
    assert cm["labels"] == ["B", "A", "Z", "O"]
    assert cm["matrix"] == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]]


def _random_iob2(rng: random.Random, n: int, types: list[str]) -> list[str]:
    tags, current = [], None
    for _ in range(n):
        r = rng.random()
        if current is not None and r < 0.35:
            tags.append(f"I-{current}")
        elif r < 0.7:
            current = rng.choice(types)
            tags.append(f"B-{current}")
        else:
            current = None
            tags.append("O")
    return tags


def _perturb(rng: random.Random, tags: list[str], types: list[str]) -> list[str]:
    """A prediction close to gold: a few positions re-drawn, repaired into valid IOB2."""
    out = list(tags)
    for i in range(len(out)):
        if rng.random() < 0.25:
            out[i] = rng.choice(["O"] + [f"{p}-{t}" for p in "BI" for t in types])
    for i, tag in enumerate(out):  # an I- must continue a span of its type
        if tag.startswith("I-") and (i == 0 or out[i - 1][2:] != tag[2:]):
            out[i] = "B-" + tag[2:]
    return out


def test_strict_f1_matches_seqeval_on_random_iob2():
    seqeval_metrics = pytest.importorskip("seqeval.metrics")
    from seqeval.scheme import IOB2

    rng = random.Random(13)
    checked = 0
    for _ in range(200):
        types = rng.sample(["PER", "LOC", "ORG", "MISC"], rng.randint(1, 4))
        gold_tags, pred_tags, gold, pred = [], [], [], []
        for _ in range(rng.randint(1, 5)):
            n = rng.randint(1, 15)
            tokens = [f"w{k}" for k in range(n)]
            g = _random_iob2(rng, n, types)
            p = _perturb(rng, g, types) if rng.random() < 0.8 else _random_iob2(rng, n, types)
            gold_tags.append(g)
            pred_tags.append(p)
            gold.append(tokens_to_record(tokens, g).spans)
            pred.append(tokens_to_record(tokens, p).spans)
        ours = span_prf(gold, pred, "strict")
        if not any(gold) and not any(pred):
            assert ours["micro"]["f1"] == 0.0
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f1 = seqeval_metrics.f1_score(gold_tags, pred_tags, mode="strict", scheme=IOB2)
            report = seqeval_metrics.classification_report(
                gold_tags, pred_tags, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
        assert ours["micro"]["f1"] == pytest.approx(f1, abs=1e-9)
        assert ours["micro"]["precision"] == pytest.approx(report["micro avg"]["precision"], abs=1e-9)
        assert ours["micro"]["recall"] == pytest.approx(report["micro avg"]["recall"], abs=1e-9)
        per_type = {k: v for k, v in report.items() if not k.endswith(" avg")}
        assert set(per_type) == set(ours["per_type"])
        for label, scores in per_type.items():
            assert ours["per_type"][label]["f1"] == pytest.approx(scores["f1-score"], abs=1e-9)
            assert ours["per_type"][label]["support"] == scores["support"]
        pred_types = {s.label for doc in pred for s in doc}
        gold_types = {s.label for doc in gold for s in doc}
        if pred_types <= gold_types:  # seqeval's macro averages over gold ∪ pred types
            assert ours["macro"]["f1"] == pytest.approx(report["macro avg"]["f1-score"], abs=1e-9)
        checked += 1
    assert checked > 150


def test_token_prf_matches_sklearn_word_scores():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    from adaptlab.metrics.spans import corpus_word_types

    rng = random.Random(5)
    types = ["PER", "LOC", "ORG"]
    gold, pred, texts = [], [], []
    for _ in range(30):
        n = rng.randint(1, 12)
        tokens = [f"w{k}" for k in range(n)]
        g = _random_iob2(rng, n, types)
        gold_rec = tokens_to_record(tokens, g)
        gold.append(gold_rec.spans)
        pred.append(tokens_to_record(tokens, _perturb(rng, g, types)).spans)
        texts.append(gold_rec.text)
    ours = token_prf(gold, pred, texts, labels=types)
    gw, pw = corpus_word_types(gold, pred, texts)
    p, r, f, _ = sklearn_metrics.precision_recall_fscore_support(gw, pw, labels=types, average="micro")
    assert ours["micro"]["precision"] == pytest.approx(p, abs=1e-9)
    assert ours["micro"]["recall"] == pytest.approx(r, abs=1e-9)
    assert ours["micro"]["f1"] == pytest.approx(f, abs=1e-9)
    macro = sklearn_metrics.f1_score(gw, pw, labels=types, average="macro", zero_division=0)
    assert ours["macro"]["f1"] == pytest.approx(macro, abs=1e-9)
