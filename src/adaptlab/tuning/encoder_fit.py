"""Training an encoder student (NER, RE, text classification) on the HF Trainer, through the training layer.

Shared by every encoder task, so that ``accelerate launch`` / FSDP / DeepSpeed work unchanged: the task gives the
model, data, collator and metric; this module builds ``TrainingArguments`` (:func:`training_arguments`), applies
the ``strategy:`` block, evaluates and checkpoints on dev, keeps the best evaluation, and saves the model.

The schedule scales with the data (:func:`plan_training`). With ``n`` training rows, batch ``b``, gradient
accumulation ``g`` and ``w`` processes an epoch is ``s = ceil(ceil(n / (b w)) / g)`` optimizer steps, and training
runs ``max(ceil(num_train_epochs * s), min_steps)`` of them, so 16 sentences train for ``min_steps`` steps
(many epochs) rather than ``num_train_epochs`` single steps; the multi-task trainer counts its sampler's batches
instead of ``ceil(n / (b w))``. Dev is evaluated once an epoch, or every
``ceil(min_steps / 20)`` steps when an epoch is shorter, so ``early_stopping_patience`` evaluations always span
a real stretch of training; and early stopping never ends training before ``min_steps``.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from transformers import EarlyStoppingCallback

from adaptlab.runs import get_logger
from adaptlab.tuning.families import unwrap
from adaptlab.tuning.settings import TrainerSettings, training_arguments
from adaptlab.tuning.strategies.base import Strategy
from adaptlab.tuning.tracking import attach_trackers, resumed_mlflow_run
from adaptlab.tuning.trainer import StrategyTrainer, finalize, summaries

EVALUATIONS_PER_MIN_STEPS = 20  # dev is evaluated at least every min_steps / 20 steps when epochs are shorter
TRAINING_CHECK_ROWS = 256  # training rows a finished student is checked on for collapse (unlearnt_labels_warning)


class EncoderTrainerSettings(TrainerSettings):
    """``training:`` of the encoder students: TrainerSettings with defaults for small BERT-family models."""

    learning_rate: float = Field(
        1e-4, gt=0, description="peak learning rate; 1e-4 suits MiniLM-size students (BERT-base wants 2e-5 to 5e-5)")
    num_train_epochs: float = Field(
        20, gt=0, description="at most this many epochs; early stopping on dev usually ends sooner")
    min_steps: int = Field(
        200, ge=0, description="train at least this many optimizer steps: when num_train_epochs gives fewer "
        "(little data), more epochs are run, and early stopping never stops before it; 0: num_train_epochs alone")
    per_device_train_batch_size: int = Field(16, ge=1, description="training sequences per device per forward pass")
    per_device_eval_batch_size: int = Field(64, ge=1, description="dev sequences per device per forward pass")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (decoupled)")
    warmup_steps: float = Field(0.1, ge=0, description="a step count, or below 1 a fraction of the training steps")
    early_stopping_patience: int | None = Field(
        5, ge=1, description="evaluations without a better dev metric; dev is evaluated once an epoch, or every "
        "min_steps/20 steps when an epoch is shorter")
    group_by_length: bool = Field(True, description="batch sequences of similar length (less padding)")
    keep_checkpoints: bool = Field(False, description="keep full checkpoints (optimizer too) for resuming")

    @model_validator(mode="before")
    @classmethod
    def _max_length_is_not_a_trainer_setting(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_length" in data:
            raise ValueError("'max_length' is not a Trainer setting: set the top-level max_length "
                             "(the subword limit per sequence), not training.max_length")
        return data


@dataclass(frozen=True)
class TrainingPlan:
    """How long an encoder student trains and when dev is looked at, decided from the data size (``metrics.json``).

    ``extended``: ``steps`` was raised to ``min_steps``; ``eval_every``: optimizer steps between dev evaluations
    (0: no dev set); ``early_stopping_from``: the first step at which early stopping may end training
    (``min(min_steps, steps)``).
    """

    train_rows: int
    steps_per_epoch: int
    steps: int
    epochs: float
    extended: bool
    eval_every: int
    eval_per_epoch: bool
    early_stopping_patience: int | None
    early_stopping_from: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Everything but the notes (which go to ``metrics.json``'s own list)."""
        return {k: v for k, v in asdict(self).items() if k != "notes"}


