"""FRACTAL's priors on sentence scores, and the combined training loss.

A bag label alone says little about *which* sentences are good. The priors add what we believe
about sentences regardless of the label. All inputs follow the flat batch convention of
:mod:`adaptlab.fractal.aggregate`: ``scores [N]`` in (0, 1), ``bag_index [N]`` in ``0..B-1``.
Embeddings and similarities are treated as constants (detached): the priors shape the scores,
never the encoder.

Cosine prior — a sentence's score should follow its similarity to the context (question or
document). With ``sim_i = cos(e_i, c_bag(i))`` rescaled to [0, 1] within each bag,
``sim'_i = (sim_i − min_bag sim) / (max_bag sim − min_bag sim)``:

    L_cos = mean over sentences i of (s_i − sim'_i)²

A bag whose similarities are all equal (every single-sentence bag, among others) carries no
ranking information and the rescaling is undefined, so its sentences are left out of the mean.

Correlation prior — sentences that say similar things should get similar scores. Per bag ``b``,
with ``w_ij = max(0, cos(e_i, e_j))``:

    L_corr(b) = Σ_{i≠j in b} w_ij (s_i − s_j)² / Σ_{i≠j in b} w_ij,     L_corr = mean over bags of L_corr(b)

Bags with ``Σ w_ij = 0`` (single-sentence bags, or all pairs orthogonal or opposed) are left out.

Hybrid prior — where some bags come with sentence labels ``z_i``, use them directly:

    L_hyb = mean over labelled sentences i of −[z_i log s_i + (1 − z_i) log(1 − s_i)]

with ``s_i`` clamped to ``[eps, 1 − eps]``. ``label_mask [N]`` selects the labelled sentences; a
bag-level mask ``bag_has_labels [B]`` becomes a sentence mask as ``bag_has_labels[bag_index]``.

Total loss: ``λ_bag·L_bag + λ_cos·L_cos + λ_corr·L_corr + λ_hyb·L_hyb``. A term whose prior has
nothing to average over is 0. The paper's weights are the presets in ``LOSS_WEIGHT_PRESETS``:
bag 0.8 / cosine 0.1 / correlation 0.1 for MultiSpanQA (MAX bags) and PRM800K, and
0.7 / 0.2 / 0.1 for QA-Feedback; hybrid is 0 unless a config turns it on. :func:`weights_at`
moves linearly from a start to an end set of weights over training (a curriculum).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from adaptlab.errors import ConfigError
from adaptlab.fractal.aggregate import DEFAULT_EPS, check_bag_index, flat_to_padded, get_bag_loss


def _zero_like(scores: torch.Tensor) -> torch.Tensor:
    """A 0 that stays connected to the graph, so ``backward()`` works when a prior has no terms."""
    return scores.sum() * 0.0


def context_similarity(
    sentence_embeddings: torch.Tensor, context_embeddings: torch.Tensor, bag_index: torch.Tensor
) -> torch.Tensor:
    """``cos(e_i, c_bag(i))`` for each sentence: ``[N, D]`` and ``[B, D]`` -> ``[N]``."""
    check_bag_index(bag_index, context_embeddings.shape[0], sentence_embeddings.shape[0])
    return F.cosine_similarity(sentence_embeddings, context_embeddings[bag_index], dim=-1)


def cosine_prior(
    scores: torch.Tensor, similarities: torch.Tensor, bag_index: torch.Tensor, n_bags: int, min_spread: float = 1e-8
) -> torch.Tensor:
    """``mean_i (s_i − sim'_i)²`` with ``sim'`` min-max rescaled per bag; bags with spread <= ``min_spread`` skipped."""
    check_bag_index(bag_index, n_bags, scores.shape[0])
    if similarities.shape != scores.shape:
        raise ValueError(f"similarities {tuple(similarities.shape)} and scores {tuple(scores.shape)} differ in shape")
    sims = similarities.detach().to(scores.dtype)
    low = sims.new_zeros(n_bags).scatter_reduce(0, bag_index, sims, "amin", include_self=False)
    high = sims.new_zeros(n_bags).scatter_reduce(0, bag_index, sims, "amax", include_self=False)
    spread = (high - low)[bag_index]
    usable = spread > min_spread
    if not usable.any():
        return _zero_like(scores)
    rescaled = (sims[usable] - low[bag_index][usable]) / spread[usable]
    return (scores[usable] - rescaled).pow(2).mean()


def correlation_prior(
    scores: torch.Tensor, sentence_embeddings: torch.Tensor, bag_index: torch.Tensor, n_bags: int
) -> torch.Tensor:
    """Mean over bags of ``Σ_{i≠j} w_ij (s_i − s_j)² / Σ_{i≠j} w_ij``, ``w_ij = max(0, cos(e_i, e_j))``."""
    padded_scores, mask = flat_to_padded(scores, bag_index, n_bags)
    unit_embeddings = F.normalize(sentence_embeddings.detach().to(scores.dtype), dim=-1)
    padded_emb, _ = flat_to_padded(unit_embeddings, bag_index, n_bags)
    weights = torch.bmm(padded_emb, padded_emb.transpose(1, 2)).clamp(min=0)
    pair_mask = mask[:, :, None] & mask[:, None, :]
    pair_mask &= ~torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
    weights = weights * pair_mask
    squared_gaps = (padded_scores[:, :, None] - padded_scores[:, None, :]).pow(2)
    total_weight = weights.sum(dim=(1, 2))
    usable = total_weight > 0
    if not usable.any():
        return _zero_like(scores)
    per_bag = (weights * squared_gaps).sum(dim=(1, 2))[usable] / total_weight[usable]
    return per_bag.mean()


def hybrid_prior(
    scores: torch.Tensor, sentence_labels: torch.Tensor, label_mask: torch.Tensor, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """Sentence-level BCE over the sentences where ``label_mask`` is True; 0 when none are."""
    if sentence_labels.shape != scores.shape or label_mask.shape != scores.shape:
        raise ValueError("scores, sentence_labels and label_mask must all have shape [N]")
    mask = label_mask.bool()
    if not mask.any():
        return _zero_like(scores)
    p = scores[mask].clamp(eps, 1 - eps)
    z = sentence_labels[mask].to(p.dtype)
    return -(z * torch.log(p) + (1 - z) * torch.log1p(-p)).mean()


@dataclass(frozen=True)
class LossWeights:
    """The λ's of the FRACTAL loss. All must be >= 0."""

    bag: float
    cosine: float
    correlation: float
    hybrid: float = 0.0

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) < 0:
                raise ConfigError(f"loss weight {field.name!r} must be >= 0, got {getattr(self, field.name)}")


