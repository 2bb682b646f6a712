"""Using FRACTAL sentence scores to fine-tune LLMs: weighted SFT, best-of-n and DPO pairs.

A FRACTAL scorer turns one response-level label into a score in [0, 1] for every sentence (higher =
better). Two ways to spend those scores on an LLM:

**(a) Sentence-weighted SFT** (``adaptlab fractal sft``, :mod:`adaptlab.recipes.fractal_sft`): each
response token's cross-entropy is scaled by the score of its sentence, or sentences scoring below a
threshold are masked out. The scores and the bags are joined here (:func:`locate_sentences` gives each
scored sentence its character span in the response); the spans and their weights then take the SFT path
of ``adaptlab lm train`` (:mod:`adaptlab.lm.sft_examples`, :mod:`adaptlab.lm.sft_data`), and the loss
``sum w_t CE_t / sum w_t`` over the accumulated batch is :class:`adaptlab.tuning.trainer.StrategyTrainer`'s.

**(b) The scorer as a process reward.** A :data:`ScoreFn` maps (context, sentences) to sentence scores.
A response's reward reduces its sentence scores by ``min`` (one bad step spoils the response, as for
math reasoning) or ``mean``. :func:`best_of_n` reranks sampled candidates by reward;
:func:`preference_pairs` takes, per prompt, the best response as ``chosen`` and the worst as
``rejected``, and :func:`write_dpo_jsonl` writes them in the ``{"prompt", "chosen", "rejected"}``
JSONL format that TRL's ``DPOTrainer`` reads (rewards are kept as extra columns).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from adaptlab.errors import ConfigError, DataError
from adaptlab.fractal.bags import split_sentences
from adaptlab.runs import atomic_write_text, refuse_existing

# ------------------------------------------------------------------------------ (a) sentence-weighted SFT


def locate_sentences(response: str, sentences: Sequence[str]) -> list[tuple[int, int]]:
    """Character offsets of ``sentences`` in ``response``, each searched after the previous one.

    Joins the output of ``adaptlab fractal score`` (sentences and scores, no offsets) to the response text.
    """
    offsets: list[tuple[int, int]] = []
    cursor = 0
    for i, sentence in enumerate(sentences):
        start = response.find(sentence, cursor)
        if start < 0:
            raise DataError(
                f"sentence {i} ({sentence[:60]!r}) is not found in the response after offset {cursor}; "
                "the sentences must be in order and copied verbatim from the response"
            )
        offsets.append((start, start + len(sentence)))
        cursor = start + len(sentence)
    return offsets


# ------------------------------------------------------------------------------ (b) scores as process reward

ScoreFn = Callable[[str | None, list[str]], list[float]]
"""(context, sentences) -> one score in [0, 1] per sentence, higher = better."""

Reduce = Literal["min", "mean"]


def response_reward(scores: Sequence[float], reduce: Reduce = "min") -> float:
    """Reward of a response from its sentence scores: ``min`` (weakest step) or ``mean``."""
    if reduce not in ("min", "mean"):
        raise ConfigError(f"reduce={reduce!r} is not known; use 'min' or 'mean'")
    if len(scores) == 0:
        raise DataError("a response with no sentence scores has no reward")
    return float(min(scores)) if reduce == "min" else float(sum(scores) / len(scores))


def _reward(context: str | None, response: str, score_fn: ScoreFn, reduce: Reduce) -> float:
    """Reward of one response; a response with no sentences (blank) gets 0.0, the lowest possible reward."""
    sentences = [s for s, _, _ in split_sentences(response)]
    if not sentences:
        return 0.0
    scores = list(score_fn(context, sentences))
    if len(scores) != len(sentences) or not all(0.0 <= float(s) <= 1.0 for s in scores):
        raise ValueError(f"score_fn must return one score in [0, 1] per sentence; got {scores!r} for {len(sentences)}")
    return response_reward(scores, reduce)


def best_of_n(
    context: str | None, candidates: Sequence[str], score_fn: ScoreFn, reduce: Reduce = "min"
) -> tuple[int, list[float]]:
    """Index of the best candidate (the first one on ties) and every candidate's reward."""
    if not candidates:
        raise DataError("best_of_n needs at least one candidate")
    rewards = [_reward(context, c, score_fn, reduce) for c in candidates]
    return max(range(len(rewards)), key=lambda i: (rewards[i], -i)), rewards


def preference_pairs(
    items: Sequence[dict[str, Any]], score_fn: ScoreFn, reduce: Reduce = "min", min_margin: float = 0.0
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """One DPO pair per prompt: its best response as ``chosen``, its worst as ``rejected``.

    ``items`` are ``{"prompt": str, "responses": [str, ...]}``. A prompt is skipped, and counted, when it
    has fewer than 2 responses (``skipped_too_few_responses``) or when the reward margin is 0 or below
    ``min_margin`` (``skipped_small_margin``). Returns ``(pairs, counts)``.
    """
    pairs: list[dict[str, Any]] = []
    counts = {"prompts": len(items), "pairs": 0, "skipped_too_few_responses": 0, "skipped_small_margin": 0}
    for n, item in enumerate(items):
        prompt, responses = item.get("prompt"), item.get("responses")
        if (
            not isinstance(prompt, str)
            or not isinstance(responses, list)
            or not all(isinstance(r, str) for r in responses)
        ):
            raise DataError(f"item {n} (id {item.get('id')!r}) needs 'prompt': str and 'responses': [str, ...]")
        if len(responses) < 2:
            counts["skipped_too_few_responses"] += 1
            continue
        best, rewards = best_of_n(prompt, responses, score_fn, reduce)
        worst = min(range(len(rewards)), key=lambda i: (rewards[i], i))
        margin = rewards[best] - rewards[worst]
        if margin <= 0 or margin < min_margin:
            counts["skipped_small_margin"] += 1
            continue
        pairs.append(
            {
                "prompt": prompt,
                "chosen": responses[best],
                "rejected": responses[worst],
                "chosen_reward": rewards[best],
                "rejected_reward": rewards[worst],
            }
        )
    counts["pairs"] = len(pairs)
    return pairs, counts


def write_dpo_jsonl(pairs: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write pairs as JSONL for TRL's ``DPOTrainer`` (one object per line); never overwrites ``path``."""
    path = refuse_existing(path, "DPO dataset")
    for n, pair in enumerate(pairs):
        if not all(isinstance(pair.get(key), str) for key in ("prompt", "chosen", "rejected")):
            raise DataError(f"pair {n} needs string fields 'prompt', 'chosen' and 'rejected'")
    return atomic_write_text(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
