"""The prior mix: its formula, how it is fitted on held-out training bags, and that it keeps FRACTAL at its prior."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

import adaptlab.fractal.train as train_module
from adaptlab.errors import ConfigError
from adaptlab.fractal.features import cosine_rows, pair_features
from adaptlab.fractal.model import load_scorer, save_scorer
from adaptlab.fractal.prior_mix import (
    MIX_GRID,
    PriorMix,
    bag_concordance,
    feature_prior,
    fit_prior_mix,
    gain_confidence,
    mixed_logits,
)
from adaptlab.fractal.selection import choose_prior_balance, scaled_cosine_weights
from adaptlab.fractal.tensors import make_bag_tensors, make_pair_tensors
from adaptlab.fractal.train import FractalTrainConfig, fit
from adaptlab.metrics.ranking import sentence_auc


def one_bag_per_question(n_questions: int, seed: int, dim: int = 16):
    """Half the questions give a positive bag (one answer among 2-4 distractors), the other half a negative bag.

    An answer leans toward its question (the cosine prior ranks it high); so does one distractor per bag, which
    keeps the prior imperfect. No question has both labels, so a head that reads the question embedding can
    learn each training question's label instead of which sentence earns it (it cannot carry over).
    """
    rng = np.random.default_rng(seed)
    features, lengths, labels, sentence_labels, sims = [], [], [], [], []
    for question in range(n_questions):
        context = rng.normal(size=dim)
        context /= np.linalg.norm(context)
        n, positive = int(rng.integers(3, 6)), question % 2 == 0
        lean = np.array([1.0 if positive else 0.0, 0.6] + [0.0] * (n - 2))
        sentences = lean[:, None] * context + rng.normal(size=(n, dim)) * 1.2 / np.sqrt(dim)
        sentences = (sentences / np.linalg.norm(sentences, axis=1, keepdims=True)).astype(np.float32)
        contexts = np.repeat(context[None].astype(np.float32), n, axis=0)
        features.append(pair_features(sentences, contexts, np.ones(n, dtype=bool)))
        sims.append(cosine_rows(sentences, contexts))
        lengths.append(n)
        labels.append(float(positive))
        sentence_labels += [float(positive)] + [0.0] * (n - 1)
    features = np.concatenate(features)
    data = make_bag_tensors(features, lengths, labels, np.concatenate(sims), features[:, :dim], sentence_labels)
    return data, [f"q{seed}-{i}" for i in range(n_questions)]


def auc(data, scores) -> float:
    return sentence_auc(data.sentence_labels.numpy(), scores.numpy())["auc_roc"]


def test_feature_prior_is_the_cosine_of_the_sentence_and_context_blocks():
    rng = np.random.default_rng(0)
    sentences, contexts = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    has_context = np.array([True, True, False, True, True])
    features = torch.from_numpy(pair_features(sentences, contexts, has_context))
    expected = np.where(has_context, cosine_rows(sentences, contexts), 0.0)
    assert feature_prior(features).numpy() == pytest.approx(expected, abs=1e-6)


def test_mixed_logits_follow_the_formula():
    mix = PriorMix(head_weight=0.25, scale=2.0, bias=-1.0, prior_mean=0.1, prior_std=0.2, head_mean=-1.0,
                   head_std=4.0)
    prior, head = torch.tensor([0.5, 0.1]), torch.tensor([3.0, -5.0])
    # u = 0.75 * (p - 0.1) / 0.2 + 0.25 * (h + 1) / 4;  logit = 2u - 1
    expected = [2 * (0.75 * 2.0 + 0.25 * 1.0) - 1, 2 * (0.0 + 0.25 * -1.0) - 1]
    assert mixed_logits(prior, head, mix).tolist() == pytest.approx(expected)


def flat_bags(n_bags: int = 60, seed: int = 0):
    """Bags of 4 sentences, every other one positive (MAX) with one positive sentence; sentence labels [N]."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((n_bags, 4))
    labels[1::2, 0] = 1.0
    noise = torch.from_numpy(rng.normal(size=n_bags * 4))
    bag_index = torch.arange(n_bags).repeat_interleave(4)
    return torch.from_numpy(labels.flatten()), noise, bag_index, torch.from_numpy(labels.max(axis=1))


