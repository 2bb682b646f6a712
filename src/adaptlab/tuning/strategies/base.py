"""The strategy interface: a few small hooks, each a no-op unless a strategy needs it.

A trainer resolves the ``strategy:`` block into :class:`Strategy` objects (``strategies.resolve``) and calls,
in order:

1. ``check(model, others)`` before anything is trained: refuse (:class:`~adaptlab.errors.StrategyError`, naming
   the strategy and the reason) when the strategy does not fit this model, task or the other strategies;
2. ``before_training(model, task)`` -> the model to start from, when the trainer gives :class:`TaskData` (its
   texts, tokenizer, labels, run directory): work that comes before training proper, such as continued
   pretraining of the encoder on domain text or initialising the student from a teacher's layers;
3. ``prepare_model(model)`` -> the model to train (freeze parameters, wrap with PEFT adapters, ...);
4. ``train_dataset(dataset, task)`` -> the rows to train on (e.g. unlabeled rows with a teacher's soft labels),
   ``collator(collator)`` -> the batch builder for them, and ``extra_columns``: dataset columns the trainer keeps
   and hands to ``loss_terms`` but never to the model's ``forward``;
5. ``lr_scale(model)`` -> ``{id(parameter): factor}``; the optimizer's learning rate of a parameter is the base
   rate times the product of every strategy's factor (layer-wise decay, a head multiplier, LoRA+);
6. ``transform_inputs(model, inputs)`` -> the training batch to use (e.g. the student's own generations);
7. ``token_loss_factor(logits, labels)`` (causal LMs) -> a per-token factor on the cross-entropy,
   ``task_loss_weight()`` -> the weight of the task's own (gold-label) loss, and ``loss_terms(model, inputs,
   outputs)`` -> extra named terms added to the loss (``inputs`` include the ``extra_columns``);
8. ``callbacks()`` -> ``transformers.TrainerCallback`` objects (schedules that act during training);
9. ``finalize(model)`` -> the model to save (e.g. adapters merged), and ``summary()`` for ``metrics.json``.

No strategy knows which task it serves: it asks its :class:`~adaptlab.tuning.families.Family` where the layers
and the head are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from adaptlab.tuning.families import Family


@dataclass
class TaskData:
    """What a trainer tells its strategies about the task before training (``Strategy.before_training``).

    ``texts`` are the labelled training texts; ``labels`` the model's label names in id order (None for causal
    LMs); ``encode_unlabeled(texts)`` builds training rows for texts without gold labels, in the task's own
    encoding (a ``datasets.Dataset`` whose ``labels`` are all ignored), so a strategy can add such rows;
    ``output_dir`` is the run directory, where a strategy's stage writes under ``output_dir / <strategy name>``;
    ``report_to`` and ``run_name`` are the task's trackers, which a stage that trains reports to as well.
    """

    output_dir: Path
    tokenizer: Any
    texts: list[str]
    labels: list[str] | None = None
    encode_unlabeled: Callable[[list[str]], Any] | None = None
    max_length: int | None = None
    seed: int = 42
    report_to: str | list[str] = "none"
    run_name: str | None = None


class Strategy:
    """Base class: every hook does nothing. ``config`` is the strategy's validated config section."""

    name: ClassVar[str] = ""
    reweights_tokens: bool = False  # True when token_loss_factor returns a factor (the trainer then computes CE itself)
    extra_columns: ClassVar[tuple[str, ...]] = ()  # dataset columns for loss_terms, never passed to forward

    def __init__(self, config: BaseModel, family: Family):
        self.config = config
        self.family = family

    def check(self, model: Any, others: dict[str, Strategy]) -> None:
        """Raise :class:`~adaptlab.errors.StrategyError` when this strategy cannot run here."""

    def before_training(self, model: Any, task: TaskData) -> Any:
        return model

    def prepare_model(self, model: Any) -> Any:
        return model

    def train_dataset(self, dataset: Any, task: TaskData) -> Any:
        return dataset

    def collator(self, collator: Any) -> Any:
        return collator

    def transform_inputs(self, model: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        """The training batch to use instead of ``inputs`` (called for training steps only)."""
        return inputs

    def task_loss_weight(self) -> float:
        return 1.0

    def lr_scale(self, model: Any) -> dict[int, float]:
        return {}

    def token_loss_factor(self, logits: Any, labels: Any) -> Any | None:
        """Causal LMs: a tensor like ``labels`` multiplying each token's cross-entropy, or None."""
        return None

    def loss_terms(self, model: Any, inputs: dict[str, Any], outputs: Any) -> dict[str, Any]:
        return {}

    def callbacks(self) -> list[Any]:
        return []

    def finalize(self, model: Any) -> Any:
        return model

    def summary(self) -> dict[str, Any]:
        """What this strategy did, for ``metrics.json`` and the report."""
        return {}
