"""Which task each training batch comes from: proportional, equal or temperature sampling, one task per batch.

With ``K`` tasks of ``n_i`` training examples (``N = sum n_i``) the probability of drawing task ``i`` is

* ``proportional``: ``p_i = n_i / N`` (every example once per epoch, as MT-DNN does);
* ``equal``:        ``p_i = 1 / K``;
* ``temperature``:  ``p_i = n_i^(1/T) / sum_j n_j^(1/T)`` (T = 1 is proportional, T -> inf is equal; T = 2 lifts
  small tasks, as in multilingual pretraining).

**Epoch size.** One epoch is always ``S = sum_i ceil(n_i / B)`` batches (B the batch size): the number of batches
that shows every training example once. So ``num_train_epochs``, evaluation and early stopping mean the same
thing whatever the sampling, and an epoch's size never depends on the mode (LLaMA-Factory #9121: mixtures whose
size surprises). ``proportional`` is exactly one pass over every task (its last batch may be short);
``equal`` and ``temperature`` give task ``i`` ``c_i`` batches, ``c_i`` the largest-remainder rounding of
``p_i * S`` and at least 1, so the shares hold in every epoch and not only on average. Such a task cycles through
fresh shuffles of its examples: a small task repeats within an epoch, a large one is seen in part, and a batch
never holds the same example twice (batches hold ``min(B, n_i)`` examples).

**Order.** The batches of an epoch are shuffled by a generator seeded with ``(seed, epoch)``: the same seed gives
the same order, and every epoch has another one (LLaMA-Factory #10672: mixtures whose order repeats every epoch).
The Trainer calls :meth:`TaskBatchSampler.set_epoch` at the start of each epoch (through accelerate's data
loader), so a resumed run sees the same order as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np

Sampling = Literal["proportional", "equal", "temperature"]


def task_probabilities(sizes: Sequence[int], mode: Sampling, temperature: float = 1.0) -> list[float]:
    """``p_i`` of each task (module docstring); ``sizes`` are the tasks' training example counts."""
    counts = np.asarray(sizes, dtype=float)
    if mode == "equal":
        weights = np.ones_like(counts)
    elif mode == "temperature":
        weights = counts ** (1.0 / temperature)
    else:
        weights = counts
    return [float(w) for w in weights / weights.sum()]


def epoch_batches(sizes: Sequence[int], batch_size: int) -> int:
    """``S = sum_i ceil(n_i / B)``: the batches of one epoch, whatever the sampling."""
    return sum(math.ceil(n / batch_size) for n in sizes)


def allocate(probabilities: Sequence[float], total: int) -> list[int]:
    """Largest-remainder rounding of ``p_i * total`` into integers summing to ``total``, each at least 1."""
    quotas = np.asarray(probabilities) * total
    counts = np.floor(quotas).astype(int)
    for i in np.argsort(-(quotas - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero(counts == 0):  # every task trains in every epoch
        counts[i] = 1
        counts[int(np.argmax(counts))] -= 1
    return [int(c) for c in counts]


class TaskBatchSampler:
    """Yields lists of indices into the tasks' rows laid end to end (task ``i`` at ``offsets[i]``), one task per batch.

    A ``torch.utils.data.DataLoader`` takes it as ``batch_sampler``; see the module docstring for the sampling, the
    epoch size and the order.
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, mode: Sampling = "proportional",
                 temperature: float = 1.0, seed: int = 0):
        if not sizes or min(sizes) < 1:
            raise ValueError(f"every task needs training rows, got sizes {list(sizes)}")
        self.sizes = [int(n) for n in sizes]
        self.batch_size = batch_size
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self.offsets = [int(o) for o in np.cumsum([0, *self.sizes[:-1]])]
        self.probabilities = task_probabilities(self.sizes, mode, temperature)
        total = epoch_batches(self.sizes, batch_size)
        if mode == "proportional":
            self.batches_per_task = [math.ceil(n / batch_size) for n in self.sizes]
        else:
            self.batches_per_task = allocate(self.probabilities, total)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(self.batches_per_task)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = [(task, batch) for task, (n, count) in enumerate(zip(self.sizes, self.batches_per_task))
                   for batch in self._task_batches(rng, n, count)]
        for position in rng.permutation(len(batches)):
            task, batch = batches[position]
            yield [self.offsets[task] + j for j in batch]

    def _task_batches(self, rng: np.random.Generator, n: int, count: int) -> list[list[int]]:
        """``count`` batches of one task's row numbers ``0..n-1`` from successive shuffles of them.

        Proportional: one shuffle cut into batches (the last may be short). Otherwise every batch is full: one
        that straddles two shuffles takes its rest from the next shuffle, whose rows already in the batch are
        moved to that shuffle's end, so each shuffle still visits every row once.
        """
        size = min(self.batch_size, n)
        batches: list[list[int]] = []
        pool: list[int] = []
        while len(batches) < count:
            if not pool:
                pool = [int(j) for j in rng.permutation(n)]
            batch, pool = pool[:size], pool[size:]
            if len(batch) < size and self.mode != "proportional":
                taken = set(batch)
                fresh = [int(j) for j in rng.permutation(n)]
                pool = [j for j in fresh if j not in taken] + [j for j in fresh if j in taken]
                need = size - len(batch)
                batch, pool = batch + pool[:need], pool[need:]
            batches.append(batch)
        return batches

    def summary(self, names: Sequence[str]) -> dict:
        """What one epoch holds, per task: probability, batches and examples (for the log and metrics.json)."""
        tasks = {}
        for name, n, p, count in zip(names, self.sizes, self.probabilities, self.batches_per_task):
            examples = n if self.mode == "proportional" else count * min(self.batch_size, n)
            tasks[name] = {"train_examples": n, "probability": round(p, 4), "batches_per_epoch": count,
                           "examples_per_epoch": examples}
        return {"batches_per_epoch": len(self), "batch_size": self.batch_size, "tasks": tasks}
