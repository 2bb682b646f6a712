"""The strategy interface: a few small hooks, each a no-op unless a strategy needs it.

A trainer resolves the ``strategy:`` block into :class:`Strategy` objects (``strategies.resolve``) and calls,
in order:

1. ``check(model, others)`` before anything is trained: refuse (:class:`~adaptlab.errors.StrategyError`, naming
   the strategy and the reason) when the strategy does not fit this model, task or the other strategies;
2. ``prepare_model(model)`` -> the model to train (freeze parameters, wrap with PEFT adapters, ...);
3. ``lr_scale(model)`` -> ``{id(parameter): factor}``; the optimizer's learning rate of a parameter is the base
   rate times the product of every strategy's factor (layer-wise decay, a head multiplier, LoRA+);
4. ``token_loss_factor(logits, labels)`` (causal LMs) -> a per-token factor on the cross-entropy, and
   ``loss_terms(model, inputs, outputs)`` -> extra named terms added to the loss;
5. ``callbacks()`` -> ``transformers.TrainerCallback`` objects (schedules that act during training);
6. ``finalize(model)`` -> the model to save (e.g. adapters merged), and ``summary()`` for ``metrics.json``.

No strategy knows which task it serves: it asks its :class:`~adaptlab.tuning.families.Family` where the layers
and the head are.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel

from adaptlab.tuning.families import Family


class Strategy:
    """Base class: every hook does nothing. ``config`` is the strategy's validated config section."""

    name: ClassVar[str] = ""
    reweights_tokens: bool = False  # True when token_loss_factor returns a factor (the trainer then computes CE itself)

    def __init__(self, config: BaseModel, family: Family):
        self.config = config
        self.family = family

    def check(self, model: Any, others: dict[str, Strategy]) -> None:
        """Raise :class:`~adaptlab.errors.StrategyError` when this strategy cannot run here."""

    def prepare_model(self, model: Any) -> Any:
        return model

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
