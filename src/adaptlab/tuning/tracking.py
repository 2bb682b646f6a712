"""Experiment tracking: ``report_to`` (TensorBoard, W&B, MLflow, ...) checked before a run starts, the Trainer's
TensorBoard files kept in the run directory, and the numbers adaptlab computes itself sent to the same trackers.

The trackers are transformers' own integration callbacks (``transformers.integrations``), so ``report_to`` takes
the HF Trainer's names and each tracker reads its usual environment (``WANDB_PROJECT``, ``MLFLOW_TRACKING_URI``,
``TENSORBOARD_LOGGING_DIR``, ...). Three things are added here:

* :func:`check_report_to` runs at config validation: an unknown name lists the known ones, and a tracker whose
  package is missing names the pip command, so the mistake is one line before any run directory exists (the
  Trainer itself would fail only when it is built, after data loading and the run directory).
* :func:`attach_trackers` points the Trainer's TensorBoard writer at ``<run>/tensorboard`` (transformers writes
  to ``<output_dir>/runs/<date>_<host>``, inside ``checkpoints/``, which a finished encoder run deletes), and
  names the tracker run after the run directory when ``run_name`` is not set. ``tensorboard --logdir runs``
  then shows every run under its directory name.
* :func:`log_final_metrics` and :func:`log_history` send metrics computed outside the Trainer (strict span F1 on
  dev, macro F1, a few-shot or FRACTAL loop's losses) through fresh instances of the same callbacks, as the
  Trainer's own ``log`` would after training: TensorBoard appends to the same directory and W&B to the process's
  active run. They are given the ``TrainingArguments`` of the run's Trainer (remembered by
  :func:`attach_trackers`), because W&B and MLflow record the arguments again when a callback starts; a loop
  without a Trainer (few-shot, FRACTAL) has none, and those trackers then record transformers' defaults beside its
  numbers. Nested metric dictionaries are flattened to ``a/b`` keys; anything but a finite number is left out.
* MLflow's callback ends its run when training ends, and a metric logged later would open a new, randomly named
  run. So the id of the MLflow run a run directory's Trainer (or first loop) logged to is remembered, and
  :func:`resumed_mlflow_run` makes it active again around what is logged after training (the Trainer's final
  evaluation, the two functions above): one MLflow run holds everything, as one TensorBoard directory does. A run
  given by ``MLFLOW_RUN_ID``, or one the caller opened, is left to MLflow, which logs there already.

Names follow the Trainer's: a final metric is an evaluation, logged as ``eval_<split>/<path>``, which TensorBoard
and W&B show as ``eval/<split>/<path>`` (e.g. ``eval/dev/strict/micro/f1``) beside the Trainer's own ``eval/``
curves; a loop's training loss is ``loss``, shown as ``train/loss`` as the Trainer's is.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, Field

TENSORBOARD_DIR = "tensorboard"  # <run>/tensorboard: the event files of every tracked training in a run
_TRAINER_ARGUMENTS: dict[Path, Any] = {}  # run directory -> TrainingArguments of its last attached Trainer
_MLFLOW_RUNS: dict[Path, str] = {}  # run directory -> id of the MLflow run its last Trainer (or loop) logged to

# backend -> (modules that must be importable, pip command): from each callback's own installation check in
# transformers.integrations.integration_utils. kubeflow needs a Kubeflow job, not a package (checked apart).
REQUIREMENTS: dict[str, tuple[tuple[str, ...], str]] = {
    "azure_ml": (("azureml.core",), "azureml-sdk"),
    "clearml": (("clearml",), "clearml"),
    "codecarbon": (("codecarbon",), "codecarbon"),
    "comet_ml": (("comet_ml",), "comet-ml"),
    "dagshub": (("dagshub", "mlflow"), "dagshub mlflow"),
    "dvclive": (("dvclive",), "dvclive"),
    "flyte": (("flytekit", "flytekitplugins.deck"), "flytekit flytekitplugins-deck-standard"),
    "mlflow": (("mlflow",), "mlflow"),
    "neptune": (("neptune",), "neptune"),
    "swanlab": (("swanlab",), "swanlab"),
    "tensorboard": (("tensorboard",), "tensorboard"),
    "trackio": (("trackio",), "trackio"),
    "wandb": (("wandb",), "wandb"),
}
ALONE = ("none", "all")  # report_to values that cannot be combined with a backend


class Tracked(Protocol):
    """Anything with the two tracking keys: ``TrainerSettings``, ``TaskData``, a FRACTAL run's config."""

    report_to: str | list[str]
    run_name: str | None


