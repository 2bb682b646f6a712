"""Training a sentence scorer from bag labels (FRACTAL), from pseudo-labels, or from sentence labels.

* :func:`train_bags`: minimise ``λ_bag·L_bag(agg(s), y) + λ_cos·cosine + λ_corr·correlation +
  λ_hyb·hybrid`` (:func:`adaptlab.fractal.priors.fractal_loss`) over mini-batches of bags, where
  ``s = σ(MLP(features))`` and ``agg`` is the configured aggregator. With all prior weights at 0
  this is the plain bag-loss baseline ("BagLoss").
* :func:`train_sentences`: sentence-level BCE on given labels; the supervised upper bound, and the
  second stage of pseudo-labelling.
* :func:`fit` runs the configured recipe: bag training, then (``pseudo_label: true``) the most likely
  sentence labels consistent with each bag label (:mod:`adaptlab.fractal.pseudo`) and a fresh
  scorer trained on them.

Pairwise preferences. When pair bags are given, every step also takes a mini-batch of pairs and adds
``λ_pair · BCE(σ(k·(mean_a − mean_b)), preference)`` (Bradley–Terry on mean sentence scores,
:func:`adaptlab.fractal.aggregate.bradley_terry`). The priors act on the sentences of both the
labelled bags and the pair sides of the step, so pairs also feed the similarity priors. Data with
pairs only (no labelled bags) trains on the preference term and the priors alone.

Curriculum. ``curriculum_start`` gives the loss weights of the first epoch; they move linearly to the
configured weights over ``curriculum_epochs`` (:func:`adaptlab.fractal.priors.weights_at`).

Bags are kept contiguous: the sentences of bag ``b`` are rows ``starts[b] .. starts[b+1]``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from adaptlab.config import StrictModel
from adaptlab.errors import ConfigError
from adaptlab.fractal.aggregate import (
    AGGREGATORS,
    DEFAULT_EPS,
    DEFAULT_PREFERENCE_SCALE,
    DEFAULT_TEMPERATURE,
    avg_aggregate,
    bce_bag_loss,
    bradley_terry,
)
from adaptlab.fractal.model import SentenceScorer
from adaptlab.fractal.priors import LOSS_WEIGHT_PRESETS, LossWeights, fractal_loss, weights_at
from adaptlab.fractal.pseudo import pseudo_labels

PSEUDO_RULE = {"max": "max", "lse_max": "max", "noisy_or": "max", "min": "min", "softmin": "min",
               "noisy_and": "min", "avg": "avg"}


class FractalTrainConfig(StrictModel):
    aggregation: Literal["max", "min", "avg", "lse_max", "softmin", "noisy_or", "noisy_and"] = "max"
    temperature: float = Field(DEFAULT_TEMPERATURE, gt=0, description="lse_max / softmin smoothness")
    bag_loss: Literal["bce", "mse"] = "bce"
    loss_preset: str = Field("default", description="paper weights: default/max/multispanqa/prm800k, qa_feedback")
    weights: dict[str, float] = Field({}, description="override preset terms: bag, cosine, correlation, hybrid")
    hybrid_fraction: float = Field(0.0, ge=0, le=1, description="share of bags whose sentence labels are used")
    pair_weight: float = Field(1.0, ge=0, description="λ of the Bradley–Terry term when pair bags are given")
    preference_scale: float = Field(DEFAULT_PREFERENCE_SCALE, gt=0, description="k in σ(k·(mean_a − mean_b))")
    curriculum_start: dict[str, float] | None = Field(
        None, description="loss weights of the first epoch (bag, cosine, correlation, hybrid), moving linearly "
                          "to the configured ones over curriculum_epochs")
    curriculum_epochs: int = Field(10, ge=1)
    pseudo_label: bool = Field(False, description="retrain a fresh scorer on consistent pseudo-labels")
    hidden: int = Field(256, ge=1)
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    epochs: int = Field(30, ge=1)
    batch_bags: int = Field(64, ge=1)
    seed: int = 0

    def loss_weights(self) -> LossWeights:
        if self.loss_preset not in LOSS_WEIGHT_PRESETS:
            raise ConfigError(f"loss_preset {self.loss_preset!r} is not one of {sorted(LOSS_WEIGHT_PRESETS)}")
        return replace(LOSS_WEIGHT_PRESETS[self.loss_preset], **_checked_terms(self.weights, "weights"))

    def weights_at_epoch(self, epoch: int) -> LossWeights:
        """The loss weights of ``epoch`` (0-based): the curriculum's, else the configured ones."""
        final = self.loss_weights()
        if self.curriculum_start is None:
            return final
        start = replace(final, **_checked_terms(self.curriculum_start, "curriculum_start"))
        return weights_at(epoch, self.curriculum_epochs, start, final)


