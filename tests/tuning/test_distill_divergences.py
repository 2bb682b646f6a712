"""Causal KD losses (``tuning/distill/divergences.py``) against TRL 1.16's ``GKDTrainer.generalized_jsd_loss`` and
against a float64 reference written here with plain probabilities, on the logits of tiny random Llama and Qwen2
teacher/student pairs (teacher and student of different sizes over one vocabulary), on one padded batch whose
prompts are masked."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from adaptlab.tuning.distill.divergences import (
    common_vocabulary,
    restrict_to_top_k,
    teacher_top_k,
    token_divergence,
    weighted_mean,
)

VOCAB = 64
TOLERANCE = 1e-5


def pair(family: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(student, teacher): 2 layers of 16 against 3 layers of 32, same vocabulary."""
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM),
                                 "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[family]
    models = []
    for seed, (hidden, layers) in enumerate([(16, 2), (32, 3)]):
        torch.manual_seed(seed)
        config = config_class(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden,
                              num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                              max_position_embeddings=64)
        models.append(model_class(config).eval())
    return models[0], models[1]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def batch(request):
    """Shifted logits of both models on 3 rows of 14 tokens, the first 3-5 of each a prompt, one row padded."""
    student, teacher = pair(request.param)
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(4, VOCAB, (3, 14), generator=generator)
    labels = input_ids.clone()
    for row, prompt in enumerate([3, 5, 4]):
        labels[row, :prompt] = -100
    labels[2, 10:] = -100  # padding
    with torch.no_grad():
        # larger logits than a fresh init gives, so the distributions are far from uniform
        student_logits = 6 * student(input_ids=input_ids).logits[:, :-1]
        teacher_logits = 6 * teacher(input_ids=input_ids).logits[:, :-1]
    return student_logits, teacher_logits, labels[:, 1:]


def trl_loss(student_logits, teacher_logits, labels, beta, temperature) -> torch.Tensor:
    pytest.importorskip("trl", reason="trl (the dev extra) is not installed; the losses are checked against TRL's")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd import GKDTrainer

    return GKDTrainer.generalized_jsd_loss(student_logits, teacher_logits, labels=labels, beta=beta,
                                           temperature=temperature)


def ours(student_logits, teacher_logits, labels, loss, temperature, beta=0.5) -> torch.Tensor:
    mask = labels != -100
    return weighted_mean(token_divergence(student_logits[mask], teacher_logits[mask], loss, temperature, beta))


def reference(student_logits, teacher_logits, labels, loss, temperature, beta=0.5, top_k=None) -> float:
    """Float64 with probabilities, not log-probabilities: KL(p||q) = sum p log(p / q), M = beta p_t + (1-beta) p_s;
    top-k: both restricted to the teacher's k most likely tokens and divided by their mass there."""
    mask = (labels != -100).numpy()
    values = []
    for s, t in zip(student_logits.numpy()[mask].astype(np.float64), teacher_logits.numpy()[mask].astype(np.float64),
                    strict=True):
        p_s, p_t = np.exp(s / temperature), np.exp(t / temperature)
        if top_k is not None:
            keep = np.argsort(-t)[:top_k]
            p_s, p_t = p_s[keep], p_t[keep]
        p_s, p_t = p_s / p_s.sum(), p_t / p_t.sum()

        def kl(p, q):
            return float(np.sum(p * np.log(p / q)))

        if loss == "forward_kl":
            values.append(kl(p_t, p_s))
        elif loss == "reverse_kl":
            values.append(kl(p_s, p_t))
        else:
            m = beta * p_t + (1 - beta) * p_s
            values.append(beta * kl(p_t, m) + (1 - beta) * kl(p_s, m))
    return float(np.mean(values))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
@pytest.mark.parametrize(("beta", "loss"), [(0.0, "forward_kl"), (0.5, "jsd"), (1.0, "reverse_kl"), (0.1, "jsd"),
                                             (0.9, "jsd")])
