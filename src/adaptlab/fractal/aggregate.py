"""Bag aggregators, pairwise preference and bag losses for FRACTAL.

FRACTAL learns sentence scores ``s_i`` in (0, 1) from labels on whole responses ("bags"). An
aggregator turns the scores of one bag into a bag score that is compared with the bag label.

Batch convention
----------------
Bags have different lengths, so a batch is **flat**: ``scores`` has shape ``[N]`` (all sentences
of all bags, concatenated) and ``bag_index`` (``LongTensor [N]``) says which bag, ``0..B-1``, each
sentence belongs to. Bags need not be contiguous; every bag must hold at least one sentence
(:func:`check_bag_index` raises ``ValueError`` otherwise). :func:`flat_to_padded` and
:func:`padded_to_flat` convert to and from the padded ``[B, L]`` + boolean mask form.

Aggregators (``AGGREGATORS``; each ``fn(scores, bag_index, n_bags, temperature) -> [B]``), for a
bag with scores ``s_1..s_n`` and temperature ``τ > 0``:

- ``max``:       ``max_i s_i`` (a bag is positive iff some sentence is; gradient to the argmax,
  shared equally between ties)
- ``min``:       ``min_i s_i`` (a bag is positive iff every sentence is)
- ``avg``:       ``(1/n) Σ_i s_i``
- ``lse_max``:   ``τ · log((1/n) Σ_i exp(s_i / τ))`` — smooth max. Using the *mean* inside the log
  (not the sum) keeps it between ``avg`` and ``max``, hence inside (0, 1): it tends to ``max`` as
  ``τ → 0`` (error at most ``τ·log n``) and to ``avg`` as ``τ → ∞``.
- ``softmin``:   ``−τ · log((1/n) Σ_i exp(−s_i / τ))`` — smooth min, between ``min`` and ``avg``.
- ``noisy_or``:  ``1 − Π_i (1 − s_i)`` — probability that at least one sentence is positive when
  sentences are independent Bernoulli(s_i) (smooth MAX without a temperature).
- ``noisy_and``: ``Π_i s_i`` — probability that all sentences are positive (smooth MIN).

Only the smooth ``lse_max``/``softmin`` use ``temperature``; the others ignore it.

Pairwise preference (Bradley–Terry on mean scores): ``P(a ≻ b) = σ(k · (mean_a − mean_b))``.
Mean scores lie in [0, 1], so their difference lies in [−1, 1]; with ``k = 1`` the model could
never express more than σ(1) ≈ 0.73 confidence. The default ``k = 5`` reaches σ(5) ≈ 0.993 at the
extremes while a difference of 0.1 still gives σ(0.5) ≈ 0.62.

Bag losses (``BAG_LOSSES``; each ``fn(bag_scores, bag_labels, eps) -> scalar``, mean over bags),
with ``p`` clamped to ``[eps, 1 − eps]`` so the log stays finite:

- ``bce``: ``−[y log p + (1 − y) log(1 − p)]`` (soft labels ``y ∈ [0, 1]`` allowed)
- ``mse``: ``(p − y)²``
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from adaptlab.errors import ConfigError

Aggregator = Callable[[torch.Tensor, torch.Tensor, int, float], torch.Tensor]
BagLoss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]

DEFAULT_TEMPERATURE = 0.1
DEFAULT_PREFERENCE_SCALE = 5.0
DEFAULT_EPS = 1e-6


# --------------------------------------------------------------------------- batch convention


def check_bag_index(bag_index: torch.Tensor, n_bags: int, n_scores: int | None = None) -> torch.Tensor:
    """Validate a flat batch and return the number of sentences per bag (``LongTensor [B]``).

    Raises ``ValueError`` when ``bag_index`` is not a 1-D ``LongTensor``, has values outside
    ``0..n_bags-1``, does not match ``n_scores``, or leaves a bag empty (an empty bag has no
    max, min or mean, so it is a bug in the batch builder, not something to skip silently).
    """
    if bag_index.dim() != 1 or bag_index.dtype != torch.long:
        raise ValueError(f"bag_index must be a 1-D LongTensor, got shape {tuple(bag_index.shape)} {bag_index.dtype}")
    if n_scores is not None and bag_index.numel() != n_scores:
        raise ValueError(f"bag_index has {bag_index.numel()} entries but there are {n_scores} scores")
    if n_bags < 1:
        raise ValueError(f"n_bags must be >= 1, got {n_bags}")
    if bag_index.numel() and (int(bag_index.min()) < 0 or int(bag_index.max()) >= n_bags):
        raise ValueError(f"bag_index values must lie in 0..{n_bags - 1}")
    counts = torch.bincount(bag_index, minlength=n_bags)
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        raise ValueError(f"{empty.numel()} bag(s) have no sentences, e.g. bag {int(empty[0])}; every bag needs one")
    return counts


def bag_index_from_lengths(lengths: list[int] | torch.Tensor) -> torch.Tensor:
    """``[2, 3] -> tensor([0, 0, 1, 1, 1])``: the flat ``bag_index`` of contiguous bags."""
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    return torch.repeat_interleave(torch.arange(lengths.numel()), lengths)


def positions_in_bag(bag_index: torch.Tensor) -> torch.Tensor:
    """Position of each sentence within its bag, in order of appearance (``[0, 0, 1, 1] -> [0, 1, 0, 1]``)."""
    order = torch.argsort(bag_index, stable=True)
    sorted_bags = bag_index[order]
    starts = torch.searchsorted(sorted_bags, sorted_bags, right=False)
    positions = torch.empty_like(bag_index)
    positions[order] = torch.arange(bag_index.numel(), device=bag_index.device) - starts
    return positions


def flat_to_padded(
    values: torch.Tensor, bag_index: torch.Tensor, n_bags: int, fill: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat ``[N, ...]`` -> padded ``[B, L, ...]`` (``L`` = longest bag) and mask ``[B, L]``.

    Sentences keep their order of appearance within each bag; padding holds ``fill``.
    Differentiable with respect to ``values``.
    """
    counts = check_bag_index(bag_index, n_bags, values.shape[0])
    positions = positions_in_bag(bag_index)
    longest = int(counts.max())
    padded = values.new_full((n_bags, longest, *values.shape[1:]), fill)
    padded = padded.index_put((bag_index, positions), values)
    mask = torch.zeros(n_bags, longest, dtype=torch.bool, device=values.device)
    mask[bag_index, positions] = True
    return padded, mask


