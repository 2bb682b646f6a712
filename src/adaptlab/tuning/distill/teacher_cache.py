"""The teacher's top-k log-probabilities per target token, computed once before training (``cache_teacher``).

A causal teacher's full distribution is ``V`` floats per token (``V`` = 32k to 150k); kept for every token of a
training set it would outweigh the model. Its top-k (token id, log-probability) pairs are ``2k`` numbers, so the
cache exists for ``top_k`` losses only (:mod:`adaptlab.tuning.distill.divergences`: both distributions are
compared over the teacher's top-k, renormalised). The log-probabilities are at ``T = 1``; any temperature is applied
at loss time, so a cached loss equals the live one (tested).

Layout: two extra columns of every training row, :data:`TOP_IDS` (int32) and :data:`TOP_LOG_PROBS` (float32), each
a list with one ``k``-list per *target* position of the row, in order. A target position is ``t`` with
``labels[t + 1] != -100`` (the logit at ``t`` predicts token ``t + 1``, as HF causal LMs shift). :class:`TopKCollator`
pads them to ``[batch, most targets in a row, k]``; :func:`cached_targets` takes back exactly the rows that
``logits[:, :-1][labels[:, 1:] != -100]`` selects, in the same (row-major) order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adaptlab.lm.packing import IGNORE_INDEX, PackedCollator
from adaptlab.runs import datasets_progress, progress_bar
from adaptlab.tuning.distill.divergences import teacher_top_k

TOP_IDS = "teacher_top_ids"
TOP_LOG_PROBS = "teacher_top_log_probs"
CACHE_BATCH_ROWS = 8


def target_mask(labels: torch.Tensor) -> torch.Tensor:
    """``[batch, seq - 1]``: True at the positions whose logit predicts a target token."""
    return labels[:, 1:] != IGNORE_INDEX


def cache_top_k(dataset: Any, teacher_logits: Callable[[dict[str, torch.Tensor]], torch.Tensor], k: int,
                pad_token_id: int, cache_file: Path | None = None) -> tuple[Any, int]:
    """``(dataset with TOP_IDS and TOP_LOG_PROBS added, number of target tokens cached)``;
    ``teacher_logits(batch)`` gives ``[batch, seq, V]`` for a :class:`~adaptlab.lm.packing.PackedCollator` batch.
    ``cache_file``: where the columns are written (an Arrow file in the run directory), else they stay in memory."""
    import datasets

    collate = PackedCollator(pad_token_id)
    cached_tokens = [0]
    bar = progress_bar()
    task = bar.add_task("teacher top-k", total=len(dataset))

    def add_top_k(columns: dict[str, list]) -> dict[str, list]:
        rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        batch = collate(rows)
        mask = target_mask(batch["labels"])
        with torch.inference_mode():
            logits = teacher_logits(batch)[:, :-1]
            ids, log_probs = teacher_top_k(logits[mask.to(logits.device)], k)
        counts = mask.sum(dim=1).tolist()
        cached_tokens[0] += sum(counts)
        bar.advance(task, len(rows))
        return {TOP_IDS: [part.tolist() for part in ids.cpu().split(counts)],
                TOP_LOG_PROBS: [part.tolist() for part in log_probs.float().cpu().split(counts)]}

    features = datasets.Features({**dataset.features,
                                  TOP_IDS: datasets.List(datasets.List(datasets.Value("int32"))),
                                  TOP_LOG_PROBS: datasets.List(datasets.List(datasets.Value("float32")))})
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
    with bar, datasets_progress(False):  # adaptlab's bar, not datasets' "Map"
        dataset = dataset.map(add_top_k, batched=True, batch_size=CACHE_BATCH_ROWS, features=features,
                              load_from_cache_file=False,
                              cache_file_name=str(cache_file) if cache_file is not None else None,
                              keep_in_memory=cache_file is None)
    return dataset, cached_tokens[0]


@dataclass
class TopKCollator:
    """Wraps the task's collator: the cached columns become ``[batch, most targets, k]`` tensors (padded with
    id 0 and log-probability 0, never read), the rest goes to the task's collator unchanged."""

    inner: Any

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if TOP_IDS not in features[0]:
            return self.inner(features)
        cached = [(f[TOP_IDS], f[TOP_LOG_PROBS]) for f in features]
        batch = self.inner([{key: value for key, value in f.items() if key not in (TOP_IDS, TOP_LOG_PROBS)}
                            for f in features])
        longest = max(len(ids) for ids, _ in cached)
        k = next((len(ids[0]) for ids, _ in cached if ids), 1)
        batch[TOP_IDS] = torch.zeros(len(features), longest, k, dtype=torch.long)
        batch[TOP_LOG_PROBS] = torch.zeros(len(features), longest, k, dtype=torch.float32)
        for row, (ids, log_probs) in enumerate(cached):
            if ids:
                batch[TOP_IDS][row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                batch[TOP_LOG_PROBS][row, :len(ids)] = torch.tensor(log_probs, dtype=torch.float32)
        return batch


def cached_targets(inputs: dict[str, torch.Tensor], mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, log-probabilities)`` ``[N, k]`` of the ``N`` target positions of ``mask`` (:func:`target_mask`)."""
    counts = mask.sum(dim=1)
    ids, log_probs = inputs[TOP_IDS], inputs[TOP_LOG_PROBS]
    present = torch.arange(ids.size(1), device=ids.device)[None, :] < counts.to(ids.device)[:, None]
    if bool((counts.to(ids.device) > ids.size(1)).any()):
        raise RuntimeError("the cached teacher top-k does not match the batch's target tokens")
    return ids[present], log_probs[present]
