"""``TrainableSchedule``: parts of a model train or rest as training goes (layers' freezes and gradual
unfreezing, LISA). A strategy gives it ``trainable(state) -> positions`` (``"embeddings"``, a layer index,
``"head"``, as :meth:`Family.positions` names them); it does the switching.

**Why it switches ``requires_grad`` only once training has begun.** The HF Trainer builds its optimizer from the
parameters that require a gradient *at that moment*, so a parameter frozen before would never be updated after
its unfreeze. The schedule therefore starts in ``on_train_begin``, when the optimizer already holds every trainable
parameter, and sets ``requires_grad`` at the start of each optimizer step. A resting parameter gets no gradient
(``grad`` is None), and torch's optimizers skip a parameter without a gradient altogether. A zero gradient would
not do: AdamW would still apply weight decay and move the parameter by its running moments (LISA's resting layers
have them from their earlier periods). Backward also skips the resting weights, and gradient clipping does not
count them. Not tried in multi-process (DDP) runs, where DDP must expect parameters without a gradient
(``find_unused_parameters``, which the HF Trainer turns on unless gradient checkpointing is on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from adaptlab.errors import StrategyError
from adaptlab.tuning.families import Family, Position


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
