"""Resumable stages inside a training run: work a strategy does before training proper (continued pretraining of
the encoder) that is worth keeping when the run fails or is interrupted.

A stage lives in ``<run>/<stage>/``:

* ``stage.json``: what the stage is made from (settings, a digest of its texts, the model), written when it
  starts; a rerun made from anything else is refused rather than silently mixed;
* ``checkpoints/checkpoint-N``: the Trainer's checkpoints, each marked complete by
  :class:`~adaptlab.lm.checkpoints.CheckpointMarker` (a killed save is never resumed from);
* the stage's result and, written last and atomically, ``done.json`` (its summary): the stage is finished exactly
  when ``done.json`` exists.

The run directory is kept when the command fails after a stage has started (:func:`adaptlab.runs.keep_on_failure`),
and running the same command again with the same ``--output`` continues it (:func:`continued_run`): a finished
stage is skipped, an interrupted one resumes from its newest complete checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from adaptlab.runs import RunDir, atomic_write_json

STAGE_RECORD = "stage.json"
DONE_RECORD = "done.json"


def finished_summary(stage: Path) -> dict[str, Any] | None:
    """The summary of a finished stage, or None when it has not finished."""
    done = stage / DONE_RECORD
    return json.loads(done.read_text(encoding="utf-8")) if done.is_file() else None


def start_stage(stage: Path, made_from: dict[str, Any]) -> dict[str, Any] | None:
    """Record what ``stage`` is made from; returns the earlier record when the stage was started before with
    something else (the caller refuses), else None."""
    record = stage / STAGE_RECORD
    if record.is_file():
        earlier = json.loads(record.read_text(encoding="utf-8"))
        if earlier != json.loads(json.dumps(made_from)):
            return earlier
    atomic_write_json(record, made_from)
    return None


def finish_stage(stage: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(stage / DONE_RECORD, summary)


def continued_run(output: str | Path | None, config: BaseModel) -> RunDir | None:
    """The run in ``output`` to continue: an unfinished run holding a stage (``<stage>/stage.json``), started with
    the same config (but for ``output`` and ``training.progress``); None for anything else, which
    :func:`adaptlab.runs.open_run` then creates (new or empty) or refuses (anything else)."""
    path = Path(output) if output else None
    if path is None or not path.is_dir() or RunDir(path).metrics.exists():
        return None
    if not any((child / STAGE_RECORD).is_file() for child in path.iterdir() if child.is_dir()):
        return None
    from adaptlab.lm.checkpoints import reopen_run_dir

    return reopen_run_dir(path, config.model_dump(mode="json", by_alias=True))
