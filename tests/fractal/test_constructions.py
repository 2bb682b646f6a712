"""Bag constructions: each one's label rule, seeding, drop counts, and the real MultiSpanQA sizes."""

from __future__ import annotations

import pytest

from adaptlab.errors import ConfigError
from adaptlab.fractal.bags import Bag
from adaptlab.fractal.constructions import BAG_RULE, CONSTRUCTIONS, CROP_IMPOSSIBLE, build_bags
from adaptlab.fractal.datasets import load_multispanqa, read_multispanqa_contexts


def context(name: str, labels: list[float]):
    """A full-context bag with one sentence per label; answer spans cover the positive sentences."""
    sentences = [f"{name} sentence {i} ." for i in range(len(labels))]
    text = " ".join(sentences)
    offsets, cursor = [], 0
    for sentence in sentences:
        offsets.append((cursor, cursor + len(sentence)))
        cursor += len(sentence) + 1
    spans = [offsets[i] for i, label in enumerate(labels) if label]
    bag = Bag(id=name, context=f"question {name}", sentences=sentences, offsets=offsets, label=max(labels),
              sentence_labels=list(labels), group=name, response=text)
    return bag, spans


CONTEXTS = [context("a", [0, 1, 0, 0]), context("b", [1, 0, 0]), context("c", [1, 1]), context("d", [0, 0, 1, 0]),
            context("e", [1, 0])]


def test_paired_adds_cropped_negatives_beside_every_positive():
    bags, dropped = build_bags(CONTEXTS, "paired", seed=0, negative_fraction=1.0)
    assert [b.id for b in bags] == ["a", "b", "c", "d", "e", "a:neg", "b:neg", "d:neg", "e:neg"]
    assert dropped == {CROP_IMPOSSIBLE: 1}  # c: every sentence holds an answer
    negatives = {b.id: b for b in bags if b.label == 0.0}
    assert negatives["a:neg"].sentences == ["a sentence 2 .", "a sentence 3 ."] and negatives["a:neg"].group == "a"
    assert all(not any(b.sentence_labels) for b in negatives.values())


def test_half_cropped_gives_one_bag_per_question_and_is_seeded():
    contexts = [context(f"q{i}", [0, 1, 0]) for i in range(10)]
    bags, dropped = build_bags(contexts, "half_cropped", seed=3)
    assert len(bags) == 10 and not dropped
    assert len({b.group for b in bags}) == 10  # no question has both a positive and a negative bag
    negatives = [b for b in bags if b.label == 0.0]
    assert len(negatives) == 5 and all(b.id.endswith(":neg") and b.sentences == [f"{b.group} sentence 0 ."]
                                       for b in negatives)
    assert all(b.label == max(b.sentence_labels) for b in bags)  # MAX rule holds on both halves
    again, _ = build_bags(contexts, "half_cropped", seed=3)
    other, _ = build_bags(contexts, "half_cropped", seed=4)
    assert [b.id for b in again] == [b.id for b in bags] != [b.id for b in other]


def test_half_cropped_counts_a_context_it_cannot_crop():
    bags, dropped = build_bags([context("c", [1, 1]), context("x", [1, 0])], "half_cropped", seed=0)
    assert dropped == {CROP_IMPOSSIBLE: 1} and [b.id for b in bags] == ["x"]


def test_positives_only_constructions_relabel_by_min_and_avg():
    bags_min, _ = build_bags(CONTEXTS, "positives_min")
    bags_avg, _ = build_bags(CONTEXTS, "positives_avg")
    assert [b.label for b in bags_min] == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert [b.label for b in bags_avg] == [0.25, pytest.approx(1 / 3), 1.0, 0.25, 0.5]
    assert [b.sentences for b in bags_avg] == [b.sentences for b, _ in CONTEXTS]
    assert CONTEXTS[0][0].label == 1.0  # the input bags are not changed
    assert BAG_RULE == {"paired": "max", "half_cropped": "max", "positives_min": "min", "positives_avg": "avg"}
    assert set(CONSTRUCTIONS) == set(BAG_RULE)


def test_unknown_construction_and_bad_fraction_are_config_errors():
    with pytest.raises(ConfigError, match="unknown bag construction 'halves'; choose one of: paired, half_cropped"):
        build_bags(CONTEXTS, "halves")
    with pytest.raises(ConfigError, match=r"negative_fraction must be in \[0, 1\], got -0.1"):
        build_bags(CONTEXTS, "paired", negative_fraction=-0.1)


def test_real_multispanqa_constructions(shared_data):
    root = shared_data / "fractal" / "multispanqa"
    contexts, stats = read_multispanqa_contexts(root, limit=150)
    assert len(contexts) == 150 and stats.dropped == {}
    half, dropped = build_bags(contexts, "half_cropped", seed=0)
    assert len(half) + dropped[CROP_IMPOSSIBLE] == 150
    assert sum(b.label for b in half) == 75 and len({b.group for b in half}) == len(half)
    avg, _ = build_bags(contexts, "positives_avg")
    assert len(avg) == 150 and 0.15 < sum(b.label for b in avg) / 150 < 0.3
    paired = load_multispanqa(root, limit=40, construction="paired", seed=0)
    assert [b.id for b in paired.bags] == [b.id for b in build_bags(contexts[:40], "paired", seed=0)[0]]
