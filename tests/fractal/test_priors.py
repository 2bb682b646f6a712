"""FRACTAL priors, loss-weight presets, the curriculum and the combined loss."""

from __future__ import annotations

import math

import pytest
import torch

from adaptlab.errors import ConfigError
from adaptlab.fractal.aggregate import BAG_LOSSES
from adaptlab.fractal.priors import (
    LOSS_WEIGHT_PRESETS,
    LossWeights,
    context_similarity,
    correlation_prior,
    cosine_prior,
    fractal_loss,
    get_loss_weights,
    hybrid_prior,
    weights_at,
)

D = torch.float64


def test_context_similarity_is_cosine_to_own_context():
    sentences = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    contexts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sims = context_similarity(sentences, contexts, torch.tensor([0, 0, 1]))
    assert sims.tolist() == pytest.approx([1.0, 0.0, 1 / math.sqrt(2)])


def test_cosine_prior_rescales_per_bag_and_skips_flat_bags():
    # bag 0: sims [0.2, 0.6, 0.4] -> [0, 1, 0.5]; bag 1: single sentence; bag 2: all equal -> both skipped.
    scores = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.2, 0.8], dtype=D)
    sims = torch.tensor([0.2, 0.6, 0.4, 0.7, 0.5, 0.5], dtype=D)
    bags = torch.tensor([0, 0, 0, 1, 2, 2])
    assert cosine_prior(scores, sims, bags, 3).item() == pytest.approx((0.1**2 + 0.1**2 + 0.0) / 3)
    # bag 1 with spread: sims [-0.5, 0.5] -> [0, 1]; the mean is over sentences, not bags.
    scores2 = torch.tensor([0.1, 0.9, 0.5, 0.5, 0.5], dtype=D)
    sims2 = torch.tensor([0.2, 0.6, 0.4, -0.5, 0.5], dtype=D)
    expected = (0.01 + 0.01 + 0.0 + 0.25 + 0.25) / 5
    assert cosine_prior(scores2, sims2, torch.tensor([0, 0, 0, 1, 1]), 2).item() == pytest.approx(expected)


def test_cosine_prior_with_no_usable_bag_is_zero_and_backpropagates():
    scores = torch.tensor([0.3, 0.6], requires_grad=True)
    loss = cosine_prior(scores, torch.tensor([0.4, 0.9]), torch.tensor([0, 1]), 2)
    assert loss.item() == 0.0
    loss.backward()
    assert scores.grad.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="differ in shape"):
        cosine_prior(scores, torch.tensor([0.4]), torch.tensor([0, 1]), 2)


def _correlation_by_loops(scores, embeddings, bags, n_bags):
    per_bag = []
    for b in range(n_bags):
        members = [i for i in range(len(bags)) if bags[i] == b]
        num = den = 0.0
        for i in members:
            for j in members:
                if i != j:
                    w = max(0.0, torch.nn.functional.cosine_similarity(embeddings[i], embeddings[j], dim=0).item())
                    num += w * (scores[i].item() - scores[j].item()) ** 2
                    den += w
        if den > 0:
            per_bag.append(num / den)
    return sum(per_bag) / len(per_bag)


def test_correlation_prior_matches_hand_values():
    # bag 0: e1 ∥ e2 (w=1), e3 ⟂ both -> only the pair (1, 2) counts: (0.2 - 0.6)².
    # bag 1: w12 = w23 = 1/√2, w13 = 0 -> ((0.1 - 0.5)² + (0.5 - 0.7)²) / 2.
    # bag 2: opposite directions (w = 0) -> skipped. bag 3: one sentence -> skipped.
    scores = torch.tensor([0.2, 0.6, 0.9, 0.1, 0.5, 0.7, 0.0, 1.0, 0.4], dtype=D)
    embeddings = torch.tensor([[1, 0], [2, 0], [0, 1], [1, 0], [1, 1], [0, 1], [1, 0], [-1, 0], [5, 5]], dtype=D)
    bags = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3])
    expected = ((0.2 - 0.6) ** 2 + ((0.1 - 0.5) ** 2 + (0.5 - 0.7) ** 2) / 2) / 2
    assert correlation_prior(scores, embeddings, bags, 4).item() == pytest.approx(expected)


def test_correlation_prior_matches_loop_reference_on_random_bags():
    torch.manual_seed(1)
    bags = torch.tensor([2, 0, 1, 0, 2, 2, 1, 0, 3, 2])
    scores = torch.rand(10, dtype=D)
    embeddings = torch.randn(10, 4, dtype=D)
    got = correlation_prior(scores, embeddings, bags, 4).item()
    assert got == pytest.approx(_correlation_by_loops(scores, embeddings, bags.tolist(), 4))


def test_correlation_prior_with_only_single_sentence_bags_is_zero():
    scores = torch.tensor([0.2, 0.9], requires_grad=True)
    loss = correlation_prior(scores, torch.randn(2, 3), torch.tensor([0, 1]), 2)
    assert loss.item() == 0.0
    loss.backward()


def test_priors_pass_gradcheck_in_scores():
    torch.manual_seed(2)
    bags = torch.tensor([0, 1, 0, 1, 1, 0])
    sims = torch.rand(6, dtype=D)
    embeddings = torch.randn(6, 3, dtype=D)
    scores = torch.rand(6, dtype=D).requires_grad_()
    assert torch.autograd.gradcheck(lambda s: cosine_prior(s, sims, bags, 2), (scores,))
    assert torch.autograd.gradcheck(lambda s: correlation_prior(s, embeddings, bags, 2), (scores,))


