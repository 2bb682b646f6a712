"""A merge config written in mergekit's dialect (``mergekit_config.yml`` in the merged model directory).

:func:`to_mergekit_yaml` is the inverse of :mod:`adaptlab.merge.mergekit_config`: reading its output back
gives the same plan, tensor by tensor. mergekit runs it too (``mergekit-yaml mergekit_config.yml OUT``).

* method, base model, per-model ``weight`` / ``density``, method-wide parameters (defaults written out),
  ``chat_template`` (``chat_template_from``'s template, read from that model) and the vocabulary
  (``vocab: base`` -> ``tokenizer_source: base`` or the tokenizer's model; ``union`` -> ``union``).
* ``dtype: float32`` with ``out_dtype`` the output dtype: mergekit then computes in float32 and rounds
  once, as adaptlab does.
* linear with a base model that is not among ``models``: mergekit would average the base too, so it is
  listed with weight 0 (which adds exactly nothing).
* Tensor rules become mergekit conditions, per parameter: ``{filter: F, value: V}`` for every rule up
  to the last one that changes that parameter, in rule order, then ``{value: config-wide}``. mergekit,
  like adaptlab, takes the first condition whose filter is in the tensor name, so each tensor gets its
  first matching rule's values. A rule's filters are its pattern when that is a literal or an
  alternation of literals (``self_attn``, ``embed_tokens|lm_head``, ``model\\.layers\\.3\\.``), else the
  exact names of the tensors it decides (``names``, as the plan has them).
* ``skip`` (the base's tensor) and ``copy`` become values that select a tensor: task-vector methods
  weigh every model 0 (exactly the base) or only the copied one 1 with density 1 and lambda 1
  (θ_b + (θ_X − θ_b), equal to θ_X up to rounding); linear weighs the selected model 1, the others 0
  (exact); slerp takes t = 0 or t = 1 (exact).

Not expressible (:class:`NotExpressible`): a non-literal pattern without ``names``, an exact name that is
part of another tensor's name, and ``vocab: union`` around another model's tokenizer than the base's.
``config_from`` is not written (mergekit takes config.json from the base model), nor the special tokens
and generation config ``chat_template_from`` also brings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml

from adaptlab.errors import ConfigError
from adaptlab.merge import files
from adaptlab.merge.config import MergeConfig, TensorRule
from adaptlab.merge.methods import METHODS

LITERAL = re.compile(r"(?:[^\\.^$*+?{}\[\]()|]|\\[^A-Za-z0-9])+")
HEADER = "# This merge in mergekit's dialect, by adaptlab; rerun: adaptlab merge mergekit_config.yml --output DIR\n"


class NotExpressible(ConfigError):
    """The merge config has no exact mergekit equivalent."""


def to_mergekit_yaml(cfg: MergeConfig, names: Sequence[str] | None = None) -> str:
    """``cfg`` as a mergekit YAML; ``names`` (the plan's tensor names) are needed for non-literal rule patterns."""
    return HEADER + yaml.safe_dump(to_mergekit(cfg, names), sort_keys=False, default_flow_style=None,
                                   allow_unicode=True, width=120)


def to_mergekit(cfg: MergeConfig, names: Sequence[str] | None = None) -> dict[str, Any]:
    """``cfg`` as a mergekit config (a dict, see the module docstring)."""
    layout = _Layout(cfg)
    filters = [rule_filters(cfg.rules, index, names) for index in range(len(cfg.rules))]
    rule_values = [layout.values(rule) for rule in cfg.rules]
    out: dict[str, Any] = {"merge_method": cfg.method}
    if layout.base is not None:
        out["base_model"] = layout.base
    out["models"] = []
    for j, model in enumerate(layout.models):
        entry: dict[str, Any] = {"model": model}
        parameters = {key: _setting(filters, [values[key][j] for values in rule_values], default[j])
                      for key, default in layout.per_model.items()}
        if parameters:
            entry["parameters"] = parameters
        out["models"].append(entry)
    out["parameters"] = {key: _setting(filters, [values[key] for values in rule_values], default)
                         for key, default in layout.shared.items()}
    out["dtype"] = "float32"
    if cfg.dtype and cfg.dtype != "float32":
        out["out_dtype"] = cfg.dtype
    out.update(_tokenizer(cfg, layout.base))
    template = cfg.chat_template or (files.read_chat_template(cfg.chat_template_from) if cfg.chat_template_from
                                     else None)
    if template:
        out["chat_template"] = template
    return out


class _Layout:
    """mergekit's inputs for ``cfg`` and the values every tensor gets outside the rules."""

    def __init__(self, cfg: MergeConfig):
        self.cfg = cfg
        weights = {m.model: m.weight for m in cfg.models}
        densities = {m.model: m.density for m in cfg.models}
        if cfg.method == "slerp":
            self.base = cfg.base_model or cfg.models[0].model
            self.models = [self.base, cfg.models[0].model if cfg.base_model else cfg.models[1].model]
            self.weighted: list[str] = []
        else:
            self.base = cfg.base_model
            self.models = [m.model for m in cfg.models]
            if cfg.method == "linear" and cfg.base_model and cfg.base_model not in weights:
                self.models.append(cfg.base_model)
                weights[cfg.base_model] = 0.0
            self.weighted = list(self.models)
        method = METHODS[cfg.method]
        self.shared = {**method.defaults, **cfg.parameters}
        self.per_model: dict[str, list] = {}
        if self.weighted:
            self.per_model["weight"] = [weights[m] for m in self.models]
        if method.uses_density:
            self.per_model["density"] = [densities[m] for m in self.models]

    def values(self, rule: TensorRule) -> dict[str, Any]:
        """Every parameter's value (shared ones by name, per-model ones as a list) for tensors ``rule`` decides."""
        shared = dict(self.shared)
        per_model = {key: list(values) for key, values in self.per_model.items()}
        if rule.action == "merge":
            shared.update(rule.parameters)
            for key, given in (("weight", rule.weights), ("density", rule.densities)):
                if given is not None and key in per_model:
                    per_model[key][: len(given)] = given
        else:
            self._select(rule.copy_from if rule.action == "copy" else self.cfg.base_model, shared, per_model)
        return {**shared, **per_model}

    def _select(self, model: str | None, shared: dict[str, Any], per_model: dict[str, list]) -> None:
        """Values under which the merge returns ``model``'s tensor (see the module docstring)."""
        if self.cfg.method == "slerp":
            shared["t"] = 0.0 if model == self.models[0] else 1.0
            return
        chosen = [1.0 if m == model else 0.0 for m in self.models]
        per_model["weight"] = chosen
        if self.cfg.method != "linear" and model != self.base:
            shared["lambda"] = 1.0
            if "density" in per_model:
                per_model["density"] = [1.0 if m == model else d for m, d in zip(self.models, per_model["density"])]


def rule_filters(rules: Sequence[TensorRule], index: int, names: Sequence[str] | None) -> list[str]:
    """mergekit filters selecting what ``rules[index]`` matches: its literal alternatives, else the exact names
    it decides (it is the first rule to match them)."""
    rule = rules[index]
    parts = re.split(r"(?<!\\)\|", rule.match)
    if all(LITERAL.fullmatch(part) for part in parts):
        return [re.sub(r"\\(.)", r"\1", part) for part in parts]
    if names is None:
        raise NotExpressible(f"rules[{index}].match {rule.match!r} is a regular expression, not a plain substring "
                             "(a mergekit filter); pass the tensor names to spell out what it matches")
    won = [n for n in names if next((i for i, r in enumerate(rules) if re.search(r.match, n)), None) == index]
    for name in won:
        others = [other for other in names if other != name and name in other]
        if others:
            raise NotExpressible(f"rules[{index}]: tensor {name!r} is part of the name {others[0]!r}, so no "
                                 "mergekit filter selects it alone")
    return won


def _setting(filters: list[list[str]], values: list[Any], default: Any) -> Any:
    """A parameter's mergekit setting: the config-wide value, or conditions up to the last rule changing it."""
    changed = [i for i, value in enumerate(values) if value != default]
    if not changed:
        return default
    conditions = [{"filter": f, "value": values[i]} for i in range(changed[-1] + 1) for f in filters[i]]
    return conditions + [{"value": default}]


def _tokenizer(cfg: MergeConfig, base: str | None) -> dict[str, Any]:
    if cfg.vocab == "strict":
        return {}
    reference = cfg.tokenizer_from or cfg.base_model or cfg.models[0].model
    if reference == base:
        return {"tokenizer_source": cfg.vocab}
    if cfg.vocab == "union":
        raise NotExpressible(f"vocab: union around {reference}'s tokenizer: mergekit's union starts from the base "
                             "model's tokenizer")
    return {"tokenizer_source": reference}
