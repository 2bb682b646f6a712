"""Holding out a dev set from training data when no dev file is given (NER, RE and classification students).

A dev set chooses the checkpoint and stops training early, so it must be large enough for its score to mean
something: a handful of sentences scores 0 or 1 by chance. :func:`hold_out_dev` therefore holds out nothing when
the dev set would be smaller than a minimum (``MIN_DEV_RECORDS`` records for NER and RE,
``DEV_EXAMPLES_PER_LABEL`` examples per label for classification), and says so; training then runs on every
record for a fixed budget of steps (``training.min_steps``) without early stopping.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from operator import attrgetter
from typing import TypeVar

from adaptlab.errors import ConfigError

T = TypeVar("T")

MIN_DEV_RECORDS = 20  # NER / RE: fewer dev sentences make the best epoch and the stopping point a lottery
DEV_EXAMPLES_PER_LABEL = 10  # classification: the same, per label


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


def hold_out_dev(items: list[T], fraction: float, seed: int, minimum: int, unit: str = "records",
                 key: Callable[[T], str] = attrgetter("text"), stratum: Callable[[T], Hashable] | None = None
                 ) -> tuple[list[T], list[T], str | None]:
    """:func:`split_dev`, unless the dev set would have fewer than ``minimum`` items: then ``(items, [], note)``,
    where the note says in one sentence why nothing was held out (for the log and ``metrics.json``). A fraction
    that would leave nothing to train on is a :class:`ConfigError`."""
    train, dev = split_dev(items, fraction, seed, key, stratum)
    if dev and not train:
        raise ConfigError(f"dev_fraction={fraction:g} holds out all {len(items)} {unit} of the training data, "
                          "leaving none to train on; lower dev_fraction or give a dev file")
    if not dev or len(dev) >= minimum:
        return train, dev, None
    return items, [], (f"no dev set held out: dev_fraction={fraction:g} of {len(items)} {unit} would be {len(dev)}, "
                       f"fewer than the {minimum} a dev score needs to mean anything; training uses all {len(items)} "
                       "for a fixed budget of steps (training.min_steps) without early stopping")


def small_dev_warning(dev_size: int, minimum: int, unit: str = "records") -> str | None:
    """A warning for a given dev file too small for its score to choose a checkpoint, else None."""
    if not dev_size or dev_size >= minimum:
        return None
    return (f"the dev set has only {dev_size} {unit} (fewer than {minimum}), so the checkpoint chosen on it and "
            "the stopping point are mostly chance; with this little data give no dev file and let training run "
            "its fixed budget (dev_fraction=0, training.min_steps)")


def dev_split(train: list[T], dev: list[T] | None, fraction: float, seed: int, minimum: int, unit: str = "records",
              stratum: Callable[[T], Hashable] | None = None) -> tuple[list[T], list[T], list[str], list[str]]:
    """A student's ``(train, dev, notes, warnings)``: the given ``dev`` with :func:`small_dev_warning`'s warning, or
    without one the set :func:`hold_out_dev` holds out, with its note."""
    if dev is not None:
        warning = small_dev_warning(len(dev), minimum, unit)
        return train, dev, [], [warning] if warning else []
    train, dev, note = hold_out_dev(train, fraction, seed, minimum, unit, stratum=stratum)
    return train, dev, [note] if note else [], []
