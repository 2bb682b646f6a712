"""Training a sentence scorer from bag labels (FRACTAL), from pseudo-labels, or from sentence labels.

* :func:`train_bags`: minimise ``λ_bag·L_bag(agg(s), y) + λ_cos·cosine + λ_corr·correlation +
  λ_hyb·hybrid`` (:func:`adaptlab.fractal.priors.fractal_loss`) over mini-batches of bags, where
  ``s = σ(MLP(features))`` and ``agg`` is the configured aggregator. With all prior weights at 0
  this is the plain bag-loss baseline ("BagLoss").
* :func:`train_sentences`: sentence-level BCE on given labels; the supervised upper bound, and the
  second stage of pseudo-labelling.
* :func:`fit` runs the configured recipe: bag training, then (``pseudo_label: true``) the most likely
  sentence labels consistent with each bag label (:mod:`adaptlab.fractal.pseudo`) and a fresh
  scorer trained on them; then (``prior_mix``, on by default) the head's logit is mixed with the
  question–sentence cosine, ``s = σ(a·((1 − λ)·p̃ + λ·h̃) + c)``, with λ, a, c and the cosine weight
  of the loss chosen on held-out scores of the training bags (:mod:`adaptlab.fractal.prior_mix`,
  :mod:`adaptlab.fractal.selection`).

Why the head does not read the context embedding on its own (``context_block: false``) and why the
prior is mixed in after training: on a bag set with one bag per question (MultiSpanQA's
``half_cropped`` construction) the head with ``e_c`` learned each training question's bag label
rather than which sentences earn it, and FRACTAL ended at 0.651 sentence AUC, below the cosine it is
regularised toward (0.676); without the block it reached 0.697, and with the prior balance chosen on
held-out bags 0.715 (5 grouped folds, seed 0; ``benchmarks/README.md``, FRACTAL).

Pairwise preferences. When pair bags are given, every step also takes a mini-batch of pairs and adds
``λ_pair · BCE(σ(k·(mean_a − mean_b)), preference)`` (Bradley–Terry on mean sentence scores,
:func:`adaptlab.fractal.aggregate.bradley_terry`). The priors act on the sentences of both the
labelled bags and the pair sides of the step, so pairs also feed the similarity priors. Data with
pairs only (no labelled bags) trains on the preference term and the priors alone.

Curriculum. ``curriculum_start`` gives the loss weights of the first epoch; they move linearly to the
configured weights over ``curriculum_epochs`` (:func:`adaptlab.fractal.priors.weights_at`).

Encoder. ``encoder: frozen`` (default) trains the head on cached features. ``encoder: finetune`` trains
the head the same way for ``epochs``, then the sentence-transformers encoder and the head jointly for
``encoder_epochs`` more epochs on the same loss (:mod:`adaptlab.fractal.finetune`: LP-FT, GradCache,
priors from the initial embeddings); the encoder restarts from the initial weights at every call, so
each fold and each pseudo-label model starts from the same encoder. Such a model is an
:class:`~adaptlab.fractal.finetune.EncoderScorer`; :func:`sentence_scores` scores either kind.

Bags and pairs arrive as :class:`~adaptlab.fractal.tensors.BagTensors` / ``PairTensors``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Literal

import torch
from pydantic import Field, model_validator

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
from adaptlab.fractal.finetune import EncoderScorer, load_encoder
from adaptlab.fractal.model import SentenceScorer
from adaptlab.fractal.priors import LossWeights, fractal_loss, get_loss_weights, weights_at
from adaptlab.fractal.pseudo import pseudo_labels
from adaptlab.fractal.selection import choose_prior_balance, scaled_cosine_weights
from adaptlab.fractal.tensors import BagTensors, PairTensors
from adaptlab.runs import get_logger, progress_bar

PSEUDO_RULE = {"max": "max", "lse_max": "max", "noisy_or": "max", "min": "min", "softmin": "min",
               "noisy_and": "min", "avg": "avg"}


class FractalTrainConfig(StrictModel):
    aggregation: Literal["max", "min", "avg", "lse_max", "softmin", "noisy_or", "noisy_and"] = Field(
        "max", description="how sentence scores make a bag score: max, min, avg, or the smooth forms lse_max, "
        "softmin, noisy_or, noisy_and")
    temperature: float = Field(DEFAULT_TEMPERATURE, gt=0, description="lse_max / softmin smoothness")
    bag_loss: Literal["bce", "mse"] = Field(
        "bce", description="bce: binary cross-entropy against the bag label; mse: squared error (for AVG labels)")
    loss_preset: str = Field("default", description="paper weights: default/max/multispanqa/prm800k, qa_feedback")
    weights: dict[str, float] = Field({}, description="override preset terms: bag, cosine, correlation, hybrid")
    hybrid_fraction: float = Field(0.0, ge=0, le=1, description="share of bags whose sentence labels are used")
    pair_weight: float = Field(1.0, ge=0, description="λ of the Bradley–Terry term when pair bags are given")
    preference_scale: float = Field(DEFAULT_PREFERENCE_SCALE, gt=0, description="k in σ(k·(mean_a − mean_b))")
    curriculum_start: dict[str, float] | None = Field(
        None, description="loss weights of the first epoch (bag, cosine, correlation, hybrid), moving linearly "
                          "to the configured ones over curriculum_epochs")
    curriculum_epochs: int = Field(
        10, ge=1, description="epochs over which curriculum_start moves to the configured weights")
    pseudo_label: bool = Field(False, description="retrain a fresh scorer on consistent pseudo-labels")
    context_block: bool = Field(
        False, description="let the head read the context embedding e_c on its own; off: it reads [e_s, "
                           "e_s⊙e_c, |e_s − e_c|], so it cannot fit a bag label from its question alone")
    prior_mix: bool | None = Field(
        None, description="mix the head with the question–sentence cosine p: s = σ(a·((1 − λ)·p̃ + λ·h̃) + c), "
                          "λ, a, c fitted on held-out training bags (adaptlab.fractal.prior_mix); default: on "
                          "with encoder=frozen, off with finetune")
    prior_folds: int = Field(5, ge=2, description="prior_mix: question-grouped folds of the training bags; "
                                                  "a head trained on the others scores each fold")
    prior_weight_scales: list[float] = Field(
        [1.0, 3.0], min_length=1, description="prior_mix: cosine-weight scales k the held-out bags choose "
                                              "among: λ_cos' = k·λ_cos, λ_bag' = λ_bag − (k − 1)·λ_cos "
                                              "(adaptlab.fractal.selection)")
    hidden: int = Field(256, ge=1, description="width of the scoring head's hidden layers")
    layers: int = Field(2, ge=1, description="layers of the scoring head (an MLP)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in the scoring head")
    learning_rate: float = Field(1e-3, gt=0, description="learning rate of the scoring head")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay of the scoring head")
    epochs: int = Field(30, ge=1, description="training epochs of the scoring head")
    batch_bags: int = Field(64, ge=1, description="bags per optimizer step")
    seed: int = Field(0, description="seed of initialisation, batches and the prior-mix folds")
    encoder: Literal["frozen", "finetune"] = Field(
        "frozen", description="frozen: head over cached features; finetune: then train the encoder jointly")
    encoder_learning_rate: float = Field(2e-5, gt=0, description="finetune: learning rate of the encoder")
    encoder_epochs: int = Field(2, ge=1, description="finetune: joint epochs after the head's `epochs`")
    encoder_batch_size: int = Field(32, ge=1, description="finetune: texts per encoder pass (bounds memory)")
    encoder_max_length: int | None = Field(
        None, ge=3, description="finetune: tokens per encoder input (longer sentences truncated, contexts "
                                "chunked); default: the encoder's own max_seq_length")

    @model_validator(mode="after")
    def _finetune_keys_need_finetune(self) -> FractalTrainConfig:
        if self.encoder == "frozen" and self.encoder_max_length is not None:
            raise ConfigError("train.encoder_max_length applies to train.encoder=finetune only; remove it or "
                              "set train.encoder=finetune")
        if self.encoder == "finetune" and self.prior_mix:
            raise ConfigError("train.prior_mix works with train.encoder=frozen only (it would fine-tune the encoder "
                              "once more per prior fold); remove it or set train.encoder=frozen")
        if self.uses_prior_mix:
            for scale in self.prior_weight_scales:
                scaled_cosine_weights(self, scale)
        return self

    @property
    def uses_prior_mix(self) -> bool:
        """``prior_mix`` as set, else on for a frozen encoder."""
        return self.encoder == "frozen" if self.prior_mix is None else self.prior_mix

    def loss_weights(self) -> LossWeights:
        return replace(get_loss_weights(self.loss_preset), **_checked_terms(self.weights, "weights"))

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


def _new_scorer(feature_dim: int, cfg: FractalTrainConfig) -> tuple[SentenceScorer, torch.optim.Optimizer]:
    torch.manual_seed(cfg.seed)
    model = SentenceScorer(feature_dim, cfg.hidden, cfg.layers, cfg.dropout, cfg.context_block)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return model, optimizer


def _with_encoder(head: SentenceScorer, optimizer: torch.optim.Optimizer, cfg: FractalTrainConfig,
                  encoder_model: str | None) -> EncoderScorer:
    """The head joined to a fresh copy of the initial encoder, whose parameters join the optimizer."""
    model = EncoderScorer(load_encoder(encoder_model, cfg.encoder_max_length), head, cfg.encoder_batch_size)
    optimizer.add_param_group({"params": list(model.encoder.parameters()), "lr": cfg.encoder_learning_rate})
    return model.train()


def _require_texts(*sets: BagTensors) -> None:
    if any(bags.texts is None for bags in sets):
        raise ConfigError("train.encoder=finetune needs the bags' texts (make_bag_tensors(..., texts=...))")


def sentence_scores(model: SentenceScorer | EncoderScorer, data: BagTensors) -> torch.Tensor:
    """Scores in (0, 1) of every sentence of ``data``: the head over its features, or encoder + head over texts."""
    return model.score(data) if isinstance(model, EncoderScorer) else model.score(data.features)


def _batches(n: int, steps: int, rng: random.Random) -> list[list[int]]:
    """``steps`` shuffled, near-equal slices of ``range(n)`` (empty slices when n = 0)."""
    order = list(range(n))
    rng.shuffle(order)
    size = -(-n // steps) if n else 0
    return [order[i * size:(i + 1) * size] for i in range(steps)]


def _step_loss(scores: torch.Tensor, batch: BagTensors, bags: BagTensors, pairs: PairTensors | None,
               hybrid: torch.Tensor, weights: LossWeights, cfg: FractalTrainConfig) -> dict[str, torch.Tensor]:
    """The FRACTAL loss of one step: bag loss on ``bags``, priors on all sentences, preference on ``pairs``.

    ``batch`` is ``bags`` followed by the pair sides, and ``scores`` are its sentence scores.
    """
    bag_index = batch.bag_index
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


def _backward(model: SentenceScorer | EncoderScorer, batch: BagTensors,
              loss_of_scores: Callable[[torch.Tensor], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Scores of ``batch``, their loss, and its gradients (through the encoder too when it is trained)."""
    if isinstance(model, EncoderScorer):
        return model.backward(batch, lambda features: loss_of_scores(model.head(features)))
    terms = loss_of_scores(model(batch.features))
    terms["loss"].backward()
    return terms


