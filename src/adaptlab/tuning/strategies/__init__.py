"""Tuning strategies, registered by name; the ``strategy:`` block of a training config holds one section each.

Adding a strategy touches one place: a module here that defines its config (a :class:`StrictModel`) and its
:class:`Strategy` subclass and calls :func:`register`, plus its import below.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, create_model, model_serializer

from adaptlab.config import StrictModel
from adaptlab.tuning.families import Family
from adaptlab.tuning.strategies.base import Strategy, TaskData

REGISTRY: dict[str, tuple[type[BaseModel], type[Strategy]]] = {}


def register(config_class: type[BaseModel], strategy_class: type[Strategy]) -> None:
    REGISTRY[strategy_class.name] = (config_class, strategy_class)


class ChosenStrategies(StrictModel):
    """Base of the ``strategy:`` block: it is written (config.yaml, metrics) with the chosen strategies only."""

    @model_serializer(mode="wrap")
    def _chosen_only(self, handler: Any) -> dict[str, Any]:
        return {name: section for name, section in handler(self).items() if section is not None}


def block_model() -> type[StrictModel]:
    """The ``strategy:`` block: one optional section per registered strategy (an unknown name is an error)."""
    fields: dict[str, Any] = {name: (config | None, Field(None, description=_summary(config)))
                              for name, (config, _) in REGISTRY.items()}
    return create_model("StrategyBlock", __base__=ChosenStrategies, __doc__="Tuning strategies to apply.", **fields)


def _summary(config: type[BaseModel]) -> str:
    """The first paragraph of a strategy config's own docstring: the ``description=`` of its key in the block."""
    doc = vars(config).get("__doc__") or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def resolve(block: BaseModel, family: Family, model: Any) -> list[Strategy]:
    """The strategies the block turns on, in registry order, each checked against ``model`` and the others."""
    chosen = [REGISTRY[name][1](section, family) for name in REGISTRY
              if (section := getattr(block, name, None)) is not None]
    by_name = {strategy.name: strategy for strategy in chosen}
    for strategy in chosen:
        strategy.check(model, {n: s for n, s in by_name.items() if n != strategy.name})
    return chosen


def prepare(block: BaseModel, family: Family, model: Any, task: TaskData | None = None
            ) -> tuple[Any, list[Strategy]]:
    """Resolve and check the block's strategies (before step 0); with ``task``, let each do its work before
    training (:meth:`Strategy.before_training`); then let each prepare the model in turn."""
    strategies = resolve(block, family, model)
    if task is not None:
        for strategy in strategies:
            model = strategy.before_training(model, task)
    for strategy in strategies:
        model = strategy.prepare_model(model)
    return model, strategies


def train_dataset(strategies: list[Strategy], dataset: Any, task: TaskData) -> Any:
    """The training rows after every strategy's :meth:`Strategy.train_dataset`, in turn."""
    for strategy in strategies:
        dataset = strategy.train_dataset(dataset, task)
    return dataset


# each strategy module registers itself on import; the block is built from the registry afterwards
# (strategy modules are imported here, one line each, in the order they prepare the model: peft wraps it first)
from adaptlab.tuning.strategies import peft  # noqa: E402,F401  # isort: skip
from adaptlab.tuning.strategies import layers  # noqa: E402,F401  # isort: skip
from adaptlab.tuning.strategies import dynamic  # noqa: E402,F401  # isort: skip
from adaptlab.tuning.strategies import fewshot  # noqa: E402,F401  # isort: skip
from adaptlab.tuning.strategies import distill  # noqa: E402,F401  # isort: skip
from adaptlab.tuning.strategies import domain  # noqa: E402,F401  # isort: skip

StrategyBlock = block_model()
