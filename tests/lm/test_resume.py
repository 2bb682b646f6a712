"""Exact resume: kill -9, corrupt or partial checkpoints, and a failure while a checkpoint is written.

Each interrupted run is resumed with ``resume: auto`` and compared with one uninterrupted run of the same config:
the same loss at every step (optimizer, scheduler, RNG and data position restored) and the same batches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from train_helpers import save_tiny_llama, train_config, write_prepared_corpus
from transformers import Trainer

import adaptlab.lm.fit as lm_fit
from adaptlab.config import validate_config
from adaptlab.errors import ConfigError, RunDirError
from adaptlab.lm.checkpoints import MARKER_NAME, checkpoint_problem, list_checkpoints, resolve_resume_path
from adaptlab.lm.packing import PackedCollator
from adaptlab.recipes.lm_train import LMTrainConfig, train

STEPS = 16
LOSS_TOLERANCE = 1e-4  # relative; the same process settings give identical numbers, kept loose for other CPUs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class RecordingCollator(PackedCollator):
    """Remembers every training batch (4 rows; evaluation batches have 2) as a tuple of token ids."""

    batches: list[tuple] = []

    def __call__(self, features):
        batch = super().__call__(features)
        if len(features) == 4:
            RecordingCollator.batches.append(tuple(batch["input_ids"].flatten().tolist()))
        return batch


@pytest.fixture
def recorder(monkeypatch):
    RecordingCollator.batches = []
    monkeypatch.setattr(lm_fit, "PackedCollator", RecordingCollator)
    return RecordingCollator


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-resume")
    model = save_tiny_llama(root / "model")
    return {"root": root, "model": model, "corpus": write_prepared_corpus(root / "corpus", model)}


def config(assets, output: Path, **overrides) -> dict:
    return train_config(assets["model"], assets["corpus"], output,
                        **{"max_steps": STEPS, "per_device_eval_batch_size": 2, "keep_checkpoints": 2, **overrides})


@pytest.fixture(scope="module")
def reference(assets, tmp_path_factory):
    """The uninterrupted run: losses per step, the batches in order, and its run directory."""
    mp = pytest.MonkeyPatch()
    RecordingCollator.batches = []
    mp.setattr(lm_fit, "PackedCollator", RecordingCollator)
    try:
        run, metrics = train(validate_config(LMTrainConfig, config(assets, tmp_path_factory.mktemp("ref") / "run")))
    finally:
        mp.undo()
    return losses(metrics), list(RecordingCollator.batches), run.path


def losses(metrics: dict) -> dict[int, float]:
    rows = [row for row in metrics["history"] if "loss" in row]
    assert len(rows) == len({row["step"] for row in rows}), "a step was logged twice"
    return {row["step"]: row["loss"] for row in rows}


def assert_same_curve(metrics: dict, reference_losses: dict[int, float]) -> None:
    assert losses(metrics) == pytest.approx(reference_losses, rel=LOSS_TOLERANCE)
    evals = [row["step"] for row in metrics["history"] if "eval_domain_perplexity" in row]
    assert evals == [0, 4, 8, 12, 16]


def test_kill_9_during_training_then_resume(assets, reference, tmp_path):
    """The CLI in a subprocess is SIGKILLed once a checkpoint exists; resume: auto continues the same curve."""
    out = tmp_path / "run"
    config_file = tmp_path / "cpt.yaml"
    config_file.write_text(yaml.safe_dump(config(assets, out)))
    cli = Path(sys.executable).with_name("adaptlab")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with (tmp_path / "stderr.txt").open("w") as stderr:
        process = subprocess.Popen([str(cli), "lm", "train", str(config_file)], env=env, cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        first = out / "checkpoints" / "checkpoint-2" / MARKER_NAME
        deadline = time.monotonic() + 120
        while not first.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        code = process.wait()
    assert code == -signal.SIGKILL, f"training ended (exit {code}) before the kill: " + \
        (tmp_path / "stderr.txt").read_text()[-2000:]
    assert not (out / "model").exists() and not (out / "metrics.json").exists()
    killed_at = max(int(c.name.split("-")[1]) for c in list_checkpoints(out / "checkpoints"))
    assert killed_at < STEPS

    run, metrics = train(validate_config(LMTrainConfig, config(assets, out)))
    assert run.path == out and metrics["resumed_from"].startswith(str(out / "checkpoints" / "checkpoint-"))
    assert metrics["steps"] == STEPS
    assert_same_curve(metrics, reference[0])


def test_failure_while_writing_a_checkpoint_keeps_the_previous_one(assets, reference, recorder, tmp_path,
                                                                   monkeypatch):
    out = tmp_path / "run"
    original = Trainer._save_optimizer_and_scheduler

    def disk_full_at_step_6(self, output_dir):
        if self.state.global_step == 6:
            Path(output_dir, "optimizer.pt").write_bytes(b"half an optimizer")
            raise OSError("No space left on device (injected)")
        return original(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", disk_full_at_step_6)
    with pytest.raises(OSError, match="injected"):
        train(validate_config(LMTrainConfig, config(assets, out)))
    checkpoints = {c.name: checkpoint_problem(c) for c in list_checkpoints(out / "checkpoints")}
    assert checkpoints["checkpoint-2"] is None and checkpoints["checkpoint-4"] is None  # intact, not rotated away
    assert "did not finish" in checkpoints["checkpoint-6"]
    batches_before_failure = list(recorder.batches)
    assert batches_before_failure == reference[1][:6]

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", original)
    recorder.batches = []
    _, metrics = train(validate_config(LMTrainConfig, config(assets, out)))
    assert metrics["resumed_from"] == str(out / "checkpoints" / "checkpoint-4")
    assert recorder.batches == reference[1][4:]  # the data continues at step 5, across the epoch boundary (6)
    assert_same_curve(metrics, reference[0])
    assert (out / "checkpoints" / "checkpoint-6.incomplete").is_dir()  # set aside, not deleted
    assert [c.name for c in list_checkpoints(out / "checkpoints")] == ["checkpoint-14", "checkpoint-16"]


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(assets, reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = Trainer.training_step

    def crash_at_step_7(self, *args, **kwargs):
        if self.state.global_step == 6:
            raise RuntimeError("node lost (injected)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crash_at_step_7)
    with pytest.raises(RuntimeError, match="injected"):
        train(validate_config(LMTrainConfig, config(assets, out)))
    newest = out / "checkpoints" / "checkpoint-6"
    assert checkpoint_problem(newest) is None
    with (newest / "optimizer.pt").open("r+b") as fh:  # a short file, as after a crash of the storage
        fh.truncate(100)
    assert "optimizer.pt has 100 bytes" in checkpoint_problem(newest)

    monkeypatch.setattr(Trainer, "training_step", original)
    _, metrics = train(validate_config(LMTrainConfig, config(assets, out)))
    assert metrics["resumed_from"] == str(out / "checkpoints" / "checkpoint-4")
    assert_same_curve(metrics, reference[0])


def test_resume_from_a_chosen_checkpoint_into_a_new_run(assets, reference, tmp_path):
    """resume: PATH branches a new run directory off another run's checkpoint; the old run is left as it was."""
    chosen = reference[2] / "checkpoints" / "checkpoint-14"
    run, metrics = train(validate_config(LMTrainConfig, config(assets, tmp_path / "branch", resume=str(chosen))))
    assert metrics["resumed_from"] == str(chosen) and run.path == tmp_path / "branch"
    assert_same_curve(metrics, reference[0])  # steps 1-14 come from the checkpoint's state, 15-16 are new
    assert checkpoint_problem(chosen) is None


