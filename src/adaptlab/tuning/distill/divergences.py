"""Divergences between a teacher's and a student's next-token distributions: pure functions over logits.

Every function takes rows that are already the target positions (``[N, V]``: one row per target token) and
returns one value per row; the strategy (:mod:`adaptlab.tuning.distill.causal`) selects the rows and averages.

With temperature ``T`` both sides are softened, ``p_t = softmax(z_t / T)`` and ``p_s = softmax(z_s / T)``, and

* **forward KL** (mode covering, Hinton et al. 2015): ``KL(p_t || p_s) = sum_v p_t(v) (log p_t(v) - log p_s(v))``;
* **reverse KL** (mode seeking, MiniLLM): ``KL(p_s || p_t) = sum_v p_s(v) (log p_s(v) - log p_t(v))``;
* **generalised JSD** (GKD, Agarwal et al. 2024, Eq. 1), with the mixture ``M = beta p_t + (1 - beta) p_s``:
  ``JSD_beta = beta KL(p_t || M) + (1 - beta) KL(p_s || M)``.

  As ``beta -> 0``, ``JSD_beta / beta -> KL(p_t || p_s)``; as ``beta -> 1``, ``JSD_beta / (1 - beta) ->
  KL(p_s || p_t)``: the mixture itself vanishes at both ends. So, as in TRL's ``GKDTrainer.generalized_jsd_loss``
  (1.16), ``beta = 0`` *is* the forward KL and ``beta = 1`` the reverse KL, and ``beta = 0.5`` the symmetric JSD.
  ``tests/tuning/test_distill_divergences.py`` checks all three against TRL and a float64 reference.

**Top-k.** :func:`teacher_top_k` keeps the teacher's ``k`` most likely tokens per position and their
log-probabilities (at ``T = 1``); :func:`restrict_to_top_k` then compares both distributions over that set only,
each *renormalised* over it: ``p~(v) = p(v) / sum_{u in K} p(u)`` for ``v in K``. Renormalising the teacher too
(axolotl's top-k KD keeps the teacher's unnormalised top-k mass against a renormalised student) keeps every loss a
divergence between two distributions, hence ``>= 0``; and since ``softmax(log p / T)`` over ``K`` equals the
tempered teacher renormalised over ``K``, log-probabilities cached at ``T = 1`` serve any temperature.

Values are computed in float32 at least (float64 inputs stay float64) and clamped at 0: rounding can leave
``-1e-9`` where the two distributions agree, and a negative KD term would reward the student for nothing.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]


def tempered_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log softmax(z / T)`` over the last dimension, in float32 at least."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return torch.log_softmax(logits.to(dtype) / temperature, dim=-1)


def kl_from_log_probs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum_v p(v) (log p(v) - log q(v))`` per row; a token with ``p(v) = 0`` adds 0 (also when
    ``log q(v) = -inf``), with finite gradients."""
    floor = torch.finfo(log_p.dtype).min
    log_p, log_q = log_p.clamp_min(floor), log_q.clamp_min(floor)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def generalized_jsd(student_log_p: torch.Tensor, teacher_log_p: torch.Tensor, beta: float) -> torch.Tensor:
    """``beta KL(p_t || M) + (1 - beta) KL(p_s || M)``, ``M = beta p_t + (1 - beta) p_s``; ``beta`` 0 is the
    forward KL and 1 the reverse KL (module docstring)."""
    if beta == 0:
        return kl_from_log_probs(teacher_log_p, student_log_p)
    if beta == 1:
        return kl_from_log_probs(student_log_p, teacher_log_p)
    log_m = torch.logsumexp(torch.stack([teacher_log_p + math.log(beta), student_log_p + math.log1p(-beta)]), dim=0)
    return beta * kl_from_log_probs(teacher_log_p, log_m) + (1 - beta) * kl_from_log_probs(student_log_p, log_m)


def token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, loss: Divergence,
                     temperature: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    """One divergence per row of ``[N, V]`` logits (or top-k log-probabilities), ``>= 0``; the teacher is detached.

    ``loss``: ``forward_kl`` ``KL(p_t || p_s)``, ``reverse_kl`` ``KL(p_s || p_t)``, or ``jsd`` (``JSD_beta``).
    """
    student = tempered_log_probs(student_logits, temperature)
    teacher = tempered_log_probs(teacher_logits.detach(), temperature).to(student.dtype)
    if loss == "forward_kl":
        values = kl_from_log_probs(teacher, student)
    elif loss == "reverse_kl":
        values = kl_from_log_probs(student, teacher)
    else:
        values = generalized_jsd(student, teacher, beta)
    return values.clamp_min(0.0)


def teacher_top_k(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, log-probabilities)`` ``[N, k]`` of the teacher's ``k`` most likely tokens per row, at ``T = 1``."""
    log_p = tempered_log_probs(teacher_logits, 1.0)
    top = torch.topk(log_p, k=min(k, log_p.size(-1)), dim=-1)
    return top.indices, top.values


def restrict_to_top_k(student_logits: torch.Tensor, top_ids: torch.Tensor, top_log_probs: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(student logits, teacher log-probabilities)`` over the teacher's top-k ids only, ``[N, k]`` each; fed to
    :func:`token_divergence`, which renormalises both over the k tokens (module docstring)."""
    return student_logits.gather(-1, top_ids.long()), top_log_probs


def common_vocabulary(student_logits: torch.Tensor, teacher_logits: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both cut to the smaller vocabulary (the last dimension): for models whose embedding matrices differ only
    by padding rows beyond the shared tokenizer's tokens (checked before training)."""
    size = min(student_logits.size(-1), teacher_logits.size(-1))
    return student_logits[..., :size], teacher_logits[..., :size]


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_t w_t x_t / sum_t w_t`` (a plain mean without weights); 0, with a gradient graph, when nothing counts."""
    if weights is None:
        weights = torch.ones_like(values)
    weights = weights.to(values.dtype)
    total = weights.sum()
    return torch.where(total > 0, (values * weights).sum() / total.clamp_min(1e-12), (values * weights).sum() * 0.0)