def padded_to_flat(padded: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ``[B, L, ...]`` + mask ``[B, L]`` -> flat values ``[N, ...]`` and ``bag_index [N]`` (row-major)."""
    if mask.shape != padded.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match padded shape {tuple(padded.shape[:2])}")
    bag_index, _ = torch.nonzero(mask, as_tuple=True)
    check_bag_index(bag_index, padded.shape[0])
    return padded[mask], bag_index


# --------------------------------------------------------------------------- aggregators


def _scatter(scores: torch.Tensor, bag_index: torch.Tensor, n_bags: int, reduce: str) -> torch.Tensor:
    check_bag_index(bag_index, n_bags, scores.shape[0])
    out = scores.new_zeros(n_bags)
    return out.scatter_reduce(0, bag_index, scores, reduce=reduce, include_self=False)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def max_aggregate(scores: torch.Tensor, bag_index: torch.Tensor, n_bags: int, temperature: float = 1.0) -> torch.Tensor:
    """``max_i s_i`` per bag."""
    return _scatter(scores, bag_index, n_bags, "amax")


def min_aggregate(scores: torch.Tensor, bag_index: torch.Tensor, n_bags: int, temperature: float = 1.0) -> torch.Tensor:
    """``min_i s_i`` per bag."""
    return _scatter(scores, bag_index, n_bags, "amin")


def avg_aggregate(scores: torch.Tensor, bag_index: torch.Tensor, n_bags: int, temperature: float = 1.0) -> torch.Tensor:
    """``(1/n) Σ_i s_i`` per bag."""
    return _scatter(scores, bag_index, n_bags, "mean")


def lse_max_aggregate(
    scores: torch.Tensor, bag_index: torch.Tensor, n_bags: int, temperature: float = DEFAULT_TEMPERATURE
) -> torch.Tensor:
    """Smooth max ``τ · log((1/n) Σ_i exp(s_i / τ))``, computed stably by subtracting the bag max."""
    _check_temperature(temperature)
    scaled = scores / temperature
    shift = _scatter(scaled.detach(), bag_index, n_bags, "amax")
    sums = scores.new_zeros(n_bags).index_add(0, bag_index, torch.exp(scaled - shift[bag_index]))
    counts = torch.bincount(bag_index, minlength=n_bags).to(scores.dtype)
    return temperature * (shift + torch.log(sums / counts))


def softmin_aggregate(
    scores: torch.Tensor, bag_index: torch.Tensor, n_bags: int, temperature: float = DEFAULT_TEMPERATURE
) -> torch.Tensor:
    """Smooth min ``−τ · log((1/n) Σ_i exp(−s_i / τ))`` = ``−lse_max(−s)``."""
    return -lse_max_aggregate(-scores, bag_index, n_bags, temperature)


def noisy_or_aggregate(
    scores: torch.Tensor, bag_index: torch.Tensor, n_bags: int, temperature: float = 1.0
) -> torch.Tensor:
    """``1 − Π_i (1 − s_i)``, via ``Σ log1p(−s_i)`` so long bags do not underflow early."""
    log_none = _scatter(torch.log1p(-scores.clamp(max=1 - DEFAULT_EPS)), bag_index, n_bags, "sum")
    return -torch.expm1(log_none)


def noisy_and_aggregate(
    scores: torch.Tensor, bag_index: torch.Tensor, n_bags: int, temperature: float = 1.0
) -> torch.Tensor:
    """``Π_i s_i``, via ``Σ log s_i``."""
    return torch.exp(_scatter(torch.log(scores.clamp(min=DEFAULT_EPS)), bag_index, n_bags, "sum"))


AGGREGATORS: dict[str, Aggregator] = {
    "max": max_aggregate,
    "min": min_aggregate,
    "avg": avg_aggregate,
    "lse_max": lse_max_aggregate,
    "softmin": softmin_aggregate,
    "noisy_or": noisy_or_aggregate,
    "noisy_and": noisy_and_aggregate,
}


def get_aggregator(name: str) -> Aggregator:
    """Look up an aggregator by its config name; an unknown name is a :class:`ConfigError`."""
    if name not in AGGREGATORS:
        raise ConfigError(f"unknown aggregator {name!r}; choose one of: {', '.join(AGGREGATORS)}")
    return AGGREGATORS[name]


# --------------------------------------------------------------------------- pairwise preference


def bradley_terry(mean_a: torch.Tensor, mean_b: torch.Tensor, scale: float = DEFAULT_PREFERENCE_SCALE) -> torch.Tensor:
    """``P(a preferred over b) = σ(scale · (mean_a − mean_b))``; compare with a 0 / 0.5 / 1 preference via ``bce``."""
    return torch.sigmoid(scale * (mean_a - mean_b))


# --------------------------------------------------------------------------- bag losses


def _check_pair(bag_scores: torch.Tensor, bag_labels: torch.Tensor) -> None:
    if bag_scores.shape != bag_labels.shape:
        raise ValueError(f"bag scores {tuple(bag_scores.shape)} and labels {tuple(bag_labels.shape)} differ in shape")


def bce_bag_loss(bag_scores: torch.Tensor, bag_labels: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Mean of ``−[y log p + (1 − y) log(1 − p)]`` with ``p`` clamped to ``[eps, 1 − eps]``."""
    _check_pair(bag_scores, bag_labels)
    p = bag_scores.clamp(eps, 1 - eps)
    y = bag_labels.to(p.dtype)
    return -(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean()


def mse_bag_loss(bag_scores: torch.Tensor, bag_labels: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Mean of ``(p − y)²`` (``eps`` is accepted for a uniform signature and unused: the square is finite)."""
    _check_pair(bag_scores, bag_labels)
    return (bag_scores - bag_labels.to(bag_scores.dtype)).pow(2).mean()


BAG_LOSSES: dict[str, BagLoss] = {"bce": bce_bag_loss, "mse": mse_bag_loss}


def get_bag_loss(name: str) -> BagLoss:
    """Look up a bag loss by its config name; an unknown name is a :class:`ConfigError`."""
    if name not in BAG_LOSSES:
        raise ConfigError(f"unknown bag loss {name!r}; choose one of: {', '.join(BAG_LOSSES)}")
    return BAG_LOSSES[name]
