"""A stand-in for the ``mlflow`` package, for the tracking tests when MLflow is not installed: the fluent calls
transformers' ``MLflowCallback`` makes, with MLflow's run semantics (``start_run`` resumes ``run_id`` or
``MLFLOW_RUN_ID``, refuses while a run is active unless nested; logging with no active run starts a new, randomly
named one; a parameter cannot be logged again with another value), kept in memory in :data:`RUNS`."""

from __future__ import annotations

import os
import uuid
from types import SimpleNamespace

__version__ = "3.18.0"
utils = SimpleNamespace(validation=SimpleNamespace(MAX_PARAM_VAL_LENGTH=6000, MAX_PARAMS_TAGS_PER_BATCH=100))
RUNS: dict[str, dict] = {}  # run id -> {"name", "status", "params", "metrics": {key: [(step, value)]}}
_active: list[str] = []


def start_run(run_id: str | None = None, run_name: str | None = None, nested: bool = False, **_: object):
    if _active and not nested:
        raise RuntimeError(f"Run with UUID {_active[-1]} is already active")
    run_id = run_id or os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        RUNS[run_id]["status"] = "RUNNING"  # a KeyError for an unknown id, as MLflow refuses one
    else:
        run_id = uuid.uuid4().hex
        RUNS[run_id] = {"name": run_name or f"random-{run_id[:6]}", "status": "RUNNING", "params": {},
                        "metrics": {}}
    _active.append(run_id)
    return active_run()


def active_run():
    return SimpleNamespace(info=SimpleNamespace(run_id=_active[-1])) if _active else None


def end_run(status: str = "FINISHED") -> None:
    if _active:
        RUNS[_active.pop()]["status"] = status


def _current() -> dict:
    if not _active:
        start_run()
    return RUNS[_active[-1]]


def log_params(params: dict, synchronous: bool | None = None) -> None:
    run = _current()
    for key, value in params.items():
        if key in run["params"] and run["params"][key] != str(value):
            raise ValueError(f"changing param values is not allowed: {key}")
        run["params"][key] = str(value)


def log_metrics(metrics: dict, step: int | None = None, synchronous: bool | None = None, **_: object) -> None:
    run = _current()
    for key, value in metrics.items():
        run["metrics"].setdefault(key, []).append((step, value))


def set_tags(tags: dict) -> None:
    _current()


def log_artifacts(*_: object, **__: object) -> None:
    pass


def is_tracking_uri_set() -> bool:
    return True


def get_tracking_uri() -> str:
    return "memory:"


def set_tracking_uri(uri: str) -> None:
    pass


def set_experiment(name: str) -> None:
    pass