def test_priors_do_not_train_the_embeddings():
    embeddings = torch.randn(4, 3, requires_grad=True)
    sims = torch.rand(4, requires_grad=True)
    scores = torch.rand(4, requires_grad=True)
    bags = torch.tensor([0, 0, 1, 1])
    (cosine_prior(scores, sims, bags, 2) + correlation_prior(scores, embeddings, bags, 2)).backward()
    assert embeddings.grad is None and sims.grad is None and scores.grad is not None


def test_hybrid_prior_is_bce_over_labelled_sentences():
    scores = torch.tensor([0.8, 0.3, 0.5, 0.9], dtype=D)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=D)
    mask = torch.tensor([True, True, False, False])
    assert hybrid_prior(scores, labels, mask).item() == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    bag_has_labels = torch.tensor([False, True])
    bags = torch.tensor([0, 0, 1, 1])
    expected = -(math.log(0.5) + math.log(0.1)) / 2
    assert hybrid_prior(scores, labels, bag_has_labels[bags]).item() == pytest.approx(expected)
    assert hybrid_prior(scores, labels, torch.zeros(4, dtype=torch.bool)).item() == 0.0
    with pytest.raises(ValueError, match="shape"):
        hybrid_prior(scores, labels[:3], mask)


def test_presets_have_the_papers_numbers():
    for name in ("default", "max", "multispanqa", "prm800k"):
        assert LOSS_WEIGHT_PRESETS[name] == LossWeights(bag=0.8, cosine=0.1, correlation=0.1, hybrid=0.0)
    assert get_loss_weights("qa_feedback") == LossWeights(bag=0.7, cosine=0.2, correlation=0.1, hybrid=0.0)
    with pytest.raises(ConfigError, match="unknown loss-weight preset 'squad'.*qa_feedback"):
        get_loss_weights("squad")
    with pytest.raises(ConfigError, match="'cosine' must be >= 0"):
        LossWeights(bag=1.0, cosine=-0.1, correlation=0.0)


def test_weights_at_interpolates_linearly_and_clamps():
    start = LossWeights(bag=1.0, cosine=0.0, correlation=0.0, hybrid=0.4)
    end = LossWeights(bag=0.8, cosine=0.1, correlation=0.1, hybrid=0.0)
    assert weights_at(0, 100, start, end) == start
    assert weights_at(100, 100, start, end) == end
    assert weights_at(250, 100, start, end) == end
    mid = weights_at(25, 100, start, end)
    assert (mid.bag, mid.cosine, mid.correlation, mid.hybrid) == pytest.approx((0.95, 0.025, 0.025, 0.3))
    with pytest.raises(ValueError, match="total steps"):
        weights_at(0, 0, start, end)


def _batch():
    torch.manual_seed(3)
    bags = torch.tensor([0, 0, 0, 1, 1, 2])
    scores = torch.rand(6, dtype=D).mul(0.9).add(0.05).requires_grad_()
    bag_scores = torch.stack([scores[:3].max(), scores[3:5].max(), scores[5]])
    return dict(
        bag_scores=bag_scores,
        bag_labels=torch.tensor([1.0, 0.0, 1.0], dtype=D),
        scores=scores,
        bag_index=bags,
        n_bags=3,
        similarities=torch.rand(6, dtype=D),
        sentence_embeddings=torch.randn(6, 4, dtype=D),
        sentence_labels=torch.tensor([1, 0, 0, 0, 0, 1], dtype=D),
        label_mask=torch.tensor([True, True, True, False, False, False]),
    )


def test_fractal_loss_is_the_weighted_sum_of_its_terms():
    batch = _batch()
    weights = LossWeights(bag=0.7, cosine=0.2, correlation=0.1, hybrid=0.5)
    out = fractal_loss(weights=weights, bag_loss="mse", **batch)
    expected = {
        "bag": BAG_LOSSES["mse"](batch["bag_scores"], batch["bag_labels"], 1e-6),
        "cosine": cosine_prior(batch["scores"], batch["similarities"], batch["bag_index"], 3),
        "correlation": correlation_prior(batch["scores"], batch["sentence_embeddings"], batch["bag_index"], 3),
        "hybrid": hybrid_prior(batch["scores"], batch["sentence_labels"], batch["label_mask"]),
    }
    for name, value in expected.items():
        assert out[name].item() == pytest.approx(value.item())
    total = 0.7 * expected["bag"] + 0.2 * expected["cosine"] + 0.1 * expected["correlation"] + 0.5 * expected["hybrid"]
    assert out["loss"].item() == pytest.approx(total.item())
    out["loss"].backward()
    assert torch.all(torch.isfinite(batch["scores"].grad)) and batch["scores"].grad.abs().sum() > 0


def test_fractal_loss_skips_zero_weights_and_requires_inputs_for_the_rest():
    batch = _batch()
    for key in ("similarities", "sentence_embeddings", "sentence_labels", "label_mask"):
        batch.pop(key)
    out = fractal_loss(weights=LossWeights(bag=1.0, cosine=0.0, correlation=0.0), **batch)
    assert set(out) == {"loss", "bag"}
    assert out["loss"].item() == pytest.approx(BAG_LOSSES["bce"](batch["bag_scores"], batch["bag_labels"], 1e-6).item())
    for weights, missing in [
        (LossWeights(bag=1.0, cosine=0.1, correlation=0.0), "similarities"),
        (LossWeights(bag=1.0, cosine=0.0, correlation=0.1), "sentence_embeddings"),
        (LossWeights(bag=1.0, cosine=0.0, correlation=0.0, hybrid=0.1), "sentence_labels"),
    ]:
        with pytest.raises(ValueError, match=missing):
            fractal_loss(weights=weights, **batch)
    with pytest.raises(ConfigError, match="unknown bag loss"):
        fractal_loss(weights=LOSS_WEIGHT_PRESETS["default"], bag_loss="l1", **batch)