_PAPER_DEFAULT = LossWeights(bag=0.8, cosine=0.1, correlation=0.1)
LOSS_WEIGHT_PRESETS: dict[str, LossWeights] = {
    "default": _PAPER_DEFAULT,
    "max": _PAPER_DEFAULT,
    "multispanqa": _PAPER_DEFAULT,
    "prm800k": _PAPER_DEFAULT,
    "qa_feedback": LossWeights(bag=0.7, cosine=0.2, correlation=0.1),
}


def get_loss_weights(name: str) -> LossWeights:
    """Look up a preset by its config name; an unknown name is a :class:`ConfigError`."""
    if name not in LOSS_WEIGHT_PRESETS:
        raise ConfigError(f"unknown loss-weight preset {name!r}; choose one of: {', '.join(LOSS_WEIGHT_PRESETS)}")
    return LOSS_WEIGHT_PRESETS[name]


def weights_at(step: int, total: int, start_weights: LossWeights, end_weights: LossWeights) -> LossWeights:
    """Linear curriculum: ``λ(t) = (1 − t)·start + t·end`` with ``t = clamp(step / total, 0, 1)``."""
    if total <= 0:
        raise ValueError(f"total steps must be > 0, got {total}")
    t = min(max(step / total, 0.0), 1.0)
    start, end = asdict(start_weights), asdict(end_weights)
    return LossWeights(**{name: (1 - t) * start[name] + t * end[name] for name in start})


def fractal_loss(
    bag_scores: torch.Tensor,
    bag_labels: torch.Tensor,
    scores: torch.Tensor,
    bag_index: torch.Tensor,
    n_bags: int,
    weights: LossWeights,
    *,
    bag_loss: str = "bce",
    similarities: torch.Tensor | None = None,
    sentence_embeddings: torch.Tensor | None = None,
    sentence_labels: torch.Tensor | None = None,
    label_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The weighted FRACTAL loss; returns ``{"loss": total, <term>: value, ...}`` for logging.

    ``bag_scores``/``bag_labels`` are the already aggregated bag scores (or Bradley–Terry
    probabilities for pairs) and their targets; ``scores``/``bag_index``/``n_bags`` are the
    sentence scores the priors act on. A term with weight 0 is not computed; a term with a
    positive weight whose inputs are missing is a ``ValueError``.
    """
    terms: dict[str, torch.Tensor] = {}
    if weights.bag > 0:
        terms["bag"] = get_bag_loss(bag_loss)(bag_scores, bag_labels, DEFAULT_EPS)
    if weights.cosine > 0:
        if similarities is None:
            raise ValueError("cosine prior has weight > 0 but no similarities were given")
        terms["cosine"] = cosine_prior(scores, similarities, bag_index, n_bags)
    if weights.correlation > 0:
        if sentence_embeddings is None:
            raise ValueError("correlation prior has weight > 0 but no sentence_embeddings were given")
        terms["correlation"] = correlation_prior(scores, sentence_embeddings, bag_index, n_bags)
    if weights.hybrid > 0:
        if sentence_labels is None or label_mask is None:
            raise ValueError("hybrid prior has weight > 0 but sentence_labels or label_mask is missing")
        terms["hybrid"] = hybrid_prior(scores, sentence_labels, label_mask)
    total = sum((getattr(weights, name) * value for name, value in terms.items()), _zero_like(scores))
    return {"loss": total, **terms}