def test_fit_prior_mix_takes_what_ranks_the_bags():
    truth, noise, bag_index, bag_labels = flat_bags()
    head_wins = fit_prior_mix(noise, 4 * truth + 0.1 * noise, bag_index, 60, bag_labels, "max", 0.1)
    assert head_wins.head_weight == 1.0 and len(head_wins.grid_losses) == len(MIX_GRID) == 11
    assert head_wins.grid_concordance[-1] == 1.0 > head_wins.grid_concordance[0] and head_wins.holdout_bags == 60
    assert head_wins.grid_losses[-1] < head_wins.grid_losses[5]  # several λ rank every bag; the loss decides
    prior_wins = fit_prior_mix(truth + 0.1 * noise, noise, bag_index, 60, bag_labels, "max", 0.1)
    assert prior_wins.head_weight == 0.0 and prior_wins.scale > 1.0
    both = fit_prior_mix(truth + noise, truth - noise, bag_index, 60, bag_labels, "max", 0.1)
    assert 0.3 <= both.head_weight <= 0.7  # each alone is noisy; their mean cancels the noise


def test_bag_concordance_is_the_auc_for_binary_labels_and_orders_soft_ones():
    scores = torch.tensor([0.9, 0.2, 0.5, 0.5, 0.1])
    binary = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    # positives 0.9, 0.5 against negatives 0.2, 0.5, 0.1: 3 + (1 + 0.5 + 1) = 5.5 of 6 pairs
    assert bag_concordance(scores, binary) == pytest.approx(5.5 / 6)
    soft = torch.tensor([0.8, 0.1, 0.4, 0.4, 0.0])  # orders 9 pairs; the tied labels 0.4 / 0.4 order none
    assert bag_concordance(scores, soft, chunk=2) == pytest.approx(9 / 9)
    assert math.isnan(bag_concordance(scores, torch.zeros(5)))


def test_fit_prior_mix_keeps_the_prior_when_the_bag_labels_say_nothing():
    truth, noise, bag_index, _ = flat_bags()
    mix = fit_prior_mix(truth, noise, bag_index, 60, torch.zeros(60, dtype=torch.float64), "max", 0.1)
    assert mix.head_weight == 0.0 and set(mix.grid_concordance) == {None}
    scores = torch.sigmoid(mixed_logits(truth, noise, mix))
    assert scores[truth == 1].min() > scores[truth == 0].max()  # still the prior's ranking, not a constant


def test_a_head_that_wins_on_few_bags_by_chance_does_not_replace_the_prior():
    rng = np.random.default_rng(3)  # 16 bags, prior and head both noise; the head happens to rank them better
    bag_index, labels = torch.arange(16).repeat_interleave(4), torch.tensor([i % 2 for i in range(16)]).double()
    mix = fit_prior_mix(torch.from_numpy(rng.normal(size=64)), torch.from_numpy(rng.normal(size=64)), bag_index, 16,
                        labels, "max", 0.1)
    concordance = [-1.0 if c is None else c for c in mix.grid_concordance]
    assert max(concordance) > concordance[0] + 0.1  # without the check the head would get weight 0.7
    assert mix.head_weight == 0.0 and mix.gain_confidence < 0.9


def test_gain_confidence_counts_bootstrap_resamples_where_the_scores_rank_better():
    labels = torch.tensor([1.0, 0.0] * 20)
    truth = labels + 0.01 * torch.arange(40.0)
    assert gain_confidence(truth, -truth, labels) == 1.0
    assert gain_confidence(-truth, truth, labels) == 0.0
    assert gain_confidence(truth, truth, labels) == 0.0  # no gain is no gain
    assert gain_confidence(truth, -truth, torch.zeros(40)) == 0.0  # nothing ordered


