"""Bag constructions: several equally valid ways to turn labelled contexts into MIL bags.

A *labelled context* is one context split into sentences, each sentence labelled 1 when it holds an
answer token (see :func:`adaptlab.fractal.datasets.multispanqa_bag`), together with the character
spans of its answer tokens. MultiSpanQA gives only such contexts, and every one of them holds an
answer, so a bag set with negative bags has to be *constructed*. A method that works on one
construction only has learned the construction, not the task, so evaluation runs on several
(``CONSTRUCTIONS``), each a pure function of the contexts and a seed:

- ``paired`` (the loader's own): every context is a positive bag (label = MAX of its sentence
  labels = 1); for ``round(negative_fraction · n)`` contexts drawn by the seed, the context
  cropped to its longest answer-free run (:func:`crop_to_negative`) is added as a negative bag of
  the same question (same ``group``). A question with a negative thus also has a positive bag.
- ``half_cropped``: the seed shuffles the contexts; the first ``n // 2`` are cropped to their
  longest answer-free run (negative bags, label 0), the others keep the full context (positive
  bags, label 1). Every question gives exactly one bag, so no question has both labels.
- ``positives_min``: every full context, bag label = MIN of its sentence labels (1 iff every
  sentence holds an answer). On MultiSpanQA almost every such label is 0 (8 of 653 bags are 1).
- ``positives_avg``: every full context, bag label = AVG of its sentence labels (the share of
  answer sentences; a soft label in [0, 1]).

``BAG_RULE`` names the aggregation each construction's bag label follows (train with it). A
context that cannot be cropped (every sentence holds an answer) gives no negative bag; it is
counted in ``dropped``, never skipped silently. Sentence labels are kept on every bag, for
evaluation only.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from adaptlab.errors import ConfigError
from adaptlab.fractal.bags import Bag, overlaps_any

LabelledContext = tuple[Bag, list[tuple[int, int]]]  # a positive (full-context) bag and its answer spans

CONSTRUCTIONS = ("paired", "half_cropped", "positives_min", "positives_avg")
BAG_RULE = {"paired": "max", "half_cropped": "max", "positives_min": "min", "positives_avg": "avg"}
CROP_IMPOSSIBLE = "negative crop: every sentence holds an answer"


def longest_negative_run(labels: list[float]) -> tuple[int, int]:
    """``(first, stop)`` of the longest run of 0-labelled sentences (earliest on ties); (0, 0) if none."""
    best, start = (0, 0), None
    for i, label in enumerate([*labels, 1.0]):
        if label == 0.0 and start is None:
            start = i
        elif label != 0.0 and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def crop_to_negative(bag: Bag, answer_spans: list[tuple[int, int]]) -> Bag | None:
    """The bag cropped to its longest run of non-answer sentences, label 0; None when there is none."""
    first, stop = longest_negative_run(bag.sentence_labels)
    if first == stop:
        return None
    begin, end = bag.offsets[first][0], bag.offsets[stop - 1][1]
    if overlaps_any(begin, end, answer_spans):  # a bug here would silently poison the negatives
        raise AssertionError(f"cropped negative of {bag.id!r} holds an answer token in [{begin}, {end})")
    return Bag(id=f"{bag.id}:neg", context=bag.context, sentences=bag.sentences[first:stop],
               offsets=[(s - begin, e - begin) for s, e in bag.offsets[first:stop]], label=0.0,
               sentence_labels=[0.0] * (stop - first), group=bag.group, response=bag.response[begin:end])


def paired_bags(contexts: list[LabelledContext], seed: int, negative_fraction: float = 0.5
                ) -> tuple[list[Bag], Counter]:
    """Every context as a positive bag, then cropped negatives for a seeded share of them (module doc)."""
    if not 0.0 <= negative_fraction <= 1.0:
        raise ConfigError(f"negative_fraction must be in [0, 1], got {negative_fraction}")
    bags, dropped = [bag for bag, _ in contexts], Counter()
    chosen = random.Random(seed).sample(range(len(contexts)), round(negative_fraction * len(contexts)))
    for index in sorted(chosen):
        negative = crop_to_negative(*contexts[index])
        if negative is None:
            dropped[CROP_IMPOSSIBLE] += 1
        else:
            bags.append(negative)
    return bags, dropped


def half_cropped_bags(contexts: list[LabelledContext], seed: int) -> tuple[list[Bag], Counter]:
    """One bag per question: a seeded half cropped to negatives, the other half full-context positives."""
    order = list(range(len(contexts)))
    random.Random(seed).shuffle(order)
    cropped = set(order[: len(contexts) // 2])
    bags, dropped = [], Counter()
    for index, (bag, answer_spans) in enumerate(contexts):
        if index not in cropped:
            bags.append(bag)
            continue
        negative = crop_to_negative(bag, answer_spans)
        if negative is None:
            dropped[CROP_IMPOSSIBLE] += 1
        else:
            bags.append(negative)
    return bags, dropped


def relabelled_bags(contexts: list[LabelledContext], rule: str) -> list[Bag]:
    """Every full context with its bag label recomputed from its sentence labels by ``rule`` (min or avg)."""
    if rule not in ("min", "avg"):
        raise ConfigError(f"a bag label rule is min or avg, got {rule!r}")
    bags = []
    for bag, _ in contexts:
        labels = bag.sentence_labels
        bags.append(replace(bag, label=min(labels) if rule == "min" else sum(labels) / len(labels)))
    return bags


def build_bags(contexts: list[LabelledContext], construction: str, seed: int = 0,
               negative_fraction: float = 0.5) -> tuple[list[Bag], Counter]:
    """The bags of ``construction`` (see module doc) and what was dropped, by reason.

    ``seed`` draws the negatives (``paired``) or the cropped half (``half_cropped``); the
    ``positives_*`` constructions do not depend on it. ``negative_fraction`` applies to ``paired``.
    """
    if construction == "paired":
        return paired_bags(contexts, seed, negative_fraction)
    if construction == "half_cropped":
        return half_cropped_bags(contexts, seed)
    if construction in ("positives_min", "positives_avg"):
        return relabelled_bags(contexts, BAG_RULE[construction]), Counter()
    raise ConfigError(f"unknown bag construction {construction!r}; choose one of: {', '.join(CONSTRUCTIONS)}")