def _checked_terms(terms: dict[str, float], key: str) -> dict[str, float]:
    unknown = set(terms) - {"bag", "cosine", "correlation", "hybrid"}
    if unknown:
        raise ConfigError(f"{key}: unknown term(s) {sorted(unknown)}; use bag, cosine, correlation, hybrid")
    return terms


@dataclass
class BagTensors:
    """Features and targets of a set of bags, sentences of one bag contiguous."""

    features: torch.Tensor  # [N, F]
    starts: list[int]  # B + 1 boundaries
    bag_labels: torch.Tensor  # [B]
    similarities: torch.Tensor  # [N] sentence-context cosine (NaN: no context)
    sentence_embeddings: torch.Tensor  # [N, d]
    sentence_labels: torch.Tensor  # [N], NaN where unknown

    @property
    def n_bags(self) -> int:
        return len(self.starts) - 1

    @property
    def bag_index(self) -> torch.Tensor:
        lengths = torch.tensor(np.diff(self.starts))
        return torch.repeat_interleave(torch.arange(self.n_bags), lengths)

    def subset(self, bags: Sequence[int]) -> BagTensors:
        if not len(bags):
            return BagTensors(self.features[:0], [0], self.bag_labels[:0], self.similarities[:0],
                              self.sentence_embeddings[:0], self.sentence_labels[:0])
        rows = torch.cat([torch.arange(self.starts[b], self.starts[b + 1]) for b in bags])
        lengths = [self.starts[b + 1] - self.starts[b] for b in bags]
        return BagTensors(self.features[rows], [0, *np.cumsum(lengths).tolist()], self.bag_labels[list(bags)],
                          self.similarities[rows], self.sentence_embeddings[rows], self.sentence_labels[rows])

    def concat(self, other: BagTensors) -> BagTensors:
        """This set's bags followed by ``other``'s."""
        offset = self.starts[-1]
        return BagTensors(torch.cat([self.features, other.features]),
                          self.starts + [offset + s for s in other.starts[1:]],
                          torch.cat([self.bag_labels, other.bag_labels]),
                          torch.cat([self.similarities, other.similarities]),
                          torch.cat([self.sentence_embeddings, other.sentence_embeddings]),
                          torch.cat([self.sentence_labels, other.sentence_labels]))


@dataclass
class PairTensors:
    """Pair bags: side ``a`` of pair ``p`` is bag ``2p`` of ``sides``, side ``b`` is bag ``2p + 1``."""

    sides: BagTensors  # bag labels are NaN: a side has no label of its own
    preferences: torch.Tensor  # [P] in [0, 1]: 1 = a preferred, 0 = b, 0.5 = tie

    @property
    def n_pairs(self) -> int:
        return len(self.preferences)

    def subset(self, pairs: Sequence[int]) -> PairTensors:
        return PairTensors(self.sides.subset([side for p in pairs for side in (2 * p, 2 * p + 1)]),
                           self.preferences[list(pairs)])


def make_bag_tensors(features, lengths: Sequence[int], bag_labels: Sequence[float], similarities,
                     sentence_embeddings, sentence_labels: Sequence[float] | None = None) -> BagTensors:
    n = int(sum(lengths))
    labels = torch.full((n,), float("nan")) if sentence_labels is None else torch.tensor(
        [float("nan") if v is None else float(v) for v in sentence_labels], dtype=torch.float32)
    return BagTensors(torch.as_tensor(np.asarray(features), dtype=torch.float32),
                      [0, *np.cumsum(lengths).tolist()], torch.tensor(bag_labels, dtype=torch.float32),
                      torch.as_tensor(np.asarray(similarities), dtype=torch.float32),
                      torch.as_tensor(np.asarray(sentence_embeddings), dtype=torch.float32), labels)