def test_prior_mix_keeps_fractal_at_its_prior_when_bag_training_overfits():
    train, groups = one_bag_per_question(40, seed=0)
    test, _ = one_bag_per_question(200, seed=1)
    prior = auc(test, test.similarities)
    cfg = FractalTrainConfig(epochs=20, hidden=64, dropout=0.0, weight_decay=0.0, batch_bags=10,
                             weights={"cosine": 0.0, "correlation": 0.0}, prior_folds=3, prior_weight_scales=[1.0])
    memorising, _ = fit(train, cfg.model_copy(update={"context_block": True, "prior_mix": False}))
    without_block, _ = fit(train, cfg.model_copy(update={"prior_mix": False}))
    mixed, _ = fit(train, cfg, groups=groups)
    assert prior > 0.9
    assert auc(test, memorising.score(test.features)) < prior - 0.15  # the bag loss alone falls below its prior
    assert auc(test, without_block.score(test.features)) > auc(test, memorising.score(test.features)) + 0.03
    assert mixed.prior_mix.head_weight <= 0.2
    assert auc(test, mixed.score(test.features)) >= prior - 0.01


def test_held_out_heads_never_train_on_their_fold_nor_read_sentence_labels(monkeypatch):
    data, _ = one_bag_per_question(18, seed=2)
    groups = [f"g{b // 2}" for b in range(18)]  # two bags per question
    bag_of_first_value = {float(data.features[data.starts[b], 0]): b for b in range(18)}
    sides = data.subset(list(range(6)))
    pairs = make_pair_tensors(sides, [1.0, 0.0, 0.5])
    pair_groups = ["g0", "g4", None]
    calls = []
    original = train_module._fit_head

    def spy(fold_data, cfg, fold_pairs, encoder_model):
        firsts = fold_data.features[fold_data.starts[:-1], 0].tolist()
        trained = {bag_of_first_value[value] for value in firsts}
        calls.append((trained, fold_pairs.n_pairs if fold_pairs is not None else 0, cfg.loss_weights()))
        return original(fold_data, cfg, fold_pairs, encoder_model)

    monkeypatch.setattr(train_module, "_fit_head", spy)
    cfg = FractalTrainConfig(epochs=2, hidden=8, prior_folds=3, prior_weight_scales=[1.0, 3.0])
    model, _ = fit(data, cfg, pairs, groups=groups, pair_groups=pair_groups)
    *held_out_heads, final = calls
    assert final[:2] == (set(range(18)), 3)  # the returned head trains on everything ...
    assert asdict(final[2]) == model.prior_mix.loss_weights  # ... with the chosen weights
    assert [round(w.cosine, 6) for _, _, w in held_out_heads] == [0.1] * 3 + [0.3] * 3
    held_out = [set(range(18)) - trained for trained, _, _ in held_out_heads]
    assert set().union(*held_out[:3]) == set(range(18)) and held_out[:3] == held_out[3:]
    for fold, (trained, n_pairs, _) in zip(held_out, held_out_heads):
        assert not fold & trained
        assert all({2 * q, 2 * q + 1} <= fold or not {2 * q, 2 * q + 1} & fold for q in range(9))  # groups whole
        held_groups = {groups[b] for b in fold}
        assert n_pairs == 1 + sum(g not in held_groups for g in ("g0", "g4"))
    monkeypatch.setattr(train_module, "_fit_head", original)
    no_labels = make_bag_tensors(data.features.numpy(), np.diff(data.starts).tolist(), data.bag_labels.tolist(),
                                 data.similarities.numpy(), data.sentence_embeddings.numpy())
    blind, _ = fit(no_labels, cfg, pairs, groups=groups, pair_groups=pair_groups)
    assert blind.prior_mix == model.prior_mix  # sentence labels never enter the mix


