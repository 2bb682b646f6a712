"""Grouped k-fold: groups never split, full coverage, determinism, balance, bad k."""

from __future__ import annotations

import random

import pytest

from adaptlab.errors import ConfigError
from adaptlab.fractal.folds import grouped_kfold


def _random_groups(n_questions: int, seed: int) -> list[str | None]:
    rng = random.Random(seed)
    groups: list[str | None] = []
    for q in range(n_questions):
        groups += [f"q{q}"] * rng.randint(1, 4)
    groups += [None] * 7
    rng.shuffle(groups)
    return groups


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_partition_and_keep_groups_together(k):
    groups = _random_groups(40, seed=1)
    folds = grouped_kfold(groups, k, seed=0)
    assert len(folds) == k
    test_indices = [i for _, test in folds for i in test]
    assert sorted(test_indices) == list(range(len(groups)))  # every index exactly once in a test set
    for train, test in folds:
        assert sorted(train + test) == list(range(len(groups)))
        assert train == sorted(train) and test == sorted(test)
        test_groups = {groups[i] for i in test if groups[i] is not None}
        train_groups = {groups[i] for i in train if groups[i] is not None}
        assert not test_groups & train_groups


def test_none_groups_are_separate():
    groups = [None] * 6
    folds = grouped_kfold(groups, 3, seed=0)
    assert [len(test) for _, test in folds] == [2, 2, 2]
    assert grouped_kfold([None, None], 2, seed=0)  # two ungrouped bags are two groups


def test_folds_deterministic_per_seed():
    groups = _random_groups(30, seed=2)
    assert grouped_kfold(groups, 4, seed=7) == grouped_kfold(groups, 4, seed=7)
    assert grouped_kfold(groups, 4, seed=7) != grouped_kfold(groups, 4, seed=8)


def test_folds_balanced_by_bags():
    groups = _random_groups(60, seed=3)
    largest_group = max(groups.count(g) for g in set(groups) if g is not None)
    for seed in range(5):
        sizes = [len(test) for _, test in grouped_kfold(groups, 5, seed=seed)]
        assert max(sizes) - min(sizes) <= largest_group


def test_bad_k():
    with pytest.raises(ConfigError, match="at least 2"):
        grouped_kfold(["a", "b"], 1, seed=0)
    with pytest.raises(ConfigError, match="only 2 question groups among 4 bags"):
        grouped_kfold(["a", "a", "b", "b"], 3, seed=0)
    with pytest.raises(ConfigError, match="only 0 question groups"):
        grouped_kfold([], 2, seed=0)
