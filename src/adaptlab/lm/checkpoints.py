"""Checkpoints that can be trusted: a completeness marker after each save, newest-valid resume, safe rotation.

Why: the HF Trainer writes ``checkpoint-N/`` file by file (weights, optimizer, scheduler, RNG states,
``trainer_state.json``). A process killed mid-save leaves a directory that looks like a checkpoint, and
``resume_from_checkpoint=True`` takes the highest N without looking inside; ``save_total_limit`` deletes older
checkpoints before anything has confirmed that the new one is whole. The protocol here:

1. the Trainer saves ``checkpoint-N`` as usual (it is given ``save_total_limit=None``: it deletes nothing);
2. :class:`CheckpointMarker` (``on_save``, after every process has finished writing) flushes every file to disk
   (``fsync``) and then atomically writes ``adaptlab_checkpoint.json``::

       {"format": 1, "step": N, "files": {"model.safetensors": {"size": 1234}, "trainer_state.json":
        {"size": 567, "sha256": "..."}, ...}}

   with the size of every file and the SHA-256 of every file up to 64 MiB (states, configs, RNG; weights and
   optimizer states of real models are size-checked only: hashing gigabytes at each save costs minutes);
3. only then are the oldest marked checkpoints beyond ``keep`` deleted, so a valid one always exists.

A checkpoint is valid when its marker parses, names the directory's step, and every listed file exists with its
size (and hash). Resuming takes the newest valid checkpoint; newer invalid ones are reported with the reason
and renamed ``checkpoint-N.incomplete`` (never deleted), so that the resumed run, which saves step N again,
writes into an empty directory.

Resuming needs the run directory of the interrupted run, so :func:`resume_point` reopens an existing ``output``
for ``resume: auto`` (or ``PATH``) when it holds an unfinished run with the same config, while a fresh run
(``resume: never``, or a directory that is not such a run) still refuses a non-empty directory. Used by every
causal-LM training command (``adaptlab lm train``, ``adaptlab fractal sft``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from adaptlab.errors import ConfigError, RunDirError
from adaptlab.runs import RunDir, atomic_write_json, get_logger

MARKER_NAME = "adaptlab_checkpoint.json"
MARKER_FORMAT = 1
HASH_LIMIT_BYTES = 64 * 2**20
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    """The step N of a ``checkpoint-N`` directory name, else None."""
    match = _CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """``checkpoint-N`` directories, oldest (smallest N) first."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(checkpoint: Path) -> list[Path]:
    return sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.name != MARKER_NAME)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_marker(checkpoint: Path) -> Path:
    """Flush every file of ``checkpoint`` to disk, then record their sizes (and small files' hashes) atomically."""
    step = checkpoint_step(checkpoint)
    if step is None:
        raise ValueError(f"{checkpoint} is not a checkpoint-N directory")
    files: dict[str, dict[str, Any]] = {}
    for path in _files(checkpoint):
        _fsync(path)
        size = path.stat().st_size
        entry: dict[str, Any] = {"size": size}
        if size <= HASH_LIMIT_BYTES:
            entry["sha256"] = _sha256(path)
        files[path.relative_to(checkpoint).as_posix()] = entry
    if "trainer_state.json" not in files:
        raise RuntimeError(f"{checkpoint} has no trainer_state.json after the Trainer saved it")
    marker = atomic_write_json(checkpoint / MARKER_NAME, {"format": MARKER_FORMAT, "step": step, "files": files})
    _fsync(checkpoint)  # the directory entry of the marker
    return marker


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from, or None when it is complete (see module docstring)."""
    marker_path = checkpoint / MARKER_NAME
    if not marker_path.is_file():
        return f"no {MARKER_NAME} (the save did not finish)"
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        files = marker["files"]
        step = marker["step"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable {MARKER_NAME} ({exc})"
    if step != checkpoint_step(checkpoint):
        return f"{MARKER_NAME} is for step {step}, not {checkpoint_step(checkpoint)}"
    for name, entry in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry["size"]:
            return f"{name} has {size} bytes, {entry['size']} were written"
        if "sha256" in entry and _sha256(path) != entry["sha256"]:
            return f"{name} is corrupt (SHA-256 differs from the one recorded at save time)"
    return None


def set_aside(checkpoint: Path, why: str = "incomplete") -> Path:
    """Rename a checkpoint to ``checkpoint-N.<why>`` (``-2``, ``-3`` ... if taken): out of the way, never deleted."""
    target = checkpoint.with_name(f"{checkpoint.name}.{why}")
    n = 1
    while target.exists():
        n += 1
        target = checkpoint.with_name(f"{checkpoint.name}.{why}-{n}")
    checkpoint.rename(target)
    return target


def set_aside_newer(checkpoints_dir: Path, step: int) -> list[Path]:
    """Resuming from ``step`` re-saves the steps after it: move their old checkpoints out of the way first."""
    moved = []
    for checkpoint in list_checkpoints(checkpoints_dir):
        if (checkpoint_step(checkpoint) or 0) > step:
            moved.append(set_aside(checkpoint, "superseded"))
            get_logger().warning("resuming from step %d: moved the later %s to %s", step, checkpoint, moved[-1].name)
    return moved


def newest_valid_checkpoint(checkpoints_dir: Path, set_aside_invalid: bool = False) -> Path | None:
    """The newest valid checkpoint in ``checkpoints_dir``; invalid newer ones are warned about (and set aside)."""
    log = get_logger()
    for checkpoint in reversed(list_checkpoints(checkpoints_dir)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        message = f"skipping checkpoint {checkpoint}: {problem}"
        if set_aside_invalid:
            message += f"; moved to {set_aside(checkpoint).name} (delete it when you no longer need it)"
        log.warning(message)
    return None


def resolve_resume_path(path: str | Path) -> Path:
    """``resume: PATH``: a checkpoint directory (which must be valid), or a run/checkpoints directory (newest valid)."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"resume: {path} does not exist or is not a directory; give a checkpoint-N directory or a "
                          "training run directory")
    if checkpoint_step(path) is not None:
        problem = checkpoint_problem(path)
        if problem:
            raise ConfigError(f"resume: {path} is not a complete checkpoint ({problem}); pick an earlier "
                              "checkpoint-N, or give the run directory to take its newest valid one")
        return path
    checkpoints_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    found = newest_valid_checkpoint(checkpoints_dir)
    if found is None:
        raise ConfigError(f"resume: no valid checkpoint in {checkpoints_dir}; give the directory of a "
                          "training run that saved at least one checkpoint (save_steps), or use resume: never")
    return found