def test_a_mixed_scorer_round_trips_and_older_scorers_still_load(tmp_path):
    data, groups = one_bag_per_question(12, seed=3)
    model, _ = fit(data, FractalTrainConfig(epochs=2, hidden=8), groups=groups)
    save_scorer(model, tmp_path / "mixed", {"aggregation": "max"})
    loaded, info = load_scorer(tmp_path / "mixed")
    assert loaded.prior_mix == model.prior_mix and info["prior_mix"]["head_weight"] == model.prior_mix.head_weight
    assert torch.allclose(loaded.score(data.features), model.score(data.features))
    old = FractalTrainConfig(epochs=2, hidden=8, context_block=True, prior_mix=False)
    head, _ = fit(data, old)
    save_scorer(head, tmp_path / "old", {"aggregation": "max"})
    meta_path = tmp_path / "old" / "scorer.json"
    meta = json.loads(meta_path.read_text())
    del meta["head"]["context_block"]  # a scorer saved before the option existed
    meta_path.write_text(json.dumps(meta))
    loaded_old, _ = load_scorer(tmp_path / "old")
    assert loaded_old.prior_mix is None and loaded_old.shape["context_block"] is True
    assert torch.allclose(loaded_old.score(data.features), head.score(data.features))


def test_prior_mix_config_errors():
    with pytest.raises(ConfigError, match="train.prior_mix works with train.encoder=frozen only"):
        FractalTrainConfig(encoder="finetune", prior_mix=True)
    assert FractalTrainConfig(encoder="finetune").uses_prior_mix is False
    assert FractalTrainConfig().uses_prior_mix is True
    data, _ = one_bag_per_question(4, seed=4)
    with pytest.raises(ConfigError, match="needs at least train.prior_folds=5 question groups of labelled bags"):
        fit(data, FractalTrainConfig(epochs=1, hidden=4), groups=["a", "a", "b", "b"])
    with pytest.raises(ConfigError, match="scale 10.0 moves 0.9 of weight to the cosine term, more than the bag"):
        FractalTrainConfig(prior_weight_scales=[1.0, 10.0])
    with pytest.raises(ConfigError, match="scales must be > 0"):
        FractalTrainConfig(prior_weight_scales=[0.0])
    assert FractalTrainConfig(prior_weight_scales=[10.0], prior_mix=False).prior_weight_scales == [10.0]


def test_scaled_cosine_weights_move_weight_from_the_bag_to_the_cosine_term():
    cfg = FractalTrainConfig(loss_preset="multispanqa", weights={"correlation": 0.2})
    assert scaled_cosine_weights(cfg, 3.0) == {"correlation": 0.2, "bag": 0.6, "cosine": 0.3}
    assert scaled_cosine_weights(cfg, 1.0) == {"correlation": 0.2, "bag": 0.8, "cosine": 0.1}
    assert scaled_cosine_weights(cfg.model_copy(update={"loss_preset": "qa_feedback"}), 2.0)["bag"] == 0.5


def test_the_cosine_weight_whose_held_out_mix_ranks_bags_best_is_chosen():
    data, groups = one_bag_per_question(30, seed=5)
    label_of = dict(zip(data.features[:, 0].tolist(), data.sentence_labels.tolist()))

    class StubHead:  # stands in for a trained head: with the larger cosine weight it has learned the answers
        def __init__(self, cosine_weight: float):
            self.knows = cosine_weight > 0.2

        def head_logits(self, features):
            truth = torch.tensor([label_of[v] for v in features[:, 0].tolist()])
            noise = torch.sin(features[:, 1] * 1000)
            return 4 * truth + noise if self.knows else noise

    trained = []

    def train_head(bags, cfg, pairs):
        trained.append(round(cfg.loss_weights().cosine, 6))
        return StubHead(cfg.loss_weights().cosine)

    cfg = FractalTrainConfig(prior_folds=3, prior_weight_scales=[1.0, 3.0])
    weights, mix = choose_prior_balance(data, cfg, train_head, groups)
    assert trained == [0.1] * 3 + [0.3] * 3
    assert weights["cosine"] == 0.3 and weights["bag"] == 0.6 and mix.loss_weights["cosine"] == 0.3
    assert mix.head_weight > 0.5 and mix.gain_confidence >= 0.9
