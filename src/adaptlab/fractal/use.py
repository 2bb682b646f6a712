"""Using FRACTAL sentence scores to fine-tune LLMs: weighted SFT, best-of-n and DPO pairs.

A FRACTAL scorer turns one response-level label into a score in [0, 1] for every sentence (higher =
better). Two ways to spend those scores on an LLM:

**(a) Sentence-weighted SFT.** Train on (prompt, response) with next-token cross-entropy, where each
response token's loss is scaled by the score of the sentence it belongs to (``mode="weight"``), or
where sentences scoring below a threshold are masked out entirely (``mode="mask"``). The loss is

    L = sum_t w_t * CE(logits_{t-1}, y_t) / sum_t w_t,    over the tokens t with y_t != -100,

i.e. a weighted mean over the target tokens of the batch (0 when every weight is 0). With all
weights 1 it is exactly the mean CE that a Hugging Face causal LM returns for ``labels=...``.
Because it is normalised by the weights, it rescales tokens *relative to each other*: a batch whose
sentences all score 0.1 trains as hard as one whose sentences all score 0.9. Masking sets both the
label (-100) and the weight (0), so a masked token never contributes to loss or gradient.

Which tokens belong to which sentence (:func:`token_weights`): the text is ``prompt + response``
tokenised with character offsets (a fast tokenizer is required). A token whose span starts inside
the prompt is a prompt token (label -100, weight 0). A response token belongs to the first sentence
that ends after the token starts, so tokens in the whitespace between sentences take the weight of the
*following* sentence; tokens after the last sentence take weight 1.0. Tokens the tokenizer adds
itself (an empty character span, e.g. BOS or BERT's [CLS]/[SEP]) are never targets; to teach the
model to stop, append the EOS string to the response text, where it gets a real span.

:class:`WeightedSFTCollator` pads a batch and :class:`WeightedSFTTrainer` is a ``transformers.Trainer``
whose ``compute_loss`` applies the weighted loss (TRL is not needed).

**(b) The scorer as a process reward.** A :data:`ScoreFn` maps (context, sentences) to sentence scores.
A response's reward reduces its sentence scores by ``min`` (one bad step spoils the response, as for
math reasoning) or ``mean``. :func:`best_of_n` reranks sampled candidates by reward;
:func:`preference_pairs` takes, per prompt, the best response as ``chosen`` and the worst as
``rejected``, and :func:`write_dpo_jsonl` writes them in the ``{"prompt", "chosen", "rejected"}``
JSONL format that TRL's ``DPOTrainer`` reads (rewards are kept as extra columns).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import transformers

from adaptlab.errors import ConfigError, DataError
from adaptlab.fractal.bags import split_sentences
from adaptlab.runs import atomic_write_text, refuse_existing

IGNORE_INDEX = -100

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


def _check_sentences(response: str, offsets: Sequence[tuple[int, int]], scores: Sequence[float]) -> None:
    if len(offsets) != len(scores):
        raise DataError(
            f"{len(offsets)} sentence offsets but {len(scores)} sentence scores; give one score per sentence"
        )
    previous_end = 0
    for i, ((start, end), score) in enumerate(zip(offsets, scores)):
        if not (previous_end <= start <= end <= len(response)):
            raise DataError(
                f"sentence {i} offsets ({start}, {end}) are out of order, overlapping or outside the response "
                f"(length {len(response)}); offsets must be sorted, disjoint character spans into the response"
            )
        if not (isinstance(score, int | float) and math.isfinite(score) and 0.0 <= score <= 1.0):
            raise DataError(f"sentence {i} score {score!r} is not a number in [0, 1]")
        previous_end = end


def token_weights(
    tokenizer: Any,
    prompt: str,
    response: str,
    sentence_offsets: Sequence[tuple[int, int]],
    sentence_scores: Sequence[float],
    mode: Literal["weight", "mask"] = "weight",
    threshold: float = 0.5,
) -> tuple[list[int], list[int], list[float]]:
    """Tokenise ``prompt + response`` and give each token its label and loss weight (rules in the module doc).

    ``sentence_offsets`` are character spans into ``response``. ``mode="weight"``: a response token's weight
    is its sentence's score. ``mode="mask"``: weight 1 if the score is >= ``threshold``, else weight 0 and
    label -100 (:func:`mask_below`). Returns ``(input_ids, labels, weights)``.
    """
    if mode not in ("weight", "mask"):
        raise ConfigError(f"mode={mode!r} is not known; use 'weight' or 'mask'")
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("token_weights needs a fast tokenizer (character offsets); load it with use_fast=True")
    _check_sentences(response, sentence_offsets, sentence_scores)
    encoding = tokenizer(prompt + response, return_offsets_mapping=True)
    input_ids: list[int] = list(encoding["input_ids"])
    labels: list[int] = []
    weights: list[float] = []
    shift = len(prompt)
    sentence = 0
    for token_id, (start, end) in zip(input_ids, encoding["offset_mapping"]):
        if start == end or start < shift:  # added by the tokenizer, or part of the prompt
            labels.append(IGNORE_INDEX)
            weights.append(0.0)
            continue
        while sentence < len(sentence_offsets) and sentence_offsets[sentence][1] + shift <= start:
            sentence += 1
        labels.append(token_id)
        weights.append(float(sentence_scores[sentence]) if sentence < len(sentence_offsets) else 1.0)
    if mode == "mask":
        labels, weights = mask_below(labels, weights, threshold)
    return input_ids, labels, weights


def mask_below(labels: Sequence[int], weights: Sequence[float], threshold: float) -> tuple[list[int], list[float]]:
    """Mask mode: a target token keeps weight 1 if its score is >= ``threshold``, else gets weight 0 and label -100."""
    kept = [float(w >= threshold) if label != IGNORE_INDEX else 0.0 for label, w in zip(labels, weights)]
    return [label if k > 0 else IGNORE_INDEX for label, k in zip(labels, kept)], kept


def weighted_causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted next-token cross-entropy ``sum w_t CE_t / sum w_t`` over tokens with ``labels != -100``.

    ``logits`` is (batch, seq, vocab); ``labels`` and ``weights`` are (batch, seq) aligned with the inputs, and
    are shifted here (position t-1 predicts token t) as in Hugging Face causal LMs. CE is computed in float32.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    shift_weights = weights[:, 1:].to(shift_logits.dtype)
    per_token = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    active = shift_weights.reshape(-1) * (shift_labels.reshape(-1) != IGNORE_INDEX)
    total_weight = active.sum()
    weighted_sum = (per_token * active).sum()
    return torch.where(total_weight > 0, weighted_sum / total_weight.clamp_min(1e-12), weighted_sum * 0.0)


@dataclass
class WeightedSFTCollator:
    """Right-pads ``{"input_ids", "labels", "weights"}`` examples into tensors plus ``attention_mask``.

    Padding uses ``pad_token_id`` for inputs, -100 for labels and 0 for weights, so padding never counts.
    """

    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        batch: dict[str, list] = {"input_ids": [], "labels": [], "weights": [], "attention_mask": []}
        for f in features:
            if not (len(f["input_ids"]) == len(f["labels"]) == len(f["weights"])):
                raise DataError("an SFT example has input_ids, labels and weights of different lengths")
            pad = longest - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            batch["weights"].append(list(f["weights"]) + [0.0] * pad)
            batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(batch["input_ids"], dtype=torch.long),
            "labels": torch.tensor(batch["labels"], dtype=torch.long),
            "weights": torch.tensor(batch["weights"], dtype=torch.float32),
            "attention_mask": torch.tensor(batch["attention_mask"], dtype=torch.long),
        }


class WeightedSFTTrainer(transformers.Trainer):
    """A ``transformers.Trainer`` that trains with :func:`weighted_causal_lm_loss` on batches carrying ``weights``.

    Use it with :class:`WeightedSFTCollator` and ``TrainingArguments(remove_unused_columns=False)`` (otherwise
    the Trainer drops the ``weights`` column because the model's ``forward`` does not take it). The loss is
    a per-batch weighted mean, so the Trainer divides it by the gradient-accumulation steps
    (``loss_is_scaled_for_ga = False``) and ``num_items_in_batch`` is not used.
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.args.remove_unused_columns:
            raise ConfigError(
                "WeightedSFTTrainer needs TrainingArguments(remove_unused_columns=False); "
                "otherwise the Trainer drops the 'weights' column before the loss sees it"
            )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        weights = inputs.pop("weights")
        outputs = model(**inputs)
        loss = weighted_causal_lm_loss(outputs.logits, labels, weights)
        return (loss, outputs) if return_outputs else loss


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