def world_size() -> int:
    """The number of training processes (``WORLD_SIZE``, set by torchrun and accelerate; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def plan_training(cfg: EncoderTrainerSettings, train_rows: int, has_eval: bool, world_size: int = 1,
                  epoch_batches: int | None = None) -> TrainingPlan:
    """The step budget, evaluation interval and early-stopping floor for ``train_rows`` rows (module docstring).

    ``epoch_batches``: the batches of one epoch over all processes, when a batch sampler decides them (multi-task
    sampling) rather than ``ceil(train_rows / batch size)``. An explicit ``max_steps`` is obeyed as it is. The
    notes say in words what was raised and why.
    """
    if epoch_batches is None:
        batches = math.ceil(train_rows / (cfg.per_device_train_batch_size * world_size))
    else:  # the processes share out the sampler's batches
        batches = math.ceil(epoch_batches / world_size)
    per_epoch = max(1, math.ceil(batches / cfg.gradient_accumulation_steps))
    by_epochs = math.ceil(cfg.num_train_epochs * per_epoch)
    notes = []
    extended = cfg.max_steps <= 0 and by_epochs < cfg.min_steps
    if cfg.max_steps > 0:
        steps = cfg.max_steps
    elif extended:
        steps = cfg.min_steps
        notes.append(f"{train_rows} training rows make {per_epoch} optimizer step(s) per epoch, so "
                     f"num_train_epochs={cfg.num_train_epochs:g} would train only {by_epochs} steps; training runs "
                     f"min_steps={cfg.min_steps} steps instead ({steps / per_epoch:.4g} epochs)")
    else:
        steps = by_epochs
    floor = math.ceil(cfg.min_steps / EVALUATIONS_PER_MIN_STEPS)
    eval_every = (per_epoch if per_epoch >= floor else floor) if has_eval else 0
    if has_eval and eval_every > per_epoch:
        notes.append(f"an epoch is only {per_epoch} step(s): dev is evaluated every {eval_every} steps instead of "
                     "every epoch")
    patience = cfg.early_stopping_patience if has_eval else None
    return TrainingPlan(train_rows, per_epoch, steps, round(steps / per_epoch, 4), extended, eval_every,
                        has_eval and eval_every == per_epoch, patience, min(cfg.min_steps, steps), notes)


def encoder_training_arguments(settings: EncoderTrainerSettings, output_dir: Path, has_eval: bool, metric: str,
                               plan: TrainingPlan | None = None):
    """Evaluate and checkpoint on dev as ``plan`` says (each epoch without one), and keep the best evaluation by
    ``metric``; train ``plan.steps`` steps when that is more than ``num_train_epochs`` gives."""
    decided: dict[str, Any]
    if has_eval and plan is not None and not plan.eval_per_epoch:
        decided = {"eval_strategy": "steps", "eval_steps": plan.eval_every,
                   "save_strategy": "steps", "save_steps": plan.eval_every}
    else:
        per_epoch = "epoch" if has_eval else "no"
        decided = {"eval_strategy": per_epoch, "save_strategy": per_epoch}
    if plan is not None and plan.extended:
        decided["max_steps"] = plan.steps
    return training_arguments(
        settings, output_dir,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        length_column_name="length",
        save_total_limit=1,
        save_only_model=not settings.keep_checkpoints,
        load_best_model_at_end=has_eval,
        metric_for_best_model=metric if has_eval else None,
        greater_is_better=True,
        **decided,
    )


def early_stopping(plan: TrainingPlan) -> list[EarlyStoppingCallback]:
    """The Trainer callbacks that stop training as ``plan`` says: none without a dev set or patience."""
    if not plan.early_stopping_patience:
        return []
    return [EarlyStoppingFrom(plan.early_stopping_patience, plan.early_stopping_from)]


class EarlyStoppingFrom(EarlyStoppingCallback):
    """HF's early stopping (``patience`` evaluations without a better dev metric), never before step ``not_before``
    (the ``min_steps`` budget): on little data dev F1 often stays 0 through warm-up, which is no reason to stop."""

    def __init__(self, patience: int, not_before: int):
        super().__init__(early_stopping_patience=patience)
        self.not_before = not_before

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        stopping = control.should_training_stop
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if not stopping and state.global_step < self.not_before:
            control.should_training_stop = False


def finish_checkpoints(cfg: EncoderTrainerSettings, checkpoint_dir: Path) -> None:
    """Model-only checkpoints exist for best-model selection; drop them unless asked to keep them."""
    if not cfg.keep_checkpoints and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        get_logger().info("removed intermediate checkpoints in %s (keep_checkpoints=false)", checkpoint_dir)


def epoch_history(log_history: list[dict]) -> list[dict]:
    """Keep the training-loss and evaluation entries of ``trainer.state.log_history`` for curves."""
    keep = ("loss", "eval_loss", "eval_f1", "eval_macro_f1", "eval_micro_f1", "learning_rate")
    history = []
    for entry in log_history:
        row = {k: entry[k] for k in ("epoch", "step") if k in entry}
        row.update({k: entry[k] for k in keep if k in entry})
        if len(row) > 2:
            history.append(row)
    return history


def unlearnt_labels_warning(gold: list[str], predicted: list[str], unit: str, rows: int) -> str | None:
    """A warning when a trained student does not reproduce labels of its own training data, else None.

    ``gold`` and ``predicted`` are the labels (entity types, classes) found in ``rows`` training rows by the
    annotation and by the model. A model that predicts nothing, or one label only, has collapsed (too few
    steps, a learning rate too high or too low, or too few examples); one that never predicts a label it was
    shown has not learnt that label. Either way the run still succeeds, so the user must be told.
    """
    missing = sorted(set(gold) - set(predicted))
    if not missing:
        return None
    advice = ("more training steps (training.min_steps, num_train_epochs), another learning rate, or more "
              "labelled examples may help")
    if not predicted:
        return (f"degenerate model: it predicts no {unit} at all on {rows} of its own training rows, where the "
                f"annotation has {len(gold)}; {advice}")
    if len(set(predicted)) == 1 and len(set(gold)) > 1:
        return (f"degenerate model: it predicts only {predicted[0]!r} on {rows} of its own training rows, where "
                f"the annotation has {len(set(gold))} different labels; {advice}")
    counts = ", ".join(f"{label} ({gold.count(label)})" for label in missing)
    return (f"the model never predicts {counts} on {rows} of its own training rows (annotated count in "
            f"brackets); {advice}")


@dataclass
class FitResult:
    model_dir: Path
    history: list[dict]
    dev_metrics: dict
    seconds: float
    strategies: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def fit(model, tokenizer, collator, compute_metrics, metric: str, train_ds, dev_ds, cfg: EncoderTrainerSettings,
        output_dir: Path, strategies: list[Strategy] | None = None) -> FitResult:
    """Train with the strategy-aware Trainer for the steps :func:`plan_training` decides, keep the best dev
    checkpoint, save ``output_dir/model``.

    ``model`` is already prepared by the strategies (``tuning.strategies.prepare``); they are finalised (e.g.
    adapters merged) before the model is saved.
    """
    strategies = strategies or []
    checkpoints = output_dir / "checkpoints"
    has_eval = dev_ds is not None
    plan = plan_training(cfg, len(train_ds), has_eval, world_size())
    for note in plan.notes:
        get_logger().info(note)
    trainer = StrategyTrainer(
        model=model,
        args=encoder_training_arguments(cfg, checkpoints, has_eval=has_eval, metric=metric, plan=plan),
        train_dataset=train_ds,
        eval_dataset=dev_ds,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_metrics,
        callbacks=early_stopping(plan),
        strategies=strategies,
    )
    attach_trackers(trainer, output_dir)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    seconds = time.perf_counter() - started
    dev_metrics = {}
    if has_eval:
        with resumed_mlflow_run(output_dir):  # the final evaluation joins the training's MLflow run
            dev_metrics = trainer.evaluate()
    model_dir = output_dir / "model"
    final = finalize(strategies, trainer.accelerator.unwrap_model(trainer.model))
    if trainer.is_world_process_zero():
        final.save_pretrained(model_dir)
        inner = unwrap(final)  # an adapter's labels and head class, for models.adapters.load_pretrained
        inner.config.architectures = [type(inner).__name__]
        inner.config.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    finish_checkpoints(cfg, checkpoints)
    trained = steps_trained(trainer.state)
    get_logger().info("saved model to %s after %d optimizer steps (%.1fs)", model_dir, trainer.state.global_step,
                      seconds)
    return FitResult(model_dir, epoch_history(trainer.state.log_history), dev_metrics, seconds,
                     summaries(strategies), {**plan.to_json(), **trained}, plan.notes)


def steps_trained(state) -> dict[str, int | None]:
    """``trained_steps`` (optimizer steps run) and ``best_step``, the step of the checkpoint kept by dev
    (``checkpoint-N``; None without a dev set), from the Trainer's state."""
    best = state.best_model_checkpoint
    return {"trained_steps": state.global_step, "best_step": int(Path(best).name.rsplit("-", 1)[-1]) if best else None}
