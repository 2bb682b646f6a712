"""The task batch sampler: shares per mode, one task per batch, the epoch size, and a seeded order that changes
every epoch (also through accelerate's data loader, as the Trainer drives it)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from adaptlab.tuning.multitask.sampling import TaskBatchSampler, allocate, task_probabilities

SIZES = [400, 100, 25]
BATCH = 8
EPOCH = sum(math.ceil(n / BATCH) for n in SIZES)  # 50 + 13 + 4 = 67


def task_of(index: int) -> int:
    return int(np.searchsorted(np.cumsum(SIZES), index, side="right"))


def test_probabilities_follow_the_formulas():
    assert task_probabilities(SIZES, "proportional") == pytest.approx([400 / 525, 100 / 525, 25 / 525])
    assert task_probabilities(SIZES, "equal") == pytest.approx([1 / 3] * 3)
    assert task_probabilities(SIZES, "temperature", 2.0) == pytest.approx([20 / 35, 10 / 35, 5 / 35])  # sqrt(n)
    assert task_probabilities(SIZES, "temperature", 1.0) == pytest.approx(task_probabilities(SIZES, "proportional"))


@pytest.mark.parametrize("mode, temperature", [("proportional", 1.0), ("equal", 1.0), ("temperature", 2.0),
                                               ("temperature", 4.0)])
def test_each_epoch_draws_the_tasks_in_their_shares(mode, temperature):
    sampler = TaskBatchSampler(SIZES, BATCH, mode, temperature, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == EPOCH  # the same epoch size in every mode
    tasks = [{task_of(i) for i in batch} for batch in batches]
    assert all(len(t) == 1 for t in tasks)  # one task per batch
    assert all(len(set(batch)) == len(batch) for batch in batches)  # no example twice in a batch
    counts = Counter(t.pop() for t in tasks)
    if mode == "proportional":  # every example exactly once
        assert sorted(i for batch in batches for i in batch) == list(range(sum(SIZES)))
        assert [counts[i] for i in range(3)] == [50, 13, 4]
    else:
        expected = task_probabilities(SIZES, mode, temperature)
        for task, share in enumerate(expected):
            assert abs(counts[task] - share * EPOCH) <= 1, (task, counts, share * EPOCH)
        assert {len(batch) for batch in batches} == {BATCH}  # full batches; a small task repeats
    if mode == "equal":
        assert counts[2] * BATCH > SIZES[2]  # 25 examples, ~22 batches of 8: the small task cycles


def test_a_tiny_task_still_gets_a_batch_every_epoch():
    assert allocate([0.999, 0.001], 10) == [9, 1]
    sampler = TaskBatchSampler([10_000, 1], 8, "temperature", 1.0)
    assert sampler.batches_per_task[1] == 1 and len(sampler) == 1251


def test_same_seed_same_order_and_every_epoch_another():
    first, again = TaskBatchSampler(SIZES, BATCH, "temperature", 2.0, 7), TaskBatchSampler(SIZES, BATCH,
                                                                                           "temperature", 2.0, 7)
    epoch_0 = list(first)
    assert list(again) == epoch_0
    first.set_epoch(1)
    epoch_1 = list(first)
    assert epoch_1 != epoch_0
    assert [task_of(b[0]) for b in epoch_1] != [task_of(b[0]) for b in epoch_0]  # the task order changes too
    assert Counter(task_of(b[0]) for b in epoch_1) == Counter(task_of(b[0]) for b in epoch_0)  # shares do not
    first.set_epoch(0)
    assert list(first) == epoch_0
    assert list(TaskBatchSampler(SIZES, BATCH, "temperature", 2.0, 8)) != epoch_0


def test_the_trainer_s_loader_passes_the_epoch_to_the_sampler():
    """The HF Trainer calls ``set_epoch`` on accelerate's prepared loader; the order must follow it."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    sampler = TaskBatchSampler(SIZES, BATCH, "proportional", seed=3)
    loader = Accelerator(cpu=True).prepare(DataLoader(range(sum(SIZES)), batch_sampler=sampler,
                                                      collate_fn=lambda rows: rows))
    loader.set_epoch(0)
    epoch_0 = list(loader)
    loader.set_epoch(1)
    epoch_1 = list(loader)
    assert epoch_0 != epoch_1 and sorted(map(tuple, epoch_0)) != sorted(map(tuple, epoch_1))
    assert sorted(i for b in epoch_1 for i in b) == list(range(sum(SIZES)))
    loader.set_epoch(0)
    assert list(loader) == epoch_0
