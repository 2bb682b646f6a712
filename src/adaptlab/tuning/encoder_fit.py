"""Training an encoder student (NER, RE, text classification) on the HF Trainer, through the training layer.

Shared by every encoder task, so that ``accelerate launch`` / FSDP / DeepSpeed work unchanged: the task gives the
model, data, collator and metric; this module builds ``TrainingArguments`` (:func:`training_arguments`), applies
the ``strategy:`` block, evaluates and checkpoints each epoch on dev, keeps the best epoch, and saves the model.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from adaptlab.runs import get_logger
from adaptlab.tuning.families import unwrap
from adaptlab.tuning.settings import TrainerSettings, early_stopping_callbacks, training_arguments
from adaptlab.tuning.strategies.base import Strategy
from adaptlab.tuning.trainer import StrategyTrainer, finalize, summaries


class EncoderTrainerSettings(TrainerSettings):
    """``training:`` of the encoder students: TrainerSettings with defaults for small BERT-family models."""

    learning_rate: float = Field(
        1e-4, gt=0, description="peak learning rate; 1e-4 suits MiniLM-size students (BERT-base wants 2e-5 to 5e-5)")
    num_train_epochs: float = Field(
        20, gt=0, description="at most this many epochs; early stopping on dev usually ends sooner")
    per_device_train_batch_size: int = Field(16, ge=1, description="training sequences per device per forward pass")
    per_device_eval_batch_size: int = Field(64, ge=1, description="dev sequences per device per forward pass")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (decoupled)")
    warmup_steps: float = Field(0.1, ge=0, description="a step count, or below 1 a fraction of the training steps")
    early_stopping_patience: int | None = Field(5, ge=1, description="evaluations without a better dev metric")
    group_by_length: bool = Field(True, description="batch sequences of similar length (less padding)")
    keep_checkpoints: bool = Field(False, description="keep full checkpoints (optimizer too) for resuming")

    @model_validator(mode="before")
    @classmethod
    def _max_length_is_not_a_trainer_setting(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_length" in data:
            raise ValueError("'max_length' is not a Trainer setting: set the top-level max_length "
                             "(the subword limit per sequence), not training.max_length")
        return data


def encoder_training_arguments(settings: EncoderTrainerSettings, output_dir: Path, has_eval: bool, metric: str):
    """Evaluate and checkpoint each epoch on dev, and keep the best epoch by ``metric``."""
    per_epoch = "epoch" if has_eval else "no"
    return training_arguments(
        settings, output_dir,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        length_column_name="length",
        eval_strategy=per_epoch,
        save_strategy=per_epoch,
        save_total_limit=1,
        save_only_model=not settings.keep_checkpoints,
        load_best_model_at_end=has_eval,
        metric_for_best_model=metric if has_eval else None,
        greater_is_better=True,
    )


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


@dataclass
class FitResult:
    model_dir: Path
    history: list[dict]
    dev_metrics: dict
    seconds: float
    strategies: dict[str, Any] = field(default_factory=dict)


def fit(model, tokenizer, collator, compute_metrics, metric: str, train_ds, dev_ds, cfg: EncoderTrainerSettings,
        output_dir: Path, strategies: list[Strategy] | None = None) -> FitResult:
    """Train with the strategy-aware Trainer, keep the best dev checkpoint, save ``output_dir/model``.

    ``model`` is already prepared by the strategies (``tuning.strategies.prepare``); they are finalised (e.g.
    adapters merged) before the model is saved.
    """
    strategies = strategies or []
    checkpoints = output_dir / "checkpoints"
    trainer = StrategyTrainer(
        model=model,
        args=encoder_training_arguments(cfg, checkpoints, has_eval=dev_ds is not None, metric=metric),
        train_dataset=train_ds,
        eval_dataset=dev_ds,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_metrics,
        callbacks=early_stopping_callbacks(cfg, dev_ds is not None),
        strategies=strategies,
    )
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    seconds = time.perf_counter() - started
    dev_metrics = trainer.evaluate() if dev_ds is not None else {}
    model_dir = output_dir / "model"
    final = finalize(strategies, trainer.accelerator.unwrap_model(trainer.model))
    if trainer.is_world_process_zero():
        final.save_pretrained(model_dir)
        inner = unwrap(final)  # an adapter's labels and head class, for models.adapters.load_pretrained
        inner.config.architectures = [type(inner).__name__]
        inner.config.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    finish_checkpoints(cfg, checkpoints)
    get_logger().info("saved model to %s after %.1fs of training", model_dir, seconds)
    return FitResult(model_dir, epoch_history(trainer.state.log_history), dev_metrics, seconds, summaries(strategies))
