"""On-policy distillation (GKD, Agarwal et al. 2024): train on the student's own generations, judged by the teacher.

Off-policy KD shows the student only the dataset's continuations, while at inference it continues its own, and
its mistakes take it to prefixes it never saw (exposure bias). GKD's remedy: with probability ``lambda`` a batch's
completions are replaced by ones the student samples itself, and the divergence to the teacher is computed on
those tokens (the teacher runs live on them; nothing is cached for such a batch).

:func:`on_policy_batch` builds that batch from a :class:`~adaptlab.lm.packing.PackedCollator` batch:

* the prompt of a row is its tokens before its first target (``labels != -100``): the conversation up to the
  assistant's answer for SFT rows; on a packed CPT block it is only the block's first token;
* the student samples up to ``max_new_tokens`` (pure sampling at temperature 1, in eval mode, seeded) and a
  completion ends after its first end-of-sequence token;
* the new row is ``prompt + completion`` with labels on the completion only; rows with per-token loss weights
  give their completion the mean weight of their original targets. A row without any target stays a one-token
  row without target.
"""

from __future__ import annotations

from typing import Any

import torch

from adaptlab.lm.packing import IGNORE_INDEX, PackedCollator


def prompt_lengths(labels: torch.Tensor) -> list[int | None]:
    """Per row, the number of tokens before its first target (at least 1), or None when it has no target."""
    lengths: list[int | None] = []
    for row in labels:
        targets = (row != IGNORE_INDEX).nonzero()
        lengths.append(max(int(targets[0]), 1) if len(targets) else None)
    return lengths


def end_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end a generation: the tokenizer's EOS and those of the model's generation config (chat models
    often list their end-of-turn token there)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [configured]
    return sorted({int(i) for i in [tokenizer.eos_token_id, *configured] if i is not None})


@torch.no_grad()
def sample_completions(model: Any, prompts: list[list[int]], max_new_tokens: int, pad_token_id: int,
                       stop_ids: list[int], seed: int) -> list[list[int]]:
    """The student's sampled continuation of each prompt, cut after its first stop id; seeded without touching
    the global random state (dropout and data order go on as if nothing was drawn)."""
    device = next(model.parameters()).device
    longest = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad_token_id] * (longest - len(p)) + p for p in prompts], device=device)
    attention = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            generated = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=True, top_k=0,
                                       top_p=1.0, temperature=1.0, max_new_tokens=max_new_tokens,
                                       pad_token_id=pad_token_id, eos_token_id=stop_ids or None, use_cache=True)
    finally:
        model.train(was_training)
    completions = []
    for row in generated[:, longest:].tolist():
        stop = next((i for i, token in enumerate(row) if token in stop_ids), None)
        completions.append(row if stop is None else row[:stop + 1])
    return completions


def on_policy_batch(model: Any, batch: dict[str, torch.Tensor], max_new_tokens: int, pad_token_id: int,
                    stop_ids: list[int], seed: int) -> dict[str, torch.Tensor]:
    """``batch`` with every row's completion replaced by the student's own (module docstring)."""
    lengths = prompt_lengths(batch["labels"])
    input_ids = batch["input_ids"].tolist()
    prompts = [row[:length] if length is not None else row[:1] for row, length in zip(input_ids, lengths, strict=True)]
    completions = sample_completions(model, prompts, max_new_tokens, pad_token_id, stop_ids, seed)
    weighted = "weights" in batch
    rows = []
    for index, (prompt, completion, length) in enumerate(zip(prompts, completions, lengths, strict=True)):
        completion = completion if length is not None else []
        ids = prompt + completion
        row = {"input_ids": ids, "position_ids": list(range(len(ids))),
               "labels": [IGNORE_INDEX] * len(prompt) + completion}
        if weighted:
            targets = batch["labels"][index] != IGNORE_INDEX
            weight = float(batch["weights"][index][targets].mean()) if bool(targets.any()) else 0.0
            row["weights"] = [0.0] * len(prompt) + [weight] * len(completion)
        rows.append(row)
    device = batch["input_ids"].device
    return {key: value.to(device) for key, value in PackedCollator(pad_token_id)(rows).items()}