def train_bags(data: BagTensors, cfg: FractalTrainConfig, pairs: PairTensors | None = None,
               encoder_model: str | None = None) -> tuple[SentenceScorer | EncoderScorer, list[dict]]:
    """Bag-level training with the configured aggregator, priors and (optional) pairs.

    Returns the scorer and per-epoch mean losses. Each epoch has as many steps as the larger of
    the bag and pair sets needs at ``batch_bags`` per step; the smaller set is spread over them.
    With ``encoder: finetune`` the ``encoder_epochs`` joint epochs follow (history ``stage``
    "head" then "joint"), starting from ``encoder_model``, the model the features came from.
    """
    n_pairs = pairs.n_pairs if pairs is not None else 0
    if data.n_bags == 0 and n_pairs == 0:
        raise ConfigError("nothing to train on: no labelled bags and no pairs")
    finetune = cfg.encoder == "finetune"
    if finetune:
        _require_texts(data, pairs.sides if pairs is not None else data)
    features = (data if data.n_bags else pairs.sides).features
    model, optimizer = _new_scorer(features.shape[1], cfg)
    rng = random.Random(cfg.seed)
    hybrid_bags = set(rng.sample(range(data.n_bags), round(cfg.hybrid_fraction * data.n_bags)))
    steps = -(-max(data.n_bags, n_pairs) // cfg.batch_bags)
    stages = [("head", cfg.epochs)] + ([("joint", cfg.encoder_epochs)] if finetune else [])
    history: list[dict] = []
    for stage, stage_epochs in stages:
        if stage == "joint":
            model = _with_encoder(model, optimizer, cfg, encoder_model)
        with progress_bar(stage == "joint", fields="{task.fields[shown]}") as bar:  # the head stage is quick
            task = bar.add_task("FRACTAL encoder fine-tuning", total=stage_epochs * steps, shown="")
            for _ in range(stage_epochs):
                weights = cfg.weights_at_epoch(len(history))
                totals: dict[str, float] = {}
                for bag_ids, pair_ids in zip(_batches(data.n_bags, steps, rng), _batches(n_pairs, steps, rng)):
                    bags = data.subset(bag_ids)
                    hybrid = torch.tensor([b in hybrid_bags for b in bag_ids], dtype=torch.bool)[bags.bag_index] \
                        if bag_ids else torch.zeros(0, dtype=torch.bool)
                    pair_batch = pairs.subset(pair_ids) if pair_ids else None
                    batch = bags if pair_batch is None else bags.concat(pair_batch.sides)
                    optimizer.zero_grad()
                    loss = partial(_step_loss, batch=batch, bags=bags, pairs=pair_batch, hybrid=hybrid, weights=weights,
                                   cfg=cfg)
                    terms = _backward(model, batch, loss)
                    optimizer.step()
                    bar.update(task, advance=1)
                    for name, value in terms.items():
                        totals[name] = totals.get(name, 0.0) + value.item()
                history.append({"epoch": len(history) + 1, **({"stage": stage} if finetune else {}),
                                **{k: v / steps for k, v in totals.items()}})
                if stage == "joint":
                    get_logger().info("joint epoch %d: loss %.4f", history[-1]["epoch"], history[-1]["loss"])
                    bar.update(task, shown=f"loss {history[-1]['loss']:.4g}")
    return model.eval(), history


def train_sentences(data: BagTensors, labels: torch.Tensor, cfg: FractalTrainConfig, batch_size: int = 256,
                    encoder_model: str | None = None) -> SentenceScorer | EncoderScorer:
    """Sentence-level BCE on ``labels [N]`` (0/1) for the sentences of ``data``; rows with a NaN label are left out.

    With ``encoder: finetune`` the ``encoder_epochs`` joint epochs follow, from ``encoder_model``.
    """
    if cfg.encoder == "finetune":
        _require_texts(data)
    keep = ~torch.isnan(labels)
    features, labels, kept_rows = data.features[keep], labels[keep].float(), torch.nonzero(keep).flatten()
    model, optimizer = _new_scorer(features.shape[1], cfg)
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
    if cfg.encoder == "frozen":
        return model.eval()
    joint = _with_encoder(model, optimizer, cfg, encoder_model)
    with progress_bar() as bar:
        task = bar.add_task("FRACTAL encoder fine-tuning (sentences)",
                            total=cfg.encoder_epochs * -(-len(features) // batch_size))
        for _ in range(cfg.encoder_epochs):
            order = torch.randperm(len(features), generator=generator)
            for first in range(0, len(order), batch_size):
                rows = order[first:first + batch_size]
                optimizer.zero_grad()
                joint.backward(data.rows_as_bags(kept_rows[rows].tolist()),
                               lambda feats, rows=rows: {"loss": loss_fn(joint.head.logits(feats), labels[rows])})
                optimizer.step()
                bar.update(task, advance=1)
    return joint.eval()


def pseudo_label_retrain(model: SentenceScorer | EncoderScorer, data: BagTensors, cfg: FractalTrainConfig,
                         encoder_model: str | None = None) -> SentenceScorer | EncoderScorer:
    """A fresh sentence model trained on the most likely sentence labels consistent with each bag label,
    under the bag-trained ``model``'s scores (:func:`adaptlab.fractal.pseudo.pseudo_labels`)."""
    scores = sentence_scores(model, data)
    labels = pseudo_labels(scores, data.bag_index, data.bag_labels, PSEUDO_RULE[cfg.aggregation])
    return train_sentences(data, labels.float(), cfg, encoder_model=encoder_model)


def _fit_head(data: BagTensors, cfg: FractalTrainConfig, pairs: PairTensors | None,
              encoder_model: str | None) -> tuple[SentenceScorer | EncoderScorer, list[dict]]:
    """Bag training, then optionally pseudo-labels and a fresh sentence model: the head, before any prior mix."""
    model, history = train_bags(data, cfg, pairs, encoder_model)
    if cfg.pseudo_label and data.n_bags:
        model = pseudo_label_retrain(model, data, cfg, encoder_model)
    return model, history


def fit(data: BagTensors, cfg: FractalTrainConfig, pairs: PairTensors | None = None,
        encoder_model: str | None = None, groups: Sequence[str | None] | None = None,
        pair_groups: Sequence[str | None] | None = None) -> tuple[SentenceScorer | EncoderScorer, list[dict]]:
    """The configured recipe: bag training, optionally pseudo-labels and a fresh sentence model, then the prior mix.

    ``encoder_model`` (finetune only) is the sentence-transformers model ``data``'s features came from.
    With the prior mix, the cosine weight of the loss and the mix are first chosen on held-out training
    bags (:func:`adaptlab.fractal.selection.choose_prior_balance`; ``groups`` / ``pair_groups``, the
    question of each bag / pair, keep a question's bags on one side); the head then trains on all bags
    with the chosen weights and carries the mix. Without labelled bags there is nothing to choose on, and
    the configured head is returned as is.
    """
    mix = None
    if cfg.uses_prior_mix and data.n_bags:
        def train_head(bags: BagTensors, head_cfg: FractalTrainConfig, head_pairs: PairTensors | None):
            return _fit_head(bags, head_cfg, head_pairs, None)[0]

        weights, mix = choose_prior_balance(data, cfg, train_head, groups, pairs, pair_groups)
        cfg = cfg.model_copy(update={"weights": weights})
    model, history = _fit_head(data, cfg, pairs, encoder_model)
    model.prior_mix = mix
    return model, history
