"""Pseudo-labels are the MAP labelling consistent with the bag label (checked by brute force)."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from adaptlab.errors import ConfigError
from adaptlab.fractal.pseudo import PSEUDO_RULES, pseudo_labels

SCORES = torch.tensor([0.2, 0.4, 0.9, 0.3, 0.6, 0.7])
BAGS = torch.tensor([0, 0, 1, 1, 2, 2])


def test_max_rule_by_hand():
    labels = pseudo_labels(SCORES, BAGS, torch.tensor([1.0, 1.0, 0.0]), "max")
    assert labels.dtype == torch.long
    # bag 0: nothing above 0.5 -> the argmax (0.4) alone; bag 1: 0.9 only; bag 2: negative -> all 0.
    assert labels.tolist() == [0, 1, 1, 0, 0, 0]


def test_min_rule_by_hand():
    labels = pseudo_labels(SCORES, BAGS, torch.tensor([0.0, 1.0, 0.0]), "min")
    # bag 0: both below 0.5 -> 0; bag 1: positive -> all 1; bag 2: nothing below 0.5 -> the argmin (0.6) alone is 0.
    assert labels.tolist() == [0, 0, 1, 1, 0, 1]


def test_avg_rule_by_hand_rounds_half_up():
    labels = pseudo_labels(SCORES, BAGS, torch.tensor([0.5, 1.0, 0.25]), "avg")
    # k = round(0.5·2) = 1, round(1·2) = 2, round(0.25·2 = 0.5) = 1 (half up).
    assert labels.tolist() == [0, 1, 1, 1, 0, 1]
    three = pseudo_labels(torch.tensor([0.1, 0.8, 0.5]), torch.tensor([0, 0, 0]), torch.tensor([0.5]), "avg")
    assert three.tolist() == [0, 1, 1]  # k = round(1.5) = 2


def test_ties_are_broken_by_bag_order():
    scores = torch.tensor([0.3, 0.3, 0.5, 0.5])
    bags = torch.tensor([0, 0, 1, 1])
    assert pseudo_labels(scores, bags, torch.tensor([1.0, 1.0]), "max").tolist() == [1, 0, 1, 0]
    assert pseudo_labels(scores, bags, torch.tensor([0.5, 0.5]), "avg").tolist() == [1, 0, 1, 0]


def _log_likelihood(scores: list[float], labels: list[int]) -> float:
    return sum(math.log(s) if z else math.log(1 - s) for s, z in zip(scores, labels))


def _consistent(labels: tuple[int, ...], rule: str, bag_label: float) -> bool:
    if rule == "max":
        return max(labels) == bag_label
    if rule == "min":
        return min(labels) == bag_label
    return sum(labels) == math.floor(bag_label * len(labels) + 0.5)


@pytest.mark.parametrize("rule", ["max", "min", "avg"])
def test_pseudo_labels_are_the_map_labelling_by_brute_force(rule):
    rng = random.Random(f"pseudo-{rule}")
    for _ in range(30):
        sizes = [rng.randint(1, 8) for _ in range(rng.randint(1, 5))]
        bag_scores = [[rng.uniform(0.01, 0.99) for _ in range(n)] for n in sizes]
        if rule == "avg":
            bag_labels = [rng.randint(0, n) / n for n in sizes]
        else:
            bag_labels = [float(rng.randint(0, 1)) for _ in sizes]
        # Interleave the bags in a random flat order to exercise non-contiguous batches.
        flat = [(b, i) for b, n in enumerate(sizes) for i in range(n)]
        rng.shuffle(flat)
        scores = torch.tensor([bag_scores[b][i] for b, i in flat], dtype=torch.float64)
        bag_index = torch.tensor([b for b, _ in flat])
        labels = pseudo_labels(scores, bag_index, torch.tensor(bag_labels), rule).tolist()
        for b, n in enumerate(sizes):
            ours = [0] * n
            for (bag, i), z in zip(flat, labels):
                if bag == b:
                    ours[i] = z
            assert _consistent(tuple(ours), rule, bag_labels[b])
            best = max(
                _log_likelihood(bag_scores[b], list(z))
                for z in itertools.product((0, 1), repeat=n)
                if _consistent(z, rule, bag_labels[b])
            )
            assert _log_likelihood(bag_scores[b], ours) == pytest.approx(best, abs=1e-12)


def test_scores_that_require_grad_are_accepted():
    scores = SCORES.clone().requires_grad_()
    labels = pseudo_labels(scores, BAGS, torch.tensor([1.0, 0.0, 1.0]), "max")
    assert not labels.requires_grad


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="max rule needs bag labels 0 or 1"):
        pseudo_labels(SCORES, BAGS, torch.tensor([1.0, 0.5, 0.0]), "max")
    with pytest.raises(ValueError, match="min rule needs bag labels 0 or 1"):
        pseudo_labels(SCORES, BAGS, torch.tensor([2.0, 1.0, 0.0]), "min")
    with pytest.raises(ValueError, match=r"avg rule needs bag labels in \[0, 1\]"):
        pseudo_labels(SCORES, BAGS, torch.tensor([1.5, 1.0, 0.0]), "avg")
    with pytest.raises(ValueError, match="no sentences"):
        pseudo_labels(SCORES, torch.tensor([0, 0, 1, 1, 3, 3]), torch.tensor([1.0, 1.0, 0.0, 1.0]), "max")
    with pytest.raises(ConfigError, match="unknown pseudo-label rule 'median'"):
        pseudo_labels(SCORES, BAGS, torch.tensor([1.0, 1.0, 0.0]), "median")
    assert set(PSEUDO_RULES) == {"max", "min", "avg"}