def rotate_checkpoints(checkpoints_dir: Path, keep: int) -> list[Path]:
    """Delete the oldest *valid* checkpoints beyond the newest ``keep``; returns what was deleted."""
    valid = [c for c in list_checkpoints(checkpoints_dir) if (c / MARKER_NAME).is_file()]
    doomed = valid[: max(0, len(valid) - keep)]
    for checkpoint in doomed:
        shutil.rmtree(checkpoint)
        get_logger().info("deleted old checkpoint %s (keep_checkpoints=%d)", checkpoint, keep)
    return doomed


class CheckpointMarker(TrainerCallback):
    """After each Trainer save: wait for every process, mark the checkpoint complete, then rotate old ones."""

    def __init__(self, keep: int):
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # every rank has written its RNG state / shards
        if args.should_save:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_marker(checkpoint)
            get_logger().info("checkpoint %s is complete", checkpoint)
            rotate_checkpoints(checkpoint.parent, self.keep)
        return control


# ------------------------------------------------------------------------------ run directories that resume

RESUME_MAY_CHANGE = ("resume", "output", "training.progress")


def flat_keys(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"seed": 1}}`` -> ``{"training.seed": 1}``: a changed key is named by its full path."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flat_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def reopen_run_dir(path: Path, config: dict[str, Any]) -> RunDir:
    """An unfinished training run to continue: same config (but for RESUME_MAY_CHANGE), no ``model/`` yet."""
    run = RunDir(path)
    if not run.config.is_file():
        raise RunDirError(f"{path} is not empty and holds no config.yaml of a training run; choose another output "
                          "(adaptlab never overwrites a directory)")
    if run.model.exists():
        raise RunDirError(f"{path} holds a finished run (its model/ exists); choose another output to train again")
    previous = flat_keys(yaml.safe_load(run.config.read_text(encoding="utf-8")) or {})
    current = flat_keys(config)
    changed = sorted(k for k in set(previous) | set(current)
                     if k not in RESUME_MAY_CHANGE and previous.get(k) != current.get(k))
    if changed:
        details = "; ".join(f"{k}: {previous.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ConfigError(f"cannot resume {path}: its run was started with a different config ({details}). An exact "
                          "resume needs the same settings; restore them, or start a new run (another output, or "
                          "resume: never)")
    return run


def resume_point(config: dict[str, Any], output: str | None, resume: str) -> tuple[RunDir | None, Path | None]:
    """``(the run directory to continue or None for a new one, the checkpoint to resume from or None)``.

    ``resume: never`` starts a new run (:func:`adaptlab.runs.open_run` refuses a non-empty ``output``). ``auto``
    continues the run in ``output`` from its newest valid checkpoint when ``output`` holds one (invalid newer
    checkpoints are set aside), else starts a new run. ``PATH`` resumes from a checkpoint (or a run's newest valid
    one), continuing in its run directory unless ``output`` names another, new, one. Main process only.
    """
    output_path = Path(output) if output else None
    existing = output_path is not None and output_path.is_dir() and any(output_path.iterdir())
    if resume == "never" or (resume == "auto" and not existing):
        return None, None
    if resume == "auto":
        run = reopen_run_dir(output_path, config)
        checkpoint = newest_valid_checkpoint(run.path / "checkpoints", set_aside_invalid=True)
        if checkpoint is None:
            get_logger().warning("no complete checkpoint in %s: training starts at step 0 in the same directory",
                                 run.path / "checkpoints")
        return run, checkpoint
    checkpoint = resolve_resume_path(resume)
    owner = checkpoint.parent.parent
    if output_path is not None and output_path.resolve() != owner.resolve():
        return None, checkpoint
    run = reopen_run_dir(owner, config)
    set_aside_newer(checkpoint.parent, checkpoint_step(checkpoint) or 0)
    return run, checkpoint
