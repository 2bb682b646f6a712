"""Scorer training: bag-level learning recovers sentence labels on separable synthetic features."""

from __future__ import annotations

import numpy as np
import torch

from adaptlab.fractal.model import load_scorer, save_scorer
from adaptlab.fractal.train import FractalTrainConfig, fit, make_bag_tensors, train_sentences
from adaptlab.metrics.ranking import sentence_auc


def synthetic(n_bags: int = 120, seed: int = 0):
    """Feature 0 marks the positive sentences; a bag is positive when it holds one (MAX)."""
    rng = np.random.default_rng(seed)
    features, lengths, bag_labels, sentence_labels = [], [], [], []
    for b in range(n_bags):
        n = int(rng.integers(2, 6))
        labels = np.zeros(n)
        if b % 2:
            labels[rng.integers(0, n)] = 1
        block = rng.normal(size=(n, 8)).astype(np.float32)
        block[:, 0] = labels * 3 + rng.normal(scale=0.3, size=n)
        features.append(block)
        lengths.append(n)
        bag_labels.append(float(labels.max()))
        sentence_labels.extend(labels.tolist())
    features = np.concatenate(features)
    sims = np.zeros(len(features), dtype=np.float32)
    return make_bag_tensors(features, lengths, bag_labels, sims, features, sentence_labels)


def test_bag_training_learns_which_sentences_make_a_bag_positive():
    data = synthetic()
    cfg = FractalTrainConfig(epochs=40, weights={"cosine": 0.0, "correlation": 0.0}, hidden=16)
    model, history = fit(data, cfg)
    assert history[-1]["loss"] < history[0]["loss"]
    auc = sentence_auc(data.sentence_labels.numpy(), model.score(data.features).numpy())
    assert auc["auc_roc"] > 0.95


def test_pseudo_labels_and_supervised_training_run_and_agree(tmp_path):
    data = synthetic()
    cfg = FractalTrainConfig(epochs=30, pseudo_label=True, weights={"cosine": 0.0, "correlation": 0.0}, hidden=16)
    model, _ = fit(data, cfg)
    assert sentence_auc(data.sentence_labels.numpy(), model.score(data.features).numpy())["auc_roc"] > 0.85
    supervised = train_sentences(data.features, data.sentence_labels, cfg.model_copy(update={"epochs": 150}))
    assert sentence_auc(data.sentence_labels.numpy(), supervised.score(data.features).numpy())["auc_roc"] > 0.95
    save_scorer(supervised, tmp_path / "scorer", {"aggregation": "max"})
    loaded, info = load_scorer(tmp_path / "scorer")
    assert info["aggregation"] == "max"
    assert torch.allclose(loaded.score(data.features), supervised.score(data.features))
