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
from adaptlab.fractal.aggregate import AGGREGATORS, DEFAULT_TEMPERATURE
from adaptlab.fractal.model import SentenceScorer
from adaptlab.fractal.priors import LOSS_WEIGHT_PRESETS, LossWeights, fractal_loss
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
        unknown = set(self.weights) - {"bag", "cosine", "correlation", "hybrid"}
        if unknown:
            raise ConfigError(f"weights: unknown term(s) {sorted(unknown)}; use bag, cosine, correlation, hybrid")
        return replace(LOSS_WEIGHT_PRESETS[self.loss_preset], **self.weights)


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
        rows = torch.cat([torch.arange(self.starts[b], self.starts[b + 1]) for b in bags])
        lengths = [self.starts[b + 1] - self.starts[b] for b in bags]
        return BagTensors(self.features[rows], [0, *np.cumsum(lengths).tolist()], self.bag_labels[list(bags)],
                          self.similarities[rows], self.sentence_embeddings[rows], self.sentence_labels[rows])


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


def train_bags(data: BagTensors, cfg: FractalTrainConfig) -> tuple[SentenceScorer, list[dict]]:
    """Bag-level training with the configured aggregator and priors; returns the scorer and per-epoch losses."""
    weights = cfg.loss_weights()
    aggregate = AGGREGATORS[cfg.aggregation]
    model, optimizer = _new_scorer(data, cfg)
    rng = random.Random(cfg.seed)
    hybrid_bags = set(rng.sample(range(data.n_bags), round(cfg.hybrid_fraction * data.n_bags)))
    history = []
    for epoch in range(cfg.epochs):
        order = list(range(data.n_bags))
        rng.shuffle(order)
        totals: dict[str, float] = {}
        for first in range(0, len(order), cfg.batch_bags):
            bags = order[first:first + cfg.batch_bags]
            batch = data.subset(bags)
            bag_index = batch.bag_index
            scores = model(batch.features)
            known = ~torch.isnan(batch.sentence_labels)
            use = torch.tensor([b in hybrid_bags for b in bags])[bag_index] & known
            similarities = torch.nan_to_num(batch.similarities, nan=0.0)
            terms = fractal_loss(
                aggregate(scores, bag_index, batch.n_bags, cfg.temperature), batch.bag_labels, scores, bag_index,
                batch.n_bags, weights, bag_loss=cfg.bag_loss, similarities=similarities,
                sentence_embeddings=batch.sentence_embeddings,
                sentence_labels=torch.nan_to_num(batch.sentence_labels, nan=0.0), label_mask=use,
            )
            optimizer.zero_grad()
            terms["loss"].backward()
            optimizer.step()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + value.item() * len(bags)
        history.append({"epoch": epoch + 1, **{k: v / data.n_bags for k, v in totals.items()}})
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


def fit(data: BagTensors, cfg: FractalTrainConfig) -> tuple[SentenceScorer, list[dict]]:
    """The configured recipe: bag training, then optionally pseudo-labels and a fresh sentence model."""
    model, history = train_bags(data, cfg)
    if cfg.pseudo_label:
        scores = model.score(data.features)
        labels = pseudo_labels(scores, data.bag_index, data.bag_labels, PSEUDO_RULE[cfg.aggregation])
        model = train_sentences(data.features, labels.float(), cfg)
    return model, history
