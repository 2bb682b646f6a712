"""The merge config (``adaptlab merge CONFIG``)::

    method: task_arithmetic          # linear | task_arithmetic | ties | dare_linear | dare_ties | slerp
    base_model: models/base
    models:
      - {model: models/domain, weight: 1.0}
      - {model: models/instruct, weight: 0.8, density: 0.5}   # density: ties / dare only
    parameters: {normalize: false, lambda: 1.0}                 # method-wide (t for slerp)
    rules:                                                       # first match wins, by re.search on names
      - {match: 'embed_tokens|lm_head', action: copy, copy_from: models/domain}
      - {match: 'norm', action: skip}                            # keep the base model's tensor
      - {match: 'layers\\.[0-3]\\.', parameters: {lambda: 0.5}}
    dtype: bfloat16                  # float32 | float16 | bfloat16; default: the base model's
    vocab: strict                    # strict | base | union (when tokenizers differ)
    tokenizer_from: models/domain    # default: base model
    chat_template_from: models/instruct  # or chat_template: a Jinja template, or auto (the inputs' most common)
    output: merged/

A mergekit YAML (``merge_method:``, ``models[].parameters``, gradients, filters, ``tokenizer_source``) is
accepted as well: :mod:`adaptlab.merge.mergekit_config` translates it into this config.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from adaptlab.config import StrictModel


class InputModel(StrictModel):
    model: str = Field(min_length=1, description="HF model directory (or hub name when online)")
    weight: float = Field(1.0, description="the model's weight in the method's formula")
    density: float = Field(1.0, gt=0, le=1, description="ties / dare: fraction of delta entries kept")


class TensorRule(StrictModel):
    match: str = Field(description="regular expression searched in each tensor name")
    action: Literal["merge", "skip", "copy"] = Field(
        "merge", description="merge (with 'parameters' overrides), skip (keep the base's tensor), copy (copy_from's)")
    copy_from: str | None = Field(None, description="copy: the model path (base_model or one of models)")
    parameters: dict[str, Any] = Field(
        {}, description="method parameters for matching tensors, overriding the top-level parameters")
    weights: list[float] | None = Field(None, description="per-model weights for matching tensors")
    densities: list[float] | None = Field(None, description="per-model densities for matching tensors (ties, dare)")

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _copy_source(self) -> TensorRule:
        if (self.action == "copy") != (self.copy_from is not None):
            raise ValueError("'copy_from' goes with action 'copy' (and only with it)")
        return self


class MergeConfig(StrictModel):
    name: str = Field("merge", description="names the run directory when output is not given")
    method: str = Field(
        "task_arithmetic", description="linear, task_arithmetic, ties, dare_linear, dare_ties or slerp (formulas in "
        "adaptlab.merge.methods)")
    base_model: str | None = Field(None, description="required by every method but linear")
    models: list[InputModel] = Field(min_length=1, description="the models to merge, each {model, weight, density}")
    parameters: dict[str, Any] = Field(
        {}, description="method-wide parameters, e.g. lambda and normalize (task vectors) or t (slerp)")
    rules: list[TensorRule] = Field(
        [], description="per-tensor rules, first match wins: merge with other parameters or weights, skip (keep the "
        "base's) or copy one model's")
    dtype: Literal["float32", "float16", "bfloat16"] | None = Field(None, description="default: the base's")
    vocab: Literal["strict", "base", "union"] = Field(
        "strict", description="when tokenizers differ: strict stops with the difference; base (the vocabulary of "
        "tokenizer_from) or union (plus the other inputs' tokens) align embedding rows by token string")
    tokenizer_from: str | None = Field(None, description="model whose tokenizer files are copied; default: base")
    chat_template_from: str | None = Field(None, description="model whose chat template and special tokens win")
    chat_template: str | None = Field(None, description="a Jinja chat template written into the output tokenizer, "
                                      "or 'auto': the template most inputs share (mergekit's chat_template)")
    config_from: str | None = Field(None, description="model whose config.json is copied; default: tokenizer_from")
    allow_pickle: bool = Field(False, description="also read .bin checkpoints (torch.load weights_only=True)")
    allow_nonfinite: bool = Field(False, description="merge inputs holding NaN or Inf (an error by default, "
                                  "naming the tensor: they spread through every merged value they touch)")
    shard_size_mb: float = Field(2000, gt=0, description="largest output shard, in MiB")
    seed: int = Field(
        0, description="seed of DARE's random drops (per tensor name, so the result does not depend on the order)")
    output: str | None = Field(None, description="merged model directory, also the run directory (must not exist)")
    progress: bool = Field(True, description="progress bars on the console")

    @field_validator("chat_template")
    @classmethod
    def _template_or_auto(cls, value: str | None) -> str | None:
        if value is not None and value != "auto" and "{" not in value:
            raise ValueError(f"{value!r} is neither 'auto' nor a Jinja template (a text with {{% ... %}} and "
                             "{{ ... }}); write the template itself")
        return value

    @model_validator(mode="after")
    def _one_chat_template(self) -> MergeConfig:
        if self.chat_template is not None and self.chat_template_from is not None:
            raise ValueError("set chat_template (a template) or chat_template_from (a model), not both")
        return self

    def all_models(self) -> list[str]:
        """Every distinct input path: base first, then models in order."""
        paths = ([self.base_model] if self.base_model else []) + [m.model for m in self.models]
        return list(dict.fromkeys(paths))