def test_losses_equal_trl_and_a_float64_reference(batch, beta, loss, temperature):
    student_logits, teacher_logits, labels = batch
    ours_value = ours(student_logits, teacher_logits, labels, loss, temperature, beta)
    expected = reference(student_logits, teacher_logits, labels, loss, temperature, beta)
    assert expected > 1e-3  # the models disagree: an all-zero loss would not pass
    assert abs(float(ours_value) - expected) < TOLERANCE
    trl_value = trl_loss(student_logits, teacher_logits, labels, beta, temperature)
    assert abs(float(ours_value) - float(trl_value)) < TOLERANCE
    # jsd at the ends is the KL it approaches (TRL's convention): beta 0 forward, beta 1 reverse
    if beta in (0.0, 1.0):
        assert float(ours(student_logits, teacher_logits, labels, "jsd", temperature, beta)) == float(ours_value)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_gradients_equal_trl(batch, beta):
    student_logits, teacher_logits, labels = batch
    grads = []
    for compute in (lambda s: ours(s, teacher_logits, labels, "jsd", 2.0, beta),
                    lambda s: trl_loss(s, teacher_logits, labels, beta, 2.0)):
        leaf = student_logits.clone().requires_grad_(True)
        compute(leaf).backward()
        grads.append(leaf.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-7)
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl", "jsd"])
def test_top_k_compares_both_renormalised_over_the_teachers_top_k(batch, loss):
    student_logits, teacher_logits, labels = batch
    mask = labels != -100
    student, teacher = student_logits[mask], teacher_logits[mask]
    value = weighted_mean(token_divergence(*restrict_to_top_k(student, *teacher_top_k(teacher, 8)), loss, 2.0))
    assert abs(float(value) - reference(student_logits, teacher_logits, labels, loss, 2.0, top_k=8)) < TOLERANCE
    # top-k over the whole vocabulary is the full loss
    full = weighted_mean(token_divergence(*restrict_to_top_k(student, *teacher_top_k(teacher, VOCAB)), loss, 2.0))
    assert abs(float(full) - float(weighted_mean(token_divergence(student, teacher, loss, 2.0)))) < TOLERANCE


def test_the_loss_is_never_negative_where_the_distributions_agree():
    """Rounding makes the plain float32 sum slightly negative for some near-equal rows; the loss is clamped at 0."""
    generator = torch.Generator().manual_seed(0)
    student = 8 * torch.randn(500, 50, generator=generator)
    teacher = student + 1e-6 * torch.randn(500, 50, generator=generator)
    log_s, log_t = torch.log_softmax(student, -1), torch.log_softmax(teacher, -1)
    unclamped = (log_t.exp() * (log_t - log_s)).sum(-1)
    assert (unclamped < 0).any()  # what the clamp is for
    for loss in ("forward_kl", "reverse_kl", "jsd"):
        values = token_divergence(student, teacher, loss)
        assert (values >= 0).all() and float(values.max()) < 1e-5


def test_masked_teacher_logits_give_a_finite_loss_and_gradient():
    """A teacher with -inf logits (banned tokens): they add nothing to the forward KL, and the JSD's mixture keeps
    the student's mass there finite; no NaN in the loss or the student's gradient."""
    student = torch.randn(5, 10, requires_grad=True)
    teacher = torch.randn(5, 10)
    teacher[:, 7:] = float("-inf")
    for loss in ("forward_kl", "jsd"):
        value = token_divergence(student, teacher, loss).sum()
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(student.grad).all()
        student.grad = None


def test_weighted_mean_and_common_vocabulary():
    values = torch.tensor([1.0, 2.0, 4.0])
    assert float(weighted_mean(values)) == pytest.approx(7 / 3)
    assert float(weighted_mean(values, torch.tensor([0.0, 1.0, 3.0]))) == pytest.approx(14 / 4)
    empty = weighted_mean(torch.zeros(0, requires_grad=True))
    assert float(empty.detach()) == 0.0 and empty.requires_grad
    student, teacher = common_vocabulary(torch.zeros(2, 40), torch.zeros(2, 48))
    assert student.shape == teacher.shape == (2, 40)
