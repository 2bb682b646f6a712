"""Grouped k-fold splits over bags, so that no question leaks between training and test.

Why: the FRACTAL data sets come with dev splits only, so evaluation makes its own folds. Several
bags share one question (the positive and the cropped negative bag of a MultiSpanQA item, the
responses of one QA-Feedback prompt); if they landed on both sides of a split, the scorer could
learn the question rather than the sentences. So bags are grouped by their ``group`` and a whole
group always goes to one fold. A bag without a group (``None``) is a group of its own.

Why not scikit-learn's ``GroupKFold``: without shuffling it gives one fixed split (no seeds to
average over), and with ``shuffle=True`` it balances the number of *groups* per fold rather than
the number of bags. Here the rule is:

1. shuffle the groups with ``random.Random(seed)``;
2. sort them by size, largest first (a stable sort, so equal-sized groups keep their shuffled order);
3. put each group into the fold with the fewest bags so far (ties: the lowest fold number).

This is the longest-processing-time greedy rule: the largest and smallest folds differ by at most
the size of the largest group, and the same ``(groups, k, seed)`` always gives the same folds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from adaptlab.errors import ConfigError

Fold = tuple[list[int], list[int]]


def _group_members(groups: Sequence[str | None]) -> dict[object, list[int]]:
    """Group key -> bag indices in input order; each ``None`` gets a key of its own."""
    members: dict[object, list[int]] = {}
    for index, group in enumerate(groups):
        key: object = ("ungrouped", index) if group is None else ("group", group)
        members.setdefault(key, []).append(index)
    return members


def grouped_kfold(groups: Sequence[str | None], k: int, seed: int) -> list[Fold]:
    """``k`` folds of ``(train_indices, test_indices)`` over bags whose group is ``groups[i]``.

    Every index is in exactly one test set; the bags of one group are always in the same fold;
    both index lists are sorted. Raises :class:`ConfigError` when ``k < 2`` or when there are fewer
    groups than folds (some fold would be empty).
    """
    if k < 2:
        raise ConfigError(f"the number of folds must be at least 2, got k={k}; set folds to 2 or more")
    members = _group_members(groups)
    if k > len(members):
        raise ConfigError(f"k={k} folds but only {len(members)} question groups among {len(groups)} bags; "
                          f"use at most {len(members)} folds or more data")
    group_lists = list(members.values())
    random.Random(seed).shuffle(group_lists)
    group_lists.sort(key=len, reverse=True)
    fold_members: list[list[int]] = [[] for _ in range(k)]
    for indices in group_lists:
        smallest = min(range(k), key=lambda fold: len(fold_members[fold]))
        fold_members[smallest].extend(indices)
    folds: list[Fold] = []
    for fold in range(k):
        test = sorted(fold_members[fold])
        in_test = set(test)
        folds.append(([i for i in range(len(groups)) if i not in in_test], test))
    return folds
