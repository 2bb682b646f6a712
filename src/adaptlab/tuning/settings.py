"""``TrainerSettings``: the ``training:`` block of every trainer, in the HF Trainer's own names.

One pydantic model that *is* a subset of ``transformers.TrainingArguments`` (TRL's ``SFTConfig`` idea), so what
a user knows about the Trainer carries over: ``learning_rate``, ``num_train_epochs``,
``per_device_train_batch_size``, ``gradient_accumulation_steps``, ``warmup_steps`` (a count, or a fraction of the
training steps when below 1), ``lr_scheduler_type``, ``weight_decay``, ``seed``, ``bf16``, ``report_to``,
``run_name``. Any other ``TrainingArguments`` field goes through ``trainer_args:``, checked against the installed
transformers. Each trainer subclasses it only to change defaults (an NER student wants 1e-4 and 20 epochs, a
causal LM 2e-5 and 1 epoch), so the names are the same everywhere.

:func:`training_arguments` is the one place that builds ``TrainingArguments``; a recipe adds only what it
decides itself (evaluation and save policy, best-model metric), and a ``trainer_args`` entry that would fight
one of those is an error naming the key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from adaptlab.config import StrictModel
from adaptlab.errors import ConfigError
from adaptlab.tuning.tracking import ReportTo, report_to_field, run_name_field

# names used before the training layer -> the name now (the HF Trainer's)
RENAMED = {
    "epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
    "eval_batch_size": "per_device_eval_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "warmup": "warmup_steps",
    "scheduler": "lr_scheduler_type",
    "lr_scheduler": "lr_scheduler_type",
    "min_lr_ratio": "min_lr_rate",
    "activation_checkpointing": "gradient_checkpointing",
    "resume": "resume_from_checkpoint",
}


def renamed_key_message(old: str, where: str) -> str:
    """One line telling the user the new name of an old training key."""
    return f"'{where}{old}' is now '{where}{RENAMED[old]}' (the HF Trainer's name)"


class TrainerSettings(StrictModel):
    """Trainer hyperparameters, named as in ``transformers.TrainingArguments``."""

    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate of the optimizer (AdamW)")
    num_train_epochs: float = Field(3.0, gt=0, description="passes over the training data; a fraction stops part-way")
    max_steps: int = Field(-1, ge=-1, description="optimizer steps; overrides num_train_epochs when > 0")
    per_device_train_batch_size: int = Field(8, ge=1, description="training examples per device per forward pass")
    per_device_eval_batch_size: int = Field(32, ge=1, description="evaluation examples per device per forward pass")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="forward passes per optimizer step (effective batch = this x batch size x devices)")
    warmup_steps: float = Field(0.0, ge=0, description="a step count, or below 1 a fraction of the training steps")
    lr_scheduler_type: str = Field("linear", description="any transformers scheduler: linear, cosine, constant, ...")
    min_lr_rate: float | None = Field(
        None, ge=0, lt=1, description="cosine only: decay to this fraction of learning_rate (cosine_with_min_lr)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (decoupled)")
    max_grad_norm: float = Field(1.0, ge=0, description="clip the gradient to this global L2 norm (0: no clipping)")
    seed: int = Field(
        42, description="seed of Python, NumPy and torch, and of the data order")
    bf16: bool | Literal["auto"] = Field("auto", description="auto: bf16 mixed precision where CUDA supports it")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward: less memory")
    logging_steps: int = Field(10, ge=1, description="log the training loss every N optimizer steps")
    report_to: ReportTo = report_to_field()
    run_name: str | None = run_name_field()
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after this many evaluations without a better metric (EarlyStoppingCallback)")
    resume_from_checkpoint: str | None = Field(None, description="a checkpoint directory to continue from")
    progress: bool = Field(True, description="progress bars and log lines on the console")
    trainer_args: dict[str, Any] = Field(
        default_factory=dict, description="any other TrainingArguments field, passed through unchanged")

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            old = [key for key in data if key in RENAMED and key not in cls.model_fields]
            if old:
                raise ValueError("; ".join(renamed_key_message(key, "") for key in old))
        return data

    @field_validator("trainer_args")
    @classmethod
    def _known_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        known = training_argument_names()
        for key in value:
            if key in cls.model_fields or key in RENAMED:
                name = RENAMED.get(key, key)
                raise ValueError(f"'{key}' has its own key: set training.{name}, not training.trainer_args.{key}")
            if key not in known:
                close = sorted(n for n in known if key.split("_")[0] in n)[:5]
                hint = f" (did you mean one of {close}?)" if close else ""
                raise ValueError(f"'{key}' is not a transformers.TrainingArguments field{hint}")
        return value

    @model_validator(mode="after")
    def _min_lr_needs_cosine(self) -> TrainerSettings:
        if self.min_lr_rate and self.lr_scheduler_type != "cosine":
            raise ValueError(f"min_lr_rate applies to lr_scheduler_type: cosine only, not {self.lr_scheduler_type!r}")
        return self


def training_argument_names() -> set[str]:
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init}


def resolve_bf16(setting: bool | str) -> bool:
    """``auto``: bf16 mixed precision when a CUDA device supports it; ``true`` on a machine without is an error."""
    import torch

    supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if setting == "auto":
        return supported
    if setting and not supported:
        raise ConfigError("training.bf16: true, but no CUDA device with bf16 support is available; "
                          "use bf16: auto or false")
    return bool(setting)


def training_arguments(settings: TrainerSettings, output_dir: str | Path, **decided: Any) -> Any:
    """``TrainingArguments`` from ``settings`` plus what the recipe ``decided`` (eval and save policy, ...).

    Order: settings < ``trainer_args`` < the recipe's decisions. A ``trainer_args`` key that the recipe also
    decides is a :class:`ConfigError`, since the recipe's value would silently win.
    """
    import torch
    from transformers import TrainingArguments

    clash = sorted(set(settings.trainer_args) & set(decided))
    if clash:
        raise ConfigError(f"training.trainer_args.{clash[0]} is set by adaptlab for this command and cannot be "
                          f"overridden (keys it sets: {sorted(decided)})")
    scheduler, scheduler_kwargs = settings.lr_scheduler_type, {}
    if settings.min_lr_rate:
        scheduler, scheduler_kwargs = "cosine_with_min_lr", {"min_lr_rate": settings.min_lr_rate}
    arguments: dict[str, Any] = {
        "output_dir": str(output_dir),
        "learning_rate": settings.learning_rate,
        "num_train_epochs": settings.num_train_epochs,
        "max_steps": settings.max_steps,
        "per_device_train_batch_size": settings.per_device_train_batch_size,
        "per_device_eval_batch_size": settings.per_device_eval_batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "warmup_steps": settings.warmup_steps,  # a float < 1 is a fraction of the training steps in transformers 5
        "lr_scheduler_type": scheduler,
        "lr_scheduler_kwargs": scheduler_kwargs,
        "weight_decay": settings.weight_decay,
        "max_grad_norm": settings.max_grad_norm,
        "seed": settings.seed,
        "data_seed": settings.seed,
        "bf16": resolve_bf16(settings.bf16),
        "activation_checkpointing": settings.gradient_checkpointing,
        "logging_steps": settings.logging_steps,
        "report_to": settings.report_to,
        "run_name": settings.run_name,
        "disable_tqdm": not settings.progress,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": torch.cuda.is_available(),
        **settings.trainer_args,
        **decided,
    }
    try:
        return TrainingArguments(**arguments)
    except ValueError as exc:  # transformers' own consistency checks (e.g. load_best_model_at_end needs eval)
        raise ConfigError(f"training: {exc}") from None
