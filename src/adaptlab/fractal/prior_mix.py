"""Mixing the learned sentence score with its similarity prior, the mix chosen on held-out training bags.

Why. The priors in the FRACTAL loss pull the scores toward the question–sentence cosine, but the bag loss
is free to override it wherever that fits the training bags better, also where the fit does not carry
over to new questions. On a bag set with one bag per question (no question with both a positive and a
negative bag) the head learned to push or pull every sentence of a question together and ended below the
cosine it was regularised toward (``benchmarks/README.md``, FRACTAL). So the score that FRACTAL puts out
is a mix of the head and the prior whose weight is set on bags the head did not train on; a mix that
includes the prior alone (λ = 0) can fall below the prior only by the noise of that choice.

Formula. For sentence ``i`` with prior ``p_i = cos(e_s, e_c)`` (0 when the bag has no context;
:func:`feature_prior` reads it off the feature vector) and head logit ``h_i``:

    u_i(λ) = (1 − λ)·(p_i − μ_p)/σ_p + λ·(h_i − μ_h)/σ_h
    s_i    = σ(a·u_i(λ) + c)

``λ ∈ [0, 1]`` is the weight of the head (0: the prior alone, 1: the head alone); μ and σ are the mean
and standard deviation of the prior and of the held-out head logits, so λ compares like with like.

Fitting (:func:`fit_prior_mix`), on held-out bags only, with their bag labels (never sentence labels).
For each λ of ``MIX_GRID`` (0, 0.1, …, 1), ``(a, c)`` minimise

    L_bag(agg(s), y) + ρ·(a² + c²),    a ≥ a_min = 0.1,   ρ = 1e-3

(the configured bag loss and aggregator; the small ridge keeps ``a`` and ``c`` finite when the held-out
labels are all alike, and ``a_min`` keeps the ranking visible in the scores then). λ* maximises the
bag concordance

    C(λ) = P(agg(s)_b > agg(s)_b' | y_b > y_b'),    ties in score counting 1/2

(Harrell's C over pairs of held-out bags; the bag AUC for 0/1 labels); among the λ within ``TIE = 1e-4``
of the highest C (several rank every bag right on easy data) the one with the lowest bag loss wins,
then the smallest. Why concordance first and not the bag loss alone: the target is a ranking
(sentence AUC), and on MultiSpanQA the bag loss chose a smaller head weight than the ranking of bags
did, below what ranked sentences best (``benchmarks/README.md``, FRACTAL). When the bag labels say
nothing (all alike) no pair of bags is ordered, C is undefined for every λ, and the prior alone is kept.

The prior is the default, and the head has to earn its weight: λ* > 0 is kept only when, over
``RESAMPLES = 200`` bootstrap resamples of the held-out bags (seeded), ``C(λ*) > C(0)`` in at least
``CONFIDENCE = 90%`` of them (:func:`gain_confidence`); otherwise λ = 0. With few held-out bags C is
noisy: on 48 MultiSpanQA training bags the held-out bags put the prior below chance and a head that
had learned nothing above it, and without this check FRACTAL scored 0.22 where the prior scored 0.82.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F

from adaptlab.fractal.aggregate import get_aggregator, get_bag_loss

MIX_GRID = tuple(i / 10 for i in range(11))
RIDGE = 1e-3
MIN_SCALE = 0.1
TIE = 1e-4
MIN_STD = 1e-6
RESAMPLES = 200
CONFIDENCE = 0.9


@dataclass(frozen=True)
class PriorMix:
    """A fitted mix (see module doc); at ``MIX_GRID[k]`` the held-out bag loss was ``grid_losses[k]`` and the
    bag concordance ``grid_concordance[k]`` (None: undefined)."""

    head_weight: float  # λ
    scale: float  # a
    bias: float  # c
    prior_mean: float
    prior_std: float
    head_mean: float
    head_std: float
    holdout_bags: int = 0
    gain_confidence: float | None = None  # share of bootstrap resamples with C(λ) > C(0), for the best λ > 0
    held_out_concordance: float | None = None  # C at λ*
    held_out_loss: float = math.nan  # bag loss at λ*
    grid_losses: tuple[float, ...] = field(default=())
    grid_concordance: tuple[float | None, ...] = field(default=())
    loss_weights: dict[str, float] | None = None  # of the head it mixes, when chosen with it


def feature_prior(features: torch.Tensor) -> torch.Tensor:
    """``cos(e_s, e_c)`` of rows ``[e_s, e_c, e_s ⊙ e_c, |e_s − e_c|]``: ``[N, 4d] -> [N]``, 0 without context."""
    dim = features.shape[1] // 4
    sentence, context = features[:, :dim], features[:, dim:2 * dim]
    norms = sentence.norm(dim=1) * context.norm(dim=1)
    dots = (sentence * context).sum(dim=1)
    return torch.where(norms > 0, dots / norms.clamp_min(1e-12), torch.zeros_like(dots)).clamp(-1.0, 1.0)


def mixed_direction(prior: torch.Tensor, head_logits: torch.Tensor, head_weight: float, prior_mean: float,
                    prior_std: float, head_mean: float, head_std: float) -> torch.Tensor:
    """``u = (1 − λ)·(p − μ_p)/σ_p + λ·(h − μ_h)/σ_h``."""
    return ((1 - head_weight) * (prior - prior_mean) / prior_std
            + head_weight * (head_logits - head_mean) / head_std)


def mixed_logits(prior: torch.Tensor, head_logits: torch.Tensor, mix: PriorMix) -> torch.Tensor:
    """``a·u(λ) + c``: the logits of the mixed scores ``s = σ(a·u + c)``."""
    direction = mixed_direction(prior, head_logits, mix.head_weight, mix.prior_mean, mix.prior_std,
                                mix.head_mean, mix.head_std)
    return mix.scale * direction + mix.bias


def bag_concordance(bag_scores: torch.Tensor, bag_labels: torch.Tensor, chunk: int = 1024) -> float:
    """Harrell's C of ``bag_scores [B]`` against ``bag_labels [B]``: ``P(s_b > s_b' | y_b > y_b')``, score ties 1/2.

    For 0/1 labels it is the AUC. NaN when no two bags have different labels. Rows are compared in chunks,
    so memory stays ``chunk · B``.
    """
    wins, pairs = 0.0, 0
    for start in range(0, len(bag_scores), chunk):
        higher = bag_labels[start:start + chunk, None] > bag_labels[None, :]
        gaps = bag_scores[start:start + chunk, None] - bag_scores[None, :]
        wins += float((gaps > 0)[higher].sum()) + 0.5 * float((gaps == 0)[higher].sum())
        pairs += int(higher.sum())
    return wins / pairs if pairs else math.nan


def _scale(raw: torch.Tensor) -> torch.Tensor:
    return MIN_SCALE + F.softplus(raw)


class _Fit(NamedTuple):
    scale: float
    bias: float
    loss: float
    concordance: float
    bag_scores: torch.Tensor


def _fit_scale_and_bias(direction: torch.Tensor, bag_index: torch.Tensor, n_bags: int, bag_labels: torch.Tensor,
                        aggregation: str, temperature: float, bag_loss: str) -> _Fit:
    """``(a, c)`` minimising ``L_bag(agg(σ(a·u + c)), y) + ρ(a² + c²)``, ``a = a_min + softplus(α)`` (L-BFGS), and
    the bag loss, bag concordance and bag scores there."""
    aggregate, loss_of = get_aggregator(aggregation), get_bag_loss(bag_loss)
    params = torch.tensor([0.3782, 0.0], dtype=torch.float64, requires_grad=True)  # a = 0.1 + softplus(0.3782) = 1
    direction, labels = direction.double(), bag_labels.double()
    optimizer = torch.optim.LBFGS([params], max_iter=100, line_search_fn="strong_wolfe")

    def bag_scores_at(values: torch.Tensor) -> torch.Tensor:
        return aggregate(torch.sigmoid(_scale(values[0]) * direction + values[1]), bag_index, n_bags, temperature)

    def bag_loss_at(values: torch.Tensor) -> torch.Tensor:
        return loss_of(bag_scores_at(values), labels, 1e-6)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = bag_loss_at(params) + RIDGE * (_scale(params[0]) ** 2 + params[1] ** 2)
        total.backward()
        return total

    optimizer.step(closure)
    with torch.no_grad():
        scores = bag_scores_at(params)
        return _Fit(float(_scale(params[0])), float(params[1]), float(loss_of(scores, labels, 1e-6)),
                    bag_concordance(scores, labels), scores)


def gain_confidence(scores: torch.Tensor, baseline: torch.Tensor, bag_labels: torch.Tensor,
                    resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Share of bootstrap resamples of the bags in which ``scores`` rank them better than ``baseline``:
    ``mean_r 1[C_r(scores) > C_r(baseline)]`` (a resample that orders no pair counts as no gain)."""
    generator = torch.Generator().manual_seed(seed)
    n_bags, wins = len(bag_labels), 0
    for _ in range(resamples):
        rows = torch.randint(n_bags, (n_bags,), generator=generator)
        gain = bag_concordance(scores[rows], bag_labels[rows]) - bag_concordance(baseline[rows], bag_labels[rows])
        wins += gain > 0  # NaN > 0 is False
    return wins / resamples