def test_checkpoint_problems_are_detected(assets, tmp_path):
    """Every way a checkpoint can be incomplete: no marker, a missing, short or altered file, a wrong marker."""
    import shutil

    out = tmp_path / "run"
    train(validate_config(LMTrainConfig, config(assets, out, max_steps=2, eval_steps=2)))
    good = out / "checkpoints" / "checkpoint-2"
    assert checkpoint_problem(good) is None

    def broken(name: str) -> Path:
        copy = tmp_path / name / "checkpoint-2"
        shutil.copytree(good, copy)
        return copy

    (broken("no-marker") / MARKER_NAME).unlink()
    (broken("missing") / "scheduler.pt").unlink()
    with (broken("short") / "model.safetensors").open("r+b") as fh:
        fh.truncate(10)
    state = broken("altered") / "trainer_state.json"
    state.write_text(state.read_text().replace('"global_step": 2', '"global_step": 3'))  # same size, new bytes
    (broken("bad-marker") / MARKER_NAME).write_text("{not json")
    (broken("wrong-step") / MARKER_NAME).write_text(json.dumps({"format": 1, "step": 4, "files": {}}))
    problems = {path.parent.name: checkpoint_problem(path) for path in tmp_path.glob("*/checkpoint-2")}
    assert "did not finish" in problems["no-marker"]
    assert problems["missing"] == "scheduler.pt is missing"
    assert "model.safetensors has 10 bytes" in problems["short"]
    assert "trainer_state.json is corrupt" in problems["altered"]
    assert "unreadable" in problems["bad-marker"]
    assert "for step 4, not 2" in problems["wrong-step"]
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        resolve_resume_path(tmp_path / "short" / "checkpoint-2")
    assert resolve_resume_path(out) == good


def test_resume_refuses_a_changed_config_or_a_finished_run(assets, tmp_path):
    out = tmp_path / "run"
    train(validate_config(LMTrainConfig, config(assets, out, max_steps=2, eval_steps=2)))
    (out / "model").rename(out / "model-away")
    with pytest.raises(ConfigError, match=r"training.learning_rate: 0.003 -> 0.001"):
        train(validate_config(LMTrainConfig, config(assets, out, max_steps=2, eval_steps=2, learning_rate=1e-3)))
    (out / "model-away").rename(out / "model")
    with pytest.raises(RunDirError, match="finished run"):
        train(validate_config(LMTrainConfig, config(assets, out, max_steps=2, eval_steps=2)))
