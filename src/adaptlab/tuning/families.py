"""Family adapters: where a model's embeddings, transformer layers and task head are.

A strategy asks these questions and never looks at a model class itself, so one ``strategy:`` block works on
the NER, RE and classification students (encoders with a head: BERT, MiniLM, MPNet, RoBERTa, DistilBERT, ...)
and on causal LMs (Llama, Qwen2, SmolLM, ...).

The answer is read from the model at call time, through a PEFT wrapper too, so parameters a strategy adds
inside a layer (LoRA matrices) belong to that layer:

* **base**: ``model.base_model`` of the transformers model (``bert``, ``model``, ...);
* **layers**: the ``nn.ModuleList`` of the base holding ``config.num_hidden_layers`` blocks, bottom first;
* **embeddings**: the base's ``embeddings`` module (word, position, type embeddings and their norm), else the
  input embeddings;
* **head**: every parameter that is in neither: the classifier (and ``pooler``/``pre_classifier``), or a causal
  LM's final norm and ``lm_head``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from adaptlab.errors import ConfigError

Task = Literal["token_classification", "sequence_classification", "causal_lm", "multitask"]  # multitask: shared encoder
Position = int | Literal["embeddings", "head"]


def unwrap(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@dataclass(frozen=True)
class Family:
    """How a strategy finds its way around one kind of model; see the module docstring."""

    kind: Literal["encoder", "causal_lm"]
    task: Task
    peft_task_type: str  # peft.TaskType name

    def describe(self, model: Any) -> str:
        return f"{type(unwrap(model)).__name__} ({self.task.replace('_', ' ')})"

    def base(self, model: Any) -> nn.Module:
        inner = unwrap(model)
        return getattr(inner, "base_model", inner)

    def layers(self, model: Any) -> list[nn.Module]:
        """The transformer blocks, bottom first; a :class:`ConfigError` when they cannot be found."""
        base = self.base(model)
        expected = getattr(getattr(unwrap(model), "config", None), "num_hidden_layers", None)
        lists = [m for m in base.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
        matching = [m for m in lists if len(m) == expected] or ([max(lists, key=len)] if expected is None and lists
                                                                else [])
        if not matching:
            raise ConfigError(f"cannot find the transformer layers of {self.describe(model)}: no list of "
                              f"{expected} blocks in its base model")
        return list(matching[0])

    def embeddings(self, model: Any) -> list[nn.Module]:
        base = self.base(model)
        module = getattr(base, "embeddings", None)
        if isinstance(module, nn.Module):
            return [module]
        return [unwrap(model).get_input_embeddings()]

    def head_module_names(self, model: Any) -> list[str]:
        """Names of the task model's own modules outside the base (``classifier``, ``score``, ``lm_head``, ...)."""
        inner = unwrap(model)
        base = self.base(model)
        return [name for name, child in inner.named_children()
                if child is not base and any(True for _ in child.parameters())]

    def positions(self, model: Any) -> dict[int, Position]:
        """``id(parameter) -> "embeddings" | layer index | "head"`` for every parameter of ``model``."""
        where: dict[int, Position] = {}
        for module in self.embeddings(model):
            where.update({id(p): "embeddings" for p in module.parameters()})
        for index, layer in enumerate(self.layers(model)):
            where.update({id(p): index for p in layer.parameters()})
        return {id(p): where.get(id(p), "head") for p in model.parameters()}


ENCODER_TOKEN = Family("encoder", "token_classification", "TOKEN_CLS")
ENCODER_SEQUENCE = Family("encoder", "sequence_classification", "SEQ_CLS")
CAUSAL_LM = Family("causal_lm", "causal_lm", "CAUSAL_LM")
FAMILIES: dict[str, Family] = {f.task: f for f in (ENCODER_TOKEN, ENCODER_SEQUENCE, CAUSAL_LM)}