def _new_scorer(data: BagTensors, cfg: FractalTrainConfig) -> tuple[SentenceScorer, torch.optim.Optimizer]:
    torch.manual_seed(cfg.seed)
    model = SentenceScorer(data.features.shape[1], cfg.hidden, cfg.layers, cfg.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return model, optimizer


def make_pair_tensors(sides: BagTensors, preferences: Sequence[float]) -> PairTensors:
    """Pairs from side bags laid out ``a_0, b_0, a_1, b_1, ...``; their bag labels are set to NaN."""
    if sides.n_bags != 2 * len(preferences):
        raise ValueError(f"{sides.n_bags} side bags for {len(preferences)} pairs; expected two per pair")
    sides = replace(sides, bag_labels=torch.full((sides.n_bags,), float("nan")))
    return PairTensors(sides, torch.tensor(preferences, dtype=torch.float32))


def _batches(n: int, steps: int, rng: random.Random) -> list[list[int]]:
    """``steps`` shuffled, near-equal slices of ``range(n)`` (empty slices when n = 0)."""
    order = list(range(n))
    rng.shuffle(order)
    size = -(-n // steps) if n else 0
    return [order[i * size:(i + 1) * size] for i in range(steps)]


def _step_loss(model: SentenceScorer, bags: BagTensors, pairs: PairTensors | None, hybrid: torch.Tensor,
               weights: LossWeights, cfg: FractalTrainConfig) -> dict[str, torch.Tensor]:
    """The FRACTAL loss of one step: bag loss on ``bags``, priors on all sentences, preference on ``pairs``."""
    batch = bags if pairs is None else bags.concat(pairs.sides)
    bag_index = batch.bag_index
    scores = model(batch.features)
    n_labelled = bags.n_bags
    labelled = bag_index < n_labelled
    bag_scores = AGGREGATORS[cfg.aggregation](scores[labelled], bag_index[labelled], max(n_labelled, 1),
                                              cfg.temperature) if n_labelled else scores[:0]
    known = ~torch.isnan(batch.sentence_labels)
    use = torch.cat([hybrid, torch.zeros(len(scores) - len(hybrid), dtype=torch.bool)]) & known
    terms = fractal_loss(
        bag_scores, bags.bag_labels, scores, bag_index, batch.n_bags,
        weights if n_labelled else replace(weights, bag=0.0), bag_loss=cfg.bag_loss,
        similarities=torch.nan_to_num(batch.similarities, nan=0.0), sentence_embeddings=batch.sentence_embeddings,
        sentence_labels=torch.nan_to_num(batch.sentence_labels, nan=0.0), label_mask=use,
    )
    if pairs is not None and pairs.n_pairs and cfg.pair_weight > 0:
        side_index = bag_index[~labelled] - n_labelled
        means = avg_aggregate(scores[~labelled], side_index, pairs.sides.n_bags)
        preferred = bradley_terry(means[0::2], means[1::2], cfg.preference_scale)
        terms["preference"] = bce_bag_loss(preferred, pairs.preferences, DEFAULT_EPS)
        terms["loss"] = terms["loss"] + cfg.pair_weight * terms["preference"]
    return terms


def train_bags(data: BagTensors, cfg: FractalTrainConfig,
               pairs: PairTensors | None = None) -> tuple[SentenceScorer, list[dict]]:
    """Bag-level training with the configured aggregator, priors and (optional) pairs.

    Returns the scorer and per-epoch mean losses. Each epoch has as many steps as the larger of
    the bag and pair sets needs at ``batch_bags`` per step; the smaller set is spread over them.
    """
    n_pairs = pairs.n_pairs if pairs is not None else 0
    if data.n_bags == 0 and n_pairs == 0:
        raise ConfigError("nothing to train on: no labelled bags and no pairs")
    model, optimizer = _new_scorer(data if data.n_bags else pairs.sides, cfg)
    rng = random.Random(cfg.seed)
    hybrid_bags = set(rng.sample(range(data.n_bags), round(cfg.hybrid_fraction * data.n_bags)))
    steps = -(-max(data.n_bags, n_pairs) // cfg.batch_bags)
    history = []
    for epoch in range(cfg.epochs):
        weights = cfg.weights_at_epoch(epoch)
        totals: dict[str, float] = {}
        for bag_ids, pair_ids in zip(_batches(data.n_bags, steps, rng), _batches(n_pairs, steps, rng)):
            bags = data.subset(bag_ids)
            hybrid = torch.tensor([b in hybrid_bags for b in bag_ids], dtype=torch.bool)[bags.bag_index] \
                if bag_ids else torch.zeros(0, dtype=torch.bool)
            terms = _step_loss(model, bags, pairs.subset(pair_ids) if pair_ids else None, hybrid, weights, cfg)
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + value.item()
        history.append({"epoch": epoch + 1, **{k: v / steps for k, v in totals.items()}})
    return model.eval(), history


def train_sentences(features: torch.Tensor, labels: torch.Tensor, cfg: FractalTrainConfig,
                    batch_size: int = 256) -> SentenceScorer:
    """Sentence-level BCE on ``labels`` (0/1); rows with a NaN label are left out."""
    keep = ~torch.isnan(labels)
    features, labels = features[keep], labels[keep].float()
    data_stub = BagTensors(features, [0, len(features)], torch.zeros(1), torch.zeros(len(features)),
                           torch.zeros(len(features), 1), labels)
    model, optimizer = _new_scorer(data_stub, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(features), generator=generator)
        for first in range(0, len(order), batch_size):
            rows = order[first:first + batch_size]
            loss = loss_fn(model.logits(features[rows]), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def fit(data: BagTensors, cfg: FractalTrainConfig,
        pairs: PairTensors | None = None) -> tuple[SentenceScorer, list[dict]]:
    """The configured recipe: bag training, then optionally pseudo-labels and a fresh sentence model."""
    model, history = train_bags(data, cfg, pairs)
    if cfg.pseudo_label and data.n_bags:
        scores = model.score(data.features)
        labels = pseudo_labels(scores, data.bag_index, data.bag_labels, PSEUDO_RULE[cfg.aggregation])
        model = train_sentences(data.features, labels.float(), cfg)
    return model, history
