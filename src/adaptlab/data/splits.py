"""Holding out a dev set from training data when no dev file is given (NER, RE and classification students)."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from operator import attrgetter
from typing import TypeVar

T = TypeVar("T")


def split_dev(items: list[T], fraction: float, seed: int, key: Callable[[T], str] = attrgetter("text"),
              stratum: Callable[[T], Hashable] | None = None) -> tuple[list[T], list[T]]:
    """Hold out ``fraction`` of the items (at least one) for dev; items with the same key stay together.

    With ``stratum`` (e.g. an example's label), each stratum gives ``round(fraction * n)`` of its ``n`` keys
    (a key belongs to the stratum of its first item), so dev holds the classes in their training proportions
    and a class with a single example stays in training; when that rounds to nothing, one key is held out.
    """
    if fraction <= 0 or len(items) < 2:
        return items, []
    keys = sorted({key(item) for item in items})
    random.Random(seed).shuffle(keys)
    if stratum is None:
        dev_keys = set(keys[: max(1, round(fraction * len(keys)))])
    else:
        first_stratum: dict[str, Hashable] = {}
        for item in items:
            first_stratum.setdefault(key(item), stratum(item))
        strata: dict[Hashable, list[str]] = {}
        for k in keys:
            strata.setdefault(first_stratum[k], []).append(k)
        dev_keys = {k for group in strata.values() for k in group[: round(fraction * len(group))]} or {keys[0]}
    return [i for i in items if key(i) not in dev_keys], [i for i in items if key(i) in dev_keys]
