"""``TrainingProgress``: one rich bar per training stage, and every Trainer log record in the run's ``log.txt``.

transformers' own console output is a tqdm bar redrawn with ``\\r``, a nested bar for every evaluation, and each
log record printed as a stringified dict (``{'loss': '1.989', 'grad_norm': ...}``); written to a file that is a
line per record. :class:`~adaptlab.tuning.trainer.StrategyTrainer` removes those callbacks and adds this one:

* **one bar per stage** in the style of :func:`adaptlab.runs.progress_bar`, named by the stage ("NER student",
  "masked-LM (TAPT)", "causal LM"), with steps done / ``max_steps``, the newest training loss and the newest
  evaluation metric (``metric_for_best_model`` when the run selects by one, else the evaluation loss), elapsed
  time and ETA. Evaluation draws nothing of its own. On a terminal the bar is redrawn in place; written to a file
  (no terminal) rich prints it once, finished, so a stage is one line there.
* **the log dicts** (training, evaluation, the final runtime summary) go to the adaptlab logger at info level,
  so to ``log.txt`` and, under ``adaptlab -v``, the console; never to stdout.

The bar is drawn by the main process only (``state.is_world_process_zero``) and only when ``enabled``: the
Trainer's own ``disable_tqdm`` (``training.progress: false`` sets it) and ``adaptlab -q`` turn it off
(:func:`adaptlab.runs.progress_enabled`); the log records are written either way.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from adaptlab.runs import get_logger, progress_bar

LOG_FORMAT = "{stage} step {step}/{total}: {values}"


def eval_metric_key(metric_for_best_model: str | None) -> str:
    """The logged key of the evaluation metric a bar shows: ``eval_<metric>`` (the Trainer's prefix), or
    ``eval_loss`` when the run selects no best model."""
    name = metric_for_best_model or "loss"
    return name if name.startswith("eval_") else f"eval_{name}"


def format_value(value: Any) -> str:
    """A logged number in 4 significant digits (``0.01073``, ``98.33``, ``9e-05``); anything else as it is."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class TrainingProgress(TrainerCallback):
    """The Trainer's progress on the console and its log records in ``log.txt`` (module docstring)."""

    def __init__(self, stage: str, enabled: bool = True) -> None:
        self.stage = stage
        self.enabled = enabled
        self.bar = None
        self.task_id = None
        self.shown: dict[str, str] = {}  # what the bar shows after the step count: loss, the evaluation metric

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.close()
        self.shown = {}
        self.bar = progress_bar(self.enabled, fields="{task.fields[shown]}")
        self.bar.start()
        self.task_id = self.bar.add_task(self.stage, total=state.max_steps or None, completed=state.global_step,
                                         shown="")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(self.task_id, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        values = ", ".join(f"{key} {format_value(value)}" for key, value in logs.items() if key != "total_flos")
        get_logger().info(LOG_FORMAT.format(stage=self.stage, step=state.global_step, total=state.max_steps,
                                            values=values))
        if "loss" in logs:
            self.shown["loss"] = format_value(logs["loss"])
        key = self._shown_metric(args, logs)
        if key is not None:
            self.shown[key] = format_value(logs[key])
        if self.bar is not None:
            self.bar.update(self.task_id, shown=self._shown_text())

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            stopped_early = 0 < state.global_step < state.max_steps  # early stopping ended it
            self.bar.update(self.task_id, completed=state.global_step,
                            shown=self._shown_text() + ("  stopped early" if stopped_early else ""))
        self.close()

    def close(self) -> None:
        """Stop drawing (the bar stays as it last was); also after a failed or interrupted ``train``, so the
        terminal gets its cursor back."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def _shown_text(self) -> str:
        loss_first = sorted(self.shown.items(), key=lambda item: item[0] != "loss")
        return "  ".join(f"{name} {value}" for name, value in loss_first)

    @staticmethod
    def _shown_metric(args, logs: dict[str, Any]) -> str | None:
        """The evaluation metric in ``logs`` to show: the selection metric, else an evaluation loss (with several
        evaluation sets each has its own ``eval_<name>_loss``; the first is shown)."""
        wanted = eval_metric_key(getattr(args, "metric_for_best_model", None))
        if wanted in logs:
            return wanted
        return next((key for key in logs if key.startswith("eval_") and key.endswith("loss")), None)
