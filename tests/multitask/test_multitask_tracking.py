"""``multitask train`` with ``training.report_to: tensorboard``: the Trainer's per-task losses and each task's dev
scores from adaptlab's own predictors (strict entity F1, macro F1) reach ``<run>/tensorboard``."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
from task_data import FAST, write_config


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard is not installed (pip install tensorboard; it is in the dev extra)")
def test_multitask_logs_task_losses_and_dev_scores(tmp_path, tiny_bert_dir, run_cli):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = write_config(tmp_path, tiny_bert_dir, tasks=("species", "topic"))
    code, _, err = run_cli("multitask", "train", config, "--output", tmp_path / "run", "training.max_steps=6",
                           "training.min_steps=0", "training.logging_steps=2", "training.report_to=tensorboard",
                           *FAST)
    assert code == 0, err
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/loss_species", "train/loss_topic"} <= tags
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for task in ("species", "topic"):
        (event,) = events.Scalars(f"eval/{task}/dev_f1")
        assert event.step == 6 and math.isfinite(event.value)
        assert event.value == pytest.approx(metrics["tasks"][task]["dev_f1"], abs=1e-6)
    assert "eval/species/dev/strict/micro/f1" in tags and "eval/topic/dev/accuracy" in tags
