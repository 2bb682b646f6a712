"""Pseudo-labels: the most likely sentence labelling that agrees with the bag label.

After FRACTAL training each sentence has a score ``s_i`` in (0, 1). Read as independent
Bernoulli probabilities, a labelling ``z ∈ {0, 1}^n`` of a bag has log-likelihood

    log P(z) = Σ_i [z_i log s_i + (1 − z_i) log(1 − s_i)] = Σ_i log(1 − s_i) + Σ_i z_i · logit(s_i)

The first sum does not depend on ``z``, so the MAP labelling under a constraint ``C`` maximises
``Σ_{i: z_i = 1} logit(s_i)`` over ``z ∈ C``. ``logit`` is increasing and ``logit(s) > 0 ⇔ s > 0.5``.
A fresh sentence-level model is then trained on these labels. Bags follow the flat convention
of :mod:`adaptlab.fractal.aggregate` (``scores [N]``, ``bag_index [N]``, ``bag_labels [B]``).

MAX rule (bag label = max of sentence labels):
  * ``y = 0``: the only consistent labelling is all 0.
  * ``y = 1``: ``z_i = 1 ⇔ s_i > 0.5``; if no sentence has ``s_i > 0.5``, only the argmax gets 1.
  Proof. Without the constraint, the objective is maximised by taking exactly the positive
  logits. If some ``s_i > 0.5`` that labelling already has a 1, so it is the constrained MAP.
  Otherwise every logit is <= 0: any consistent ``z`` contains some ``j`` with ``z_j = 1``, its
  value is at most ``logit(s_j)`` (the other chosen terms are <= 0) <= ``max_i logit(s_i)``, and
  choosing the argmax alone attains this bound. ∎

MIN rule (bag label = min of sentence labels) — the MAX rule applied to ``1 − s`` and ``1 − y``:
  * ``y = 1``: all 1.
  * ``y = 0``: ``z_i = 0 ⇔ s_i < 0.5``; if no sentence has ``s_i < 0.5``, only the argmin gets 0.

AVG rule (bag label = fraction of positive sentences, ``y ∈ [0, 1]``): the bag must hold exactly
``k = floor(y·n + 0.5)`` positives (``y·n`` rounded half up), and the ``k`` highest-scoring
sentences get 1.
  Proof. With ``|{i: z_i = 1}| = k`` fixed, maximise a sum of ``k`` distinct logits: the ``k``
  largest logits, i.e. (logit being increasing) the ``k`` largest ``s_i``. Any other set swaps in
  a term that is no larger. ∎

Ties (``s_i = 0.5`` exactly, or equal scores) leave several MAP labellings; these rules pick one
deterministically (``s = 0.5`` counts as 0 for MAX and 1 for MIN; the first sentence in bag order
wins among equal scores).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from adaptlab.errors import ConfigError
from adaptlab.fractal.aggregate import check_bag_index, positions_in_bag

PseudoRule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def _check_binary(bag_labels: torch.Tensor, rule: str) -> None:
    if not torch.all((bag_labels == 0) | (bag_labels == 1)):
        raise ValueError(f"the {rule} rule needs bag labels 0 or 1, got {sorted(set(bag_labels.tolist()))}")


def _first_argmax_per_bag(scores: torch.Tensor, bag_index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Flat index of the highest score in each bag (the first in flat order among ties): ``LongTensor [B]``."""
    best = scores.new_zeros(n_bags).scatter_reduce(0, bag_index, scores, "amax", include_self=False)
    is_best = scores == best[bag_index]
    flat = torch.arange(scores.numel(), device=scores.device)
    candidates = torch.where(is_best, flat, torch.full_like(flat, scores.numel()))
    return torch.full((n_bags,), scores.numel(), device=scores.device).scatter_reduce(
        0, bag_index, candidates, "amin", include_self=True
    )


def max_rule(scores: torch.Tensor, bag_index: torch.Tensor, bag_labels: torch.Tensor, n_bags: int) -> torch.Tensor:
    """MAP labelling with ``max_i z_i = y`` (see module docstring)."""
    _check_binary(bag_labels, "max")
    positive_bag = (bag_labels == 1)[bag_index]
    labels = (scores > 0.5) & positive_bag
    has_positive = torch.bincount(bag_index[labels], minlength=n_bags) > 0
    needs_one = (bag_labels == 1) & ~has_positive
    labels[_first_argmax_per_bag(scores, bag_index, n_bags)[needs_one]] = True
    return labels.long()


def min_rule(scores: torch.Tensor, bag_index: torch.Tensor, bag_labels: torch.Tensor, n_bags: int) -> torch.Tensor:
    """MAP labelling with ``min_i z_i = y``: the MAX rule on ``1 − s`` and ``1 − y``, flipped back."""
    _check_binary(bag_labels, "min")
    return 1 - max_rule(1 - scores, bag_index, 1 - bag_labels, n_bags)


def avg_rule(scores: torch.Tensor, bag_index: torch.Tensor, bag_labels: torch.Tensor, n_bags: int) -> torch.Tensor:
    """MAP labelling with exactly ``floor(y·n + 0.5)`` positives per bag: the top-k scores."""
    if not torch.all((bag_labels >= 0) & (bag_labels <= 1)):
        raise ValueError("the avg rule needs bag labels in [0, 1] (the fraction of positive sentences)")
    counts = torch.bincount(bag_index, minlength=n_bags)
    positives = torch.floor(bag_labels.double() * counts + 0.5).long()
    # Sort by score descending, then (stably) by bag: each bag's sentences end up best-first.
    by_score = torch.argsort(scores, descending=True, stable=True)
    order = by_score[torch.argsort(bag_index[by_score], stable=True)]
    rank = torch.empty_like(bag_index)
    rank[order] = positions_in_bag(bag_index[order])
    return (rank < positives[bag_index]).long()


PSEUDO_RULES: dict[str, PseudoRule] = {"max": max_rule, "min": min_rule, "avg": avg_rule}


def pseudo_labels(scores: torch.Tensor, bag_index: torch.Tensor, bag_labels: torch.Tensor, rule: str) -> torch.Tensor:
    """Sentence pseudo-labels ``LongTensor [N]`` (0/1) from scores ``[N]`` and bag labels ``[B]`` by rule name."""
    if rule not in PSEUDO_RULES:
        raise ConfigError(f"unknown pseudo-label rule {rule!r}; choose one of: {', '.join(PSEUDO_RULES)}")
    n_bags = bag_labels.shape[0]
    check_bag_index(bag_index, n_bags, scores.shape[0])
    return PSEUDO_RULES[rule](scores.detach(), bag_index, bag_labels.detach().to(scores.dtype), n_bags)
