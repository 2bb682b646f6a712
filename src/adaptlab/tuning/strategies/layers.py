"""``strategy.layers``: freeze, decay and unfreeze by depth (ULMFiT, ELECTRA), on encoders and causal LMs alike.

Depth is read through the :class:`~adaptlab.tuning.families.Family`: the head (classifier and pooler, or a causal
LM's final norm and ``lm_head``) sits above the top transformer layer, the embeddings below the bottom one. With
``L`` layers, numbered ``i = 0`` (bottom) to ``L - 1`` (top):

* ``freeze_embeddings``, ``freeze_first: k``: the embeddings, and layers ``0 .. k-1``, never train. They are frozen
  (``requires_grad`` False) when the model is prepared, so they are not even in the optimizer, and again when
  training begins, so parameters another strategy adds after this one (LoRA matrices inside a frozen layer) stay
  frozen too, whatever the order of the strategies.
* ``lr_decay: xi`` (layer-wise learning-rate decay; Howard & Ruder 2018, Clark et al. 2020) and
  ``head_lr_multiplier: m`` set each parameter's learning rate from the base rate ``eta`` (``learning_rate``)::

      lr(head) = eta * m        lr(layer i) = eta * xi^(L-1-i)        lr(embeddings) = eta * xi^L

  The top layer learns at ``eta`` and each layer below at ``xi`` times the one above it. (ELECTRA's layer-wise
  decay puts its top layer at ``xi^2`` below the head, the pooler taking the level between; ``learning_rate:
  eta xi^2`` with ``head_lr_multiplier: xi^-2`` gives that for all but the pooler, which is head here.) The factors
  go through :meth:`Strategy.lr_scale`, so they multiply with other strategies' factors.
* ``gradual_unfreezing: {every: N, unit: steps|epochs}`` (ULMFiT): training runs in stages ``s = floor(t / N)``,
  ``t`` the optimizer step or the epoch. In stage ``s`` the head and the top ``min(s, L)`` layers train, and from
  stage ``L + 1`` on the embeddings too: stage 0 trains the head alone. It *composes* with the two freezes: they
  say what never trains, the schedule when the rest starts (stage ``L - i`` still belongs to layer ``i``, which
  simply stays frozen when ``i < k``).

A causal LM whose ``lm_head`` is tied to its input embeddings has one matrix, which the family counts as
embeddings: it follows the embeddings' freezing, learning rate and unfreezing stage.

Both freezes and the unfreezing schedule are applied by :class:`~adaptlab.tuning.schedules.TrainableSchedule`
(shared with LISA), which explains why a schedule may only switch ``requires_grad`` once training has begun.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from adaptlab.config import StrictModel
from adaptlab.errors import ConfigError, StrategyError
from adaptlab.tuning.families import Family, Position
from adaptlab.tuning.strategies import register
from adaptlab.tuning.strategies.base import Strategy


def count_layers(strategy: str, family: Family, model: Any) -> int:
    """The number of transformer layers; a :class:`StrategyError` naming ``strategy`` when they cannot be found."""
    try:
        return len(family.layers(model))
    except ConfigError as exc:
        raise StrategyError(strategy, f"{exc}; this strategy works by layer, so it needs them") from None


def depth_lr_factors(total: int, xi: float, head: float = 1.0) -> dict[Position, float]:
    """Layer-wise decay (module docstring): ``{"head": m, i: xi^(L-1-i), "embeddings": xi^L}`` for ``L = total``."""
    return {"embeddings": xi ** total, **{i: xi ** (total - 1 - i) for i in range(total)}, "head": head}


class GradualUnfreezingConfig(StrictModel):
    """ULMFiT's gradual unfreezing: one more layer from the top every ``every`` ``unit``s, the embeddings last."""

    every: int = Field(ge=1, description="steps or epochs between two unfreezes (stage s = floor(t / every))")
    unit: Literal["steps", "epochs"] = Field("epochs", description="what `every` counts: optimizer steps or epochs")