def known_backends() -> list[str]:
    """The ``report_to`` backends the installed transformers supports."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    return sorted(INTEGRATION_TO_CALLBACK)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def check_report_to(value: str | list[str]) -> str | list[str]:
    """``value`` when every backend it names is known and installed, else a ``ValueError`` saying which is not.

    ``none`` and ``all`` (every installed backend, as in transformers) stand alone. Used as a pydantic validator,
    so the error becomes a one-line :class:`~adaptlab.errors.ConfigError` naming the key.
    """
    names = [value] if isinstance(value, str) else list(value)
    if not names or names in (["none"], ["all"]):
        return value
    together = [name for name in names if name in ALONE]
    if together:
        raise ValueError(f"{together[0]!r} cannot be combined with other backends; give it alone, or list backends")
    known = known_backends()
    for name in names:
        if name not in known:
            raise ValueError(f"unknown backend {name!r}; known: {', '.join([*ALONE, *known])}")
        modules, pip = REQUIREMENTS.get(name, ((), ""))
        missing = [module for module in modules if not _installed(module)]
        if name == "tensorboard" and missing and _installed("tensorboardX"):  # transformers accepts either
            missing = []
        if name == "kubeflow" and not os.environ.get("KUBEFLOW_TRAINER_SERVER_URL"):
            raise ValueError("'kubeflow' reports to a Kubeflow TrainJob, and KUBEFLOW_TRAINER_SERVER_URL is not set "
                             "(transformers adds kubeflow by itself inside such a job)")
        if missing:
            raise ValueError(f"{name!r} needs the {missing[0].split('.')[0]} package, which is not installed "
                             f"(pip install {pip})")
    return value


ReportTo = Annotated[str | list[str], AfterValidator(check_report_to)]
"""The type of a ``report_to`` key: checked by :func:`check_report_to` when the config is validated."""


def report_to_field() -> Any:
    """The ``report_to`` key of a config (Trainer settings, a FRACTAL run), described once."""
    return Field("none", description="experiment trackers, as in the HF Trainer: none, all (every installed one), "
                                     "tensorboard (to <run>/tensorboard), wandb, mlflow, ... or a list; metrics "
                                     "adaptlab computes itself (dev F1, ...) go there too, as eval/<split>/...")


def run_name_field() -> Any:
    """The ``run_name`` key that goes with :func:`report_to_field`."""
    return Field(None, description="the run's name in the trackers of report_to (default: the run directory's name)")


def _point_tensorboard(callbacks: Iterable[Any], directory: Path) -> None:
    """TensorBoard writers of ``callbacks`` write to ``directory / "tensorboard"`` unless
    ``TENSORBOARD_LOGGING_DIR`` chose a folder (the callback reads it when it is made)."""
    from transformers.integrations import TensorBoardCallback

    for callback in callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = str(directory / TENSORBOARD_DIR)


def attach_trackers(trainer: Any, run_dir: Path, files_dir: Path | None = None) -> None:
    """Before ``trainer.train()``: the tracker run is named after ``run_dir`` when ``run_name`` is not set (a
    stage's after ``<run>/<stage folder>``), TensorBoard writes to ``(files_dir or run_dir) / "tensorboard"``, and
    the MLflow run the Trainer opens is remembered for :func:`resumed_mlflow_run`."""
    if not trainer.args.report_to:
        return
    if trainer.args.run_name is None:
        trainer.args.run_name = Path(run_dir).name + (f"/{Path(files_dir).name}" if files_dir else "")
    _point_tensorboard(trainer.callback_handler.callbacks, Path(files_dir or run_dir))
    _TRAINER_ARGUMENTS[Path(run_dir).resolve()] = trainer.args
    if _has_mlflow(trainer.callback_handler.callbacks):
        trainer.add_callback(_mlflow_run_keeper(Path(run_dir)))  # after MLflow's own: its run is open by then


def _has_mlflow(callbacks: Iterable[Any]) -> bool:
    from transformers.integrations import MLflowCallback

    return any(isinstance(callback, MLflowCallback) for callback in callbacks)


def _remember_mlflow_run(run_dir: Path) -> None:
    import mlflow

    active = mlflow.active_run()
    if active is not None:
        _MLFLOW_RUNS[Path(run_dir).resolve()] = active.info.run_id


def _mlflow_run_keeper(run_dir: Path) -> Any:
    """A Trainer callback that remembers, when training begins, the MLflow run MLflow's callback has just opened."""
    from transformers import TrainerCallback

    class KeepMlflowRun(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            _remember_mlflow_run(run_dir)

    return KeepMlflowRun()


@contextmanager
def resumed_mlflow_run(run_dir: Path) -> Iterator[None]:
    """Inside, the MLflow run remembered for ``run_dir`` (which MLflow's Trainer callback ended when training ended)
    is active again, so that what is logged after training lands in it, not in a new run; it is ended on leaving.
    Nothing happens without such a run, when ``MLFLOW_RUN_ID`` names one (MLflow resumes that itself), or when a
    run is already active (one the caller opened)."""
    run_id = _MLFLOW_RUNS.get(Path(run_dir).resolve())
    if run_id is None or os.environ.get("MLFLOW_RUN_ID"):
        yield
        return
    import mlflow

    if mlflow.active_run() is not None:
        yield
        return
    mlflow.start_run(run_id=run_id)
    try:
        yield
    finally:
        mlflow.end_run()


def flat_numbers(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"dev": {"strict": {"f1": 0.8}}}`` -> ``{"dev/strict/f1": 0.8}`` (below ``prefix/`` when given): finite
    numbers only (no booleans, strings, lists or NaN), so every tracker can take them as scalars."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flat_numbers(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = value
    return flat


def log_final_metrics(tracked: Tracked, run_dir: Path, metrics: Mapping[str, Any], step: int) -> None:
    """Send ``metrics`` (e.g. ``{"dev": report}``, flattened) to the trackers of ``tracked.report_to`` as
    ``eval_dev/...``, at ``step`` (the last optimizer step, where the training curves end). Nothing without
    trackers."""
    _send(tracked, run_dir, [(step, {f"eval_{key}": value for key, value in flat_numbers(metrics).items()})])


def log_history(tracked: Tracked, run_dir: Path, rows: Sequence[Mapping[str, Any]], step_key: str) -> None:
    """The rows of a training loop that is not the HF Trainer's (few-shot, FRACTAL), each at its ``step_key``."""
    _send(tracked, run_dir, [(int(row[step_key]), flat_numbers({k: v for k, v in row.items() if k != step_key}))
                             for row in rows])


def _send(tracked: Tracked, run_dir: Path, entries: list[tuple[int, dict[str, float]]]) -> None:
    """Each ``(step, values)`` through ``on_log`` of new callbacks of ``report_to``; on the main process only."""
    if tracked.report_to in ("none", [], ["none"]) or int(os.environ.get("RANK", "0")) != 0:
        return
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.integrations import TensorBoardCallback, get_reporting_integration_callbacks

    run_dir = Path(run_dir)
    args = _TRAINER_ARGUMENTS.get(run_dir.resolve()) or TrainingArguments(
        output_dir=str(run_dir), report_to=tracked.report_to, run_name=tracked.run_name or run_dir.name)
    with resumed_mlflow_run(run_dir):
        callbacks = [callback() for callback in get_reporting_integration_callbacks(args.report_to)]
        _point_tensorboard(callbacks, run_dir)
        state, control = TrainerState(), TrainerControl()
        for step, values in entries:
            if values:
                state.global_step = step
                for callback in callbacks:
                    callback.on_log(args, state, control, logs=dict(values))
        if _has_mlflow(callbacks):
            _remember_mlflow_run(run_dir)  # a loop without a Trainer: its later metrics join the run opened here
        for callback in callbacks:
            if isinstance(callback, TensorBoardCallback):  # the writer this function opened; flushed on every log
                callback.on_train_end(args, state, control)
