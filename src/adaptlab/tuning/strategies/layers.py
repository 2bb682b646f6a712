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

  The top layer learns at ``eta`` and each layer below at ``xi`` times the one above it. (ELECTRA counts its pooler
  as one more level, so its top layer gets ``xi^2``; that is the same shape with another ``eta``.) The factors go
  through :meth:`Strategy.lr_scale`, so they multiply with other strategies' factors.
* ``gradual_unfreezing: {every: N, unit: steps|epochs}`` (ULMFiT): training runs in stages ``s = floor(t / N)``,
  ``t`` the optimizer step or the epoch. In stage ``s`` the head and the top ``min(s, L)`` layers train, and from
  stage ``L + 1`` on the embeddings too: stage 0 trains the head alone. It *composes* with the two freezes: they
  say what never trains, the schedule when the rest starts (stage ``L - i`` still belongs to layer ``i``, which
  simply stays frozen when ``i < k``).

A causal LM whose ``lm_head`` is tied to its input embeddings has one matrix, which the family counts as
embeddings: it follows the embeddings' freezing, learning rate and unfreezing stage.

**Why a schedule switches ``requires_grad`` only once training has begun** (:class:`TrainableSchedule`, also used
by LISA in ``strategy.dynamic``): the HF Trainer builds its optimizer from the parameters that require a gradient
*at that moment*, so a parameter frozen before would never be updated after its unfreeze. The schedule therefore
starts in ``on_train_begin``, when the optimizer already holds every trainable parameter, and sets
``requires_grad`` at the start of each optimizer step. A frozen parameter gets no gradient (``grad`` is None), and
torch's optimizers skip a parameter without a gradient altogether. A zero gradient would not do: AdamW would still
apply weight decay and move the parameter by its running moments. Backward also skips the frozen weights, and
gradient clipping does not count them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field
from transformers import TrainerCallback

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


class TrainableSchedule(TrainerCallback):
    """Trains only the positions ``trainable(state)`` allows, switching at the start of each optimizer step.

    Acts on the parameters that require a gradient when training begins (the others, frozen by a strategy or a PEFT
    wrapper, stay frozen); see the module docstring for why it starts then. ``history`` records each change:
    ``{"step", "layers", "embeddings"}``.
    """

    def __init__(self, strategy: str, family: Family, trainable: Callable[[Any], frozenset[Position]]):
        self.strategy = strategy
        self.family = family
        self.trainable = trainable
        self.scheduled: list[tuple[Any, Position]] = []
        self.current: frozenset[Position] | None = None
        self.history: list[dict[str, Any]] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       **kwargs: Any) -> None:
        positions = self.family.positions(model)
        self.scheduled = [(param, positions[id(param)]) for param in model.parameters() if param.requires_grad]
        in_optimizer = {id(param) for group in optimizer.param_groups for param in group["params"]}
        missing = sum(id(param) not in in_optimizer for param, _ in self.scheduled)
        if missing:
            raise StrategyError(self.strategy, f"{missing} trainable parameters are not in the optimizer, so they "
                                "would never train once unfrozen; build the optimizer after preparing the model")
        self.current = None
        self.apply(state)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.apply(state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for param, _ in self.scheduled:
            param.requires_grad_(True)

    def apply(self, state: Any) -> None:
        allowed = self.trainable(state)
        if allowed == self.current:
            return
        self.current = allowed
        for param, position in self.scheduled:
            trains = position in allowed
            param.requires_grad_(trains)
            if not trains:
                param.grad = None
        self.history.append({"step": state.global_step, "layers": sorted(p for p in allowed if isinstance(p, int)),
                             "embeddings": "embeddings" in allowed})


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
        self.schedule: TrainableSchedule | None = None

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
        total = len(self.family.layers(model))
        self.lr_factors = {"embeddings": xi ** total, **{i: xi ** (total - 1 - i) for i in range(total)}, "head": head}
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