class LayersConfig(StrictModel):
    """Freeze, decay and unfreeze by depth; formulas in ``adaptlab.tuning.strategies.layers``."""

    freeze_embeddings: bool = Field(False, description="never train the embeddings (and a tied lm_head)")
    freeze_first: int = Field(0, ge=0, description="never train the bottom k transformer layers")
    lr_decay: float | None = Field(
        None, gt=0, le=1, description="layer-wise lr decay xi: layer i trains at lr * xi^(L-1-i), embeddings at "
                                      "lr * xi^L, the head at lr")
    head_lr_multiplier: float = Field(1.0, gt=0, description="the head's parameters train at lr * this")
    gradual_unfreezing: GradualUnfreezingConfig | None = Field(
        None, description="{every: N, unit: steps|epochs}: start with the head alone, then unfreeze the top layer "
                          "and one more layer every N, the embeddings last (ULMFiT)")


class Layers(Strategy):
    name = "layers"
    config: LayersConfig

    def __init__(self, config: LayersConfig, family: Family):
        super().__init__(config, family)
        self.layer_total = 0
        self.lr_factors: dict[Position, float] = {}
        self.schedule: Any = None

    def check(self, model: Any, others: dict[str, Strategy]) -> None:
        self.layer_total = count_layers(self.name, self.family, model)
        if self.config.freeze_first > self.layer_total:
            raise StrategyError(self.name, f"freeze_first is {self.config.freeze_first} but "
                                f"{self.family.describe(model)} has {self.layer_total} transformer layers; use at most "
                                f"{self.layer_total}")

    def never_trained(self) -> set[Position]:
        frozen: set[Position] = set(range(self.config.freeze_first))
        if self.config.freeze_embeddings:
            frozen.add("embeddings")
        return frozen

    def prepare_model(self, model: Any) -> Any:
        frozen = self.never_trained()
        if frozen:
            positions = self.family.positions(model)
            for param in model.parameters():
                if positions[id(param)] in frozen:
                    param.requires_grad_(False)
        return model

    def lr_scale(self, model: Any) -> dict[int, float]:
        xi, head = self.config.lr_decay or 1.0, self.config.head_lr_multiplier
        if xi == 1.0 and head == 1.0:
            return {}
        self.lr_factors = depth_lr_factors(len(self.family.layers(model)), xi, head)
        return {key: self.lr_factors[position] for key, position in self.family.positions(model).items()}

    def trainable(self, state: Any) -> frozenset[Position]:
        """Positions that train at ``state``: the gradual-unfreezing stage's, less those never trained."""
        total = self.layer_total
        allowed: set[Position] = {"embeddings", "head", *range(total)}
        gradual = self.config.gradual_unfreezing
        if gradual is not None:
            clock = state.global_step if gradual.unit == "steps" else int(state.epoch or 0)
            stage = clock // gradual.every
            allowed = {"head", *range(total - min(stage, total), total)} | ({"embeddings"} if stage > total else set())
        return frozenset(allowed - self.never_trained())

    def callbacks(self) -> list[Any]:
        if self.config.gradual_unfreezing is None and not self.never_trained():
            return []
        from adaptlab.tuning.schedules import TrainableSchedule  # transformers is imported only to train

        self.schedule = TrainableSchedule(self.name, self.family, self.trainable)
        return [self.schedule]

    def summary(self) -> dict[str, Any]:
        done: dict[str, Any] = {"layers": self.layer_total, "frozen_layers": list(range(self.config.freeze_first)),
                                "frozen_embeddings": self.config.freeze_embeddings}
        if self.lr_factors:
            done["lr_factors"] = {str(position): factor for position, factor in self.lr_factors.items()}
        if self.config.gradual_unfreezing is not None and self.schedule is not None:
            done["gradual_unfreezing"] = {**self.config.gradual_unfreezing.model_dump(),
                                          "stages": self.schedule.history}
        return done


register(LayersConfig, Layers)
