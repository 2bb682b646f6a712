"""adaptlab: adapt language models to a domain when labelled data is scarce.

The Python API is what the CLI runs: each command is a recipe function in :mod:`adaptlab.recipes` that takes the
config model its command reads (the same keys as the YAML, see ``docs/config-reference.md``) and leaves a run
directory::

    import adaptlab

    run, metrics = adaptlab.recipes.ner.train(adaptlab.NERTrainConfig(train="train.jsonl"))
    records = adaptlab.recipes.ner.predict(str(run.model), ["The olm lives in caves."])

The names below are imported on first use (PEP 562 ``__getattr__``), so ``import adaptlab`` stays fast and loads
neither torch nor transformers; ``docs/python-api.md`` lists them with a runnable example.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module" or "module:attribute", loaded on first access
_EXPORTS = {
    "recipes": "adaptlab.recipes",
    "load_config": "adaptlab.config:load_config",
    "AdaptlabError": "adaptlab.errors:AdaptlabError",
    "ConfigError": "adaptlab.errors:ConfigError",
    "DataError": "adaptlab.errors:DataError",
    "TrainerSettings": "adaptlab.tuning.settings:TrainerSettings",
    "NERTrainConfig": "adaptlab.recipes.ner:NERTrainConfig",
    "NEREvalConfig": "adaptlab.recipes.ner:NEREvalConfig",
    "RETrainConfig": "adaptlab.recipes.relations:RETrainConfig",
    "REEvalConfig": "adaptlab.recipes.relations:REEvalConfig",
    "ClsTrainConfig": "adaptlab.recipes.cls:ClsTrainConfig",
    "ClsEvalConfig": "adaptlab.recipes.cls:ClsEvalConfig",
    "MultitaskConfig": "adaptlab.recipes.multitask:MultitaskConfig",
    "SynthConfig": "adaptlab.synth.config:SynthConfig",
    "ZeroShotConfig": "adaptlab.recipes.zero_shot:ZeroShotConfig",
    "MergeConfig": "adaptlab.merge.config:MergeConfig",
    "SearchConfig": "adaptlab.merge.search:SearchConfig",
    "merge_run": "adaptlab.merge.engine:merge_run",
    "load_merge_config": "adaptlab.merge.mergekit_config:load_merge_config",
    "FractalTrainRunConfig": "adaptlab.recipes.fractal:FractalTrainRunConfig",
    "FractalEvalConfig": "adaptlab.recipes.fractal:FractalEvalConfig",
    "FractalSFTConfig": "adaptlab.recipes.fractal_sft:FractalSFTConfig",
    "PrepareConfig": "adaptlab.recipes.lm_prepare:PrepareConfig",
    "LMTrainConfig": "adaptlab.lm.train:LMTrainConfig",
    "LMEvalConfig": "adaptlab.recipes.lm_evaluate:LMEvalConfig",
    "DomainInstructConfig": "adaptlab.recipes.domain_instruct:DomainInstructConfig",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'adaptlab' has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    value = importlib.import_module(module)
    if attribute:
        value = getattr(value, attribute)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
