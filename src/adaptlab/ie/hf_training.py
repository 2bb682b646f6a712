"""Thin glue between :class:`~adaptlab.config.TrainingConfig` and the HF Trainer.

Shared by the NER and RE students, so that ``accelerate launch`` / FSDP / DeepSpeed work unchanged:
we only build ``TrainingArguments`` and callbacks, the Trainer does the rest.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from adaptlab.config import TrainingConfig
from adaptlab.runs import get_logger


def training_arguments(cfg: TrainingConfig, output_dir: Path, has_eval: bool, metric: str):
    """Map our config onto ``TrainingArguments``: evaluate and checkpoint each epoch on dev."""
    import torch
    from transformers import TrainingArguments

    per_epoch = "epoch" if has_eval else "no"
    return TrainingArguments(
        output_dir=str(output_dir),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup,  # a float < 1 is a fraction of the training steps in transformers 5
        lr_scheduler_type=cfg.scheduler,
        seed=cfg.seed,
        data_seed=cfg.seed,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        length_column_name="length",
        eval_strategy=per_epoch,
        save_strategy=per_epoch,
        save_total_limit=1,
        save_only_model=not cfg.keep_checkpoints,
        load_best_model_at_end=has_eval,
        metric_for_best_model=metric if has_eval else None,
        greater_is_better=True,
        logging_steps=cfg.logging_steps,
        report_to="none",
        bf16=cfg.bf16 and torch.cuda.is_available(),
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def early_stopping(cfg: TrainingConfig, has_eval: bool) -> list:
    from transformers import EarlyStoppingCallback

    if has_eval and cfg.early_stopping_patience:
        return [EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience)]
    return []


def finish_checkpoints(cfg: TrainingConfig, checkpoint_dir: Path) -> None:
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


def fit(model, tokenizer, collator, compute_metrics, metric: str, train_ds, dev_ds, cfg: TrainingConfig,
        output_dir: Path) -> FitResult:
    """Train with the HF Trainer, keep the best dev checkpoint, save ``output_dir/model``."""
    from transformers import Trainer

    checkpoints = output_dir / "checkpoints"
    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, checkpoints, has_eval=dev_ds is not None, metric=metric),
        train_dataset=train_ds,
        eval_dataset=dev_ds,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=compute_metrics,
        callbacks=early_stopping(cfg, dev_ds is not None),
    )
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    seconds = time.perf_counter() - started
    dev_metrics = trainer.evaluate() if dev_ds is not None else {}
    model_dir = output_dir / "model"
    trainer.save_model(str(model_dir))
    finish_checkpoints(cfg, checkpoints)
    get_logger().info("saved model to %s after %.1fs of training", model_dir, seconds)
    return FitResult(model_dir, epoch_history(trainer.state.log_history), dev_metrics, seconds)
