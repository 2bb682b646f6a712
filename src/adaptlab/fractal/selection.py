"""Choosing FRACTAL's prior balance on held-out training bags, from bag labels only.

Two things set how much FRACTAL trusts the question–sentence cosine against what the bag loss learns:
the cosine weight in the training loss and, after training, the weight λ of the head in the prior mix
(:mod:`adaptlab.fractal.prior_mix`). Both are chosen here, on the training bags alone:

1. the bags are split into ``prior_folds`` folds grouped by question (a bag without a group is a group
   of its own), so that no question is on both sides;
2. for each cosine-weight scale ``k`` of ``prior_weight_scales`` the loss weights move weight from the
   bag term to the cosine term, ``λ_cos' = k·λ_cos`` and ``λ_bag' = λ_bag − (k − 1)·λ_cos``; for each
   fold a head trained with them on the other folds (and on the pairs of the other folds' questions)
   scores the fold's sentences;
3. the prior mix is fitted on all these held-out logits and the bags' labels
   (:func:`~adaptlab.fractal.prior_mix.fit_prior_mix`), and the scale whose mix ranks the held-out bags
   best wins: highest bag concordance, then lowest bag loss, then the first scale listed.

Sentence labels are never read. Why a second scale at all: with MiniLM features the cosine is a strong
signal, and a head trained with a larger cosine weight ranked sentences better on every MultiSpanQA
construction; held-out bags ranked better with it too, so the choice can be left to them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import torch

from adaptlab.errors import ConfigError
from adaptlab.fractal.folds import grouped_kfold
from adaptlab.fractal.prior_mix import PriorMix, feature_prior, fit_prior_mix
from adaptlab.fractal.tensors import BagTensors, PairTensors
from adaptlab.runs import get_logger

if TYPE_CHECKING:
    from adaptlab.fractal.train import FractalTrainConfig

HeadTrainer = Callable[[BagTensors, "FractalTrainConfig", "PairTensors | None"], Any]
"""(bags, config, pairs) -> a trained model with ``head_logits(features)``."""


def scaled_cosine_weights(cfg: FractalTrainConfig, scale: float) -> dict[str, float]:
    """``weights`` overrides with ``λ_cos' = k·λ_cos`` and ``λ_bag' = λ_bag − (k − 1)·λ_cos`` (``k = scale``)."""
    if not scale > 0:
        raise ConfigError(f"train.prior_weight_scales: scales must be > 0, got {scale}")
    weights = cfg.loss_weights()
    bag = weights.bag - (scale - 1) * weights.cosine
    if bag < -1e-12:
        raise ConfigError(f"train.prior_weight_scales: scale {scale} moves {(scale - 1) * weights.cosine:.3g} of "
                          f"weight to the cosine term, more than the bag weight {weights.bag:.3g}; use smaller scales")
    return {**cfg.weights, "bag": round(max(bag, 0.0), 12), "cosine": round(scale * weights.cosine, 12)}


def checked_groups(groups: Sequence[str | None] | None, n_bags: int, folds: int) -> list[str | None]:
    """``groups`` as a list (all None when not given), checked to allow ``folds`` grouped folds."""
    groups = [None] * n_bags if groups is None else list(groups)
    if len(groups) != n_bags:
        raise ValueError(f"{len(groups)} groups for {n_bags} bags")
    distinct = len({g for g in groups if g is not None}) + groups.count(None)
    if distinct < folds:
        raise ConfigError(f"train.prior_mix needs at least train.prior_folds={folds} question groups of labelled "
                          f"bags to hold some out; got {distinct}. Set train.prior_mix=false or train on more bags")
    return groups


def held_out_logits(data: BagTensors, cfg: FractalTrainConfig, train_head: HeadTrainer, groups: list[str | None],
                    pairs: PairTensors | None = None,
                    pair_groups: Sequence[str | None] | None = None) -> torch.Tensor:
    """Every sentence's head logit from a head that trained on the other folds (and their questions' pairs).

    A pair whose group is in the held-out fold is left out of that fold's head; without ``pair_groups``
    every pair is used.
    """
    logits = torch.empty(len(data.features))
    for train_idx, held_idx in grouped_kfold(groups, cfg.prior_folds, cfg.seed):
        held_groups = {groups[b] for b in held_idx} - {None}
        fold_pairs = pairs
        if pairs is not None and pair_groups is not None:
            keep = [p for p, group in enumerate(pair_groups) if group is None or group not in held_groups]
            fold_pairs = pairs.subset(keep) if keep else None
        head = train_head(data.subset(train_idx), cfg, fold_pairs)
        rows = data.rows(held_idx)
        with torch.no_grad():
            logits[rows] = head.head_logits(data.features[rows])
    return logits


def _rank(mix: PriorMix) -> tuple[float, float]:
    """Sort key of a candidate: its held-out bag concordance (higher first), then its bag loss (lower first)."""
    concordance = -math.inf if mix.held_out_concordance is None else mix.held_out_concordance
    return -concordance, mix.held_out_loss


def choose_prior_balance(data: BagTensors, cfg: FractalTrainConfig, train_head: HeadTrainer,
                         groups: Sequence[str | None] | None = None, pairs: PairTensors | None = None,
                         pair_groups: Sequence[str | None] | None = None) -> tuple[dict[str, float], PriorMix]:
    """The loss-weight overrides (``cfg.weights`` with the chosen cosine scale) and the prior mix, both chosen on
    held-out training bags (module doc)."""
    groups = checked_groups(groups, data.n_bags, cfg.prior_folds)
    prior = feature_prior(data.features)
    best: tuple[dict[str, float], PriorMix] | None = None
    for scale in cfg.prior_weight_scales:
        weights = scaled_cosine_weights(cfg, scale)
        scaled = cfg.model_copy(update={"weights": weights})
        logits = held_out_logits(data, scaled, train_head, groups, pairs, pair_groups)
        mix = fit_prior_mix(prior, logits, data.bag_index, data.n_bags, data.bag_labels, cfg.aggregation,
                            cfg.temperature, cfg.bag_loss)
        mix = replace(mix, loss_weights=asdict(scaled.loss_weights()))
        get_logger().info("prior balance: cosine scale %g -> head weight %.1f, held-out bag concordance %s",
                          scale, mix.head_weight, mix.held_out_concordance)
        if best is None or _rank(mix) < _rank(best[1]):
            best = (weights, mix)
    return best
