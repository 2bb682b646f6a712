"""``strategy.dynamic``: what trains, and how much each token counts, changes as training goes.

* ``lisa: {layers: n, switch_every: K, seed}`` (LISA, Pan et al. 2024; axolotl's ``lisa_n_layers`` /
  ``lisa_step_interval``): ``n`` of the ``L`` transformer layers train at a time, drawn uniformly without
  replacement every ``K`` optimizer steps; the embeddings and the head always train. The layers of period
  ``p = floor(step / K)`` are a function of ``(seed, p)`` alone, so a resumed run draws the same ones. The switch
  uses :class:`~adaptlab.tuning.schedules.TrainableSchedule`: every layer stays in the optimizer, and a
  resting layer gets no gradient, so it does not move at all (no weight decay, no step on stale Adam moments).
* ``loss: dft`` (Dynamic Fine-Tuning, Wu et al. 2025; TRL's ``SFTConfig(loss_type="dft")``), causal LMs only:
  each target token's cross-entropy is multiplied by its detached probability ``p_t = exp(-CE_t)``::

      L = sum_t sg(p_t) CE_t / N

  through :meth:`Strategy.token_loss_factor`; ``StrategyTrainer`` applies the factor to the numerator only, so
  ``N`` stays the target-token count of the whole accumulated batch (HF's ``num_items_in_batch``, counted over the
  shifted labels), or this micro-batch's when the model takes no loss kwargs. TRL 1.16's ``SFTTrainer`` computes
  ``-log p_t * exp(log p_t).detach()`` and divides by the same ``num_items_in_batch`` (or the micro-batch's count
  of target tokens when it is None), so the two agree; ``tests/tuning/test_dynamic.py`` checks loss and gradients
  against TRL on one padded, prompt-masked batch. With per-token ``weights`` in the batch, ``N = sum_t w_t``.

Refused before step 0: ``loss: dft`` on an encoder, ``lisa.layers`` not below the number of layers (that is full
fine-tuning), and LISA with ``layers.freeze_first`` or ``layers.gradual_unfreezing`` (both decide which layers
train; LISA would draw permanently frozen layers, or fight the unfreezing schedule). ``layers.freeze_embeddings``
and ``layers.lr_decay`` compose with LISA.
"""

from __future__ import annotations

import random
from typing import Any, Literal

import torch
from pydantic import Field

from adaptlab.config import StrictModel
from adaptlab.errors import StrategyError
from adaptlab.tuning.families import Family, Position
from adaptlab.tuning.strategies import register
from adaptlab.tuning.strategies.base import Strategy
from adaptlab.tuning.strategies.layers import count_layers


class LisaConfig(StrictModel):
    """Layerwise Importance Sampled AdamW: a few random layers train at a time (defaults as in LMFlow's LISA)."""

    layers: int = Field(2, ge=1, description="how many transformer layers train at a time (below the total)")
    switch_every: int = Field(20, ge=1, description="optimizer steps between two draws of the trainable layers")
    seed: int = Field(0, description="seed of the draws (the draw of period p depends on seed and p only)")


class DynamicConfig(StrictModel):
    """Schedules that change during training; formulas in ``adaptlab.tuning.strategies.dynamic``."""

    lisa: LisaConfig | None = Field(
        None, description="{layers: n, switch_every: K, seed}: n random layers train, redrawn every K steps; the "
                          "embeddings and the head always train")
    loss: Literal["nll", "dft"] = Field(
        "nll", description="causal LMs: nll, or dft (each token's cross-entropy times its detached probability)")


class Dynamic(Strategy):
    name = "dynamic"
    config: DynamicConfig

    def __init__(self, config: DynamicConfig, family: Family):
        super().__init__(config, family)
        self.reweights_tokens = config.loss == "dft"
        self.layer_total = 0
        self.schedule: Any = None

    def check(self, model: Any, others: dict[str, Strategy]) -> None:
        if self.config.loss == "dft" and self.family.kind != "causal_lm":
            raise StrategyError(self.name, f"loss: dft reweights a causal LM's next-token loss, and "
                                f"{self.family.describe(model)} is an encoder with a task head; remove loss: dft")
        lisa = self.config.lisa
        if lisa is None:
            return
        self.layer_total = count_layers(self.name, self.family, model)
        if lisa.layers >= self.layer_total:
            raise StrategyError(self.name, f"lisa.layers is {lisa.layers} but {self.family.describe(model)} has "
                                f"{self.layer_total} transformer layers; use fewer (training them all is plain "
                                "fine-tuning)")
        layers = others.get("layers")
        clashes = [key for key in ("freeze_first", "gradual_unfreezing")
                   if layers is not None and getattr(layers.config, key)]
        if clashes:
            raise StrategyError(self.name, f"lisa and layers.{clashes[0]} both decide which layers train; "
                                f"use one of them")

    def sampled(self, state: Any) -> frozenset[Position]:
        """The layers of the current period, plus the embeddings and the head."""
        lisa = self.config.lisa
        period = state.global_step // lisa.switch_every
        drawn = random.Random(f"lisa:{lisa.seed}:{period}").sample(range(self.layer_total), lisa.layers)
        return frozenset({"embeddings", "head", *drawn})

    def callbacks(self) -> list[Any]:
        if self.config.lisa is None:
            return []
        from adaptlab.tuning.schedules import TrainableSchedule  # transformers is imported only to train

        self.schedule = TrainableSchedule(self.name, self.family, self.sampled)
        return [self.schedule]

    def token_loss_factor(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        if self.config.loss != "dft":
            return None
        # imported here: the trainer module imports this package, so a module-level import would be circular
        from adaptlab.tuning.trainer import per_token_cross_entropy

        with torch.no_grad():
            cross_entropy, _ = per_token_cross_entropy(logits, labels)
            return torch.exp(-cross_entropy)

    def summary(self) -> dict[str, Any]:
        done: dict[str, Any] = {"loss": self.config.loss}
        if self.schedule is not None:
            done["lisa"] = {**self.config.lisa.model_dump(), "periods": self.schedule.history}
        return done


register(DynamicConfig, Dynamic)
