"""Scorer training: bag-level learning recovers sentence labels on separable synthetic features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptlab.errors import ConfigError
from adaptlab.fractal.features import cosine_rows, pair_features
from adaptlab.fractal.model import load_scorer, save_scorer
from adaptlab.fractal.tensors import make_bag_tensors, make_pair_tensors
from adaptlab.fractal.train import FractalTrainConfig, fit, train_sentences
from adaptlab.metrics.ranking import sentence_auc


def in_feature_layout(sentences: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[e_s, e_c, e_s ⊙ e_c, |e_s − e_c|]`` of one bag's sentence embeddings with a random context, and
    their cosines to it (which carry no label information)."""
    contexts = np.repeat(rng.normal(size=(1, sentences.shape[1])).astype(np.float32), len(sentences), axis=0)
    return pair_features(sentences, contexts, np.ones(len(sentences), dtype=bool)), cosine_rows(sentences, contexts)


def synthetic(n_bags: int = 120, seed: int = 0):
    """Sentence embedding dimension 0 marks the positive sentences; a bag is positive when it holds one (MAX).

    Features in the real layout (:func:`in_feature_layout`).
    """
    rng = np.random.default_rng(seed)
    features, lengths, bag_labels, sentence_labels, sims = [], [], [], [], []
    for b in range(n_bags):
        n = int(rng.integers(2, 6))
        labels = np.zeros(n)
        if b % 2:
            labels[rng.integers(0, n)] = 1
        sentences = rng.normal(size=(n, 4)).astype(np.float32)
        sentences[:, 0] = labels * 3 + rng.normal(scale=0.3, size=n)
        bag_features, bag_sims = in_feature_layout(sentences, rng)
        features.append(bag_features)
        sims.append(bag_sims)
        lengths.append(n)
        bag_labels.append(float(labels.max()))
        sentence_labels.extend(labels.tolist())
    features = np.concatenate(features)
    return make_bag_tensors(features, lengths, bag_labels, np.concatenate(sims), features[:, :4], sentence_labels)


def test_bag_training_learns_which_sentences_make_a_bag_positive():
    data = synthetic()
    cfg = FractalTrainConfig(epochs=40, weights={"cosine": 0.0, "correlation": 0.0}, hidden=16, prior_mix=False)
    model, history = fit(data, cfg)
    assert history[-1]["loss"] < history[0]["loss"]
    auc = sentence_auc(data.sentence_labels.numpy(), model.score(data.features).numpy())
    assert auc["auc_roc"] > 0.95


def test_pseudo_labels_and_supervised_training_run_and_agree(tmp_path):
    data = synthetic()
    cfg = FractalTrainConfig(epochs=30, pseudo_label=True, weights={"cosine": 0.0, "correlation": 0.0}, hidden=16,
                             prior_mix=False)
    model, _ = fit(data, cfg)
    assert sentence_auc(data.sentence_labels.numpy(), model.score(data.features).numpy())["auc_roc"] > 0.85
    supervised = train_sentences(data, data.sentence_labels, cfg.model_copy(update={"epochs": 150}))
    assert sentence_auc(data.sentence_labels.numpy(), supervised.score(data.features).numpy())["auc_roc"] > 0.95
    save_scorer(supervised, tmp_path / "scorer", {"aggregation": "max"})
    loaded, info = load_scorer(tmp_path / "scorer")
    assert info["aggregation"] == "max"
    assert torch.allclose(loaded.score(data.features), supervised.score(data.features))


def synthetic_pairs(n_pairs: int = 150, seed: int = 1):
    """Embedding dimension 0 is each sentence's quality; the side with the higher mean quality is preferred."""
    rng = np.random.default_rng(seed)
    features, lengths, preferences, labels, sims = [], [], [], [], []
    for _ in range(n_pairs):
        means = []
        for _side in range(2):
            n = int(rng.integers(2, 5))
            good = rng.random(n) < 0.5
            sentences = rng.normal(size=(n, 4)).astype(np.float32)
            sentences[:, 0] = np.where(good, 1.5, -1.5) + rng.normal(scale=0.3, size=n)
            side_features, side_sims = in_feature_layout(sentences, rng)
            features.append(side_features)
            sims.append(side_sims)
            lengths.append(n)
            labels.extend(good.astype(float).tolist())
            means.append(good.mean())
        preferences.append(1.0 if means[0] > means[1] else 0.0 if means[0] < means[1] else 0.5)
    features = np.concatenate(features)
    sides = make_bag_tensors(features, lengths, [0.0] * len(lengths), np.concatenate(sims), features[:, :4], labels)
    return make_pair_tensors(sides, preferences)


def test_preference_pairs_alone_teach_sentence_scores():
    pairs = synthetic_pairs()
    empty = synthetic().subset([])
    cfg = FractalTrainConfig(epochs=40, weights={"cosine": 0.0, "correlation": 0.0}, hidden=16, batch_bags=32)
    model, history = fit(empty, cfg, pairs)
    assert history[-1]["preference"] < history[0]["preference"]
    assert "bag" not in history[0]
    sides = pairs.sides
    assert sentence_auc(sides.sentence_labels.numpy(), model.score(sides.features).numpy())["auc_roc"] > 0.9


def test_pairs_join_bags_and_all_sentences_feed_the_priors():
    data, pairs = synthetic(), synthetic_pairs(40)
    cfg = FractalTrainConfig(epochs=3, hidden=16, batch_bags=32, pair_weight=0.5)
    _, history = fit(data, cfg, pairs)
    assert {"bag", "cosine", "correlation", "preference", "loss"} <= set(history[0])
    _, without = fit(data, cfg.model_copy(update={"pair_weight": 0.0}), pairs)
    assert "preference" not in without[0]
    with pytest.raises(ConfigError, match="nothing to train on"):
        fit(data.subset([]), cfg)
    with pytest.raises(ValueError, match="two per pair"):
        make_pair_tensors(data, [1.0])


def test_curriculum_moves_weights_linearly_to_the_configured_ones():
    cfg = FractalTrainConfig(loss_preset="multispanqa", curriculum_start={"bag": 1.0, "cosine": 0.0,
                                                                          "correlation": 0.0}, curriculum_epochs=4)
    assert cfg.weights_at_epoch(0).cosine == 0.0
    assert cfg.weights_at_epoch(2).cosine == pytest.approx(0.05)
    assert cfg.weights_at_epoch(4) == cfg.weights_at_epoch(9) == cfg.loss_weights()
    with pytest.raises(ConfigError, match="curriculum_start: unknown term"):
        FractalTrainConfig(curriculum_start={"cosin": 0.1}).weights_at_epoch(0)
    _, history = fit(synthetic(40), cfg.model_copy(update={"epochs": 2, "hidden": 8}))
    assert len(history) == 2
