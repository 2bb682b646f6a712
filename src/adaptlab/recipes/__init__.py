"""The recipes: one module per command, each read top to bottom (validate the config, call the building blocks,
write a run directory). ``adaptlab.recipes.ner.train(cfg)`` is what ``adaptlab ner train`` runs.

Submodules are imported on first access (``adaptlab.recipes.cls``), so ``import adaptlab`` stays light.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

_MODULES = frozenset(info.name for info in pkgutil.iter_modules(__path__))


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'adaptlab.recipes' has no attribute {name!r}")
    return importlib.import_module(f"{__name__}.{name}")  # the import also sets it as an attribute here


def __dir__() -> list[str]:
    return sorted(set(globals()) | _MODULES)