def fit_prior_mix(prior: torch.Tensor, head_logits: torch.Tensor, bag_index: torch.Tensor, n_bags: int,
                  bag_labels: torch.Tensor, aggregation: str, temperature: float, bag_loss: str = "bce",
                  grid: tuple[float, ...] = MIX_GRID) -> PriorMix:
    """The mix of held-out sentences' ``prior [N]`` and ``head_logits [N]`` that best ranks their bags (module doc).

    ``bag_index [N]`` / ``n_bags`` / ``bag_labels [B]`` follow the flat convention of
    :mod:`adaptlab.fractal.aggregate`; ``head_logits`` must come from heads that did not train on these bags.
    """
    prior, head_logits = prior.detach().double(), head_logits.detach().double()
    stats = {"prior_mean": float(prior.mean()), "prior_std": max(float(prior.std(unbiased=False)), MIN_STD),
             "head_mean": float(head_logits.mean()), "head_std": max(float(head_logits.std(unbiased=False)), MIN_STD)}
    fits = [_fit_scale_and_bias(mixed_direction(prior, head_logits, weight, **stats), bag_index, n_bags, bag_labels,
                                aggregation, temperature, bag_loss) for weight in grid]
    prior_only = min(range(len(grid)), key=grid.__getitem__)
    defined = [k for k in range(len(grid)) if not math.isnan(fits[k].concordance)]
    best, confidence = prior_only, None
    if defined:  # otherwise the bag labels order no two bags: keep the prior
        highest = max(fits[k].concordance for k in defined)
        near_best = [k for k in defined if fits[k].concordance >= highest - TIE]
        lowest = min(fits[k].loss for k in near_best)
        best = min((k for k in near_best if fits[k].loss <= lowest + TIE), key=grid.__getitem__)
    if best != prior_only:
        confidence = gain_confidence(fits[best].bag_scores, fits[prior_only].bag_scores, bag_labels.double())
        if confidence < CONFIDENCE:
            best = prior_only
    chosen = fits[best]
    return PriorMix(head_weight=grid[best], scale=chosen.scale, bias=chosen.bias, holdout_bags=n_bags,
                    gain_confidence=confidence,
                    held_out_concordance=None if math.isnan(chosen.concordance) else round(chosen.concordance, 6),
                    held_out_loss=round(chosen.loss, 6), grid_losses=tuple(round(f.loss, 6) for f in fits),
                    grid_concordance=tuple(None if math.isnan(f.concordance) else round(f.concordance, 6)
                                           for f in fits), **stats)
