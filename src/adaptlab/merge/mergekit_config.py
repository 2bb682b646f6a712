"""Merge configs in mergekit's dialect: told apart from adaptlab's and translated into :class:`MergeConfig`.

``adaptlab merge CONFIG`` reads both dialects; the engine only ever sees a MergeConfig. A file is in
mergekit's dialect when it has ``merge_method``, ``slices``, ``modules``, ``tokenizer_source``,
``tokenizer``, ``out_dtype`` or ``models[].parameters``, in adaptlab's when it has ``method``, ``rules``,
``vocab``, ``tokenizer_from``, ``chat_template_from``, ``config_from`` or ``models[].weight/density``;
one file with keys of both is an error. ``base_model``, ``models``, ``parameters``, ``dtype`` and
``chat_template`` mean the same in both, and the run options (``output``, ``name``, ``seed``, ``progress``,
``shard_size_mb``, ``allow_pickle``, ``allow_nonfinite``) go with either.

Translation, with mergekit's semantics (mergekit/config.py, plan.py, merge_methods/):

* ``merge_method``: linear, slerp, task_arithmetic, ties, dare_linear, dare_ties. mergekit's other
  methods (:data:`MERGEKIT_ONLY_METHODS`), ``slices`` / ``layer_range`` and ``modules`` are errors naming them.
* Parameters (:data:`PARAMETERS`): per model ``weight`` (required by linear and the task-vector methods,
  no default) and ``density`` (1); method-wide ``t`` (slerp, required), ``normalize``, ``lambda``,
  ``rescale``, ``int8_mask``. A per-model parameter in the top-level ``parameters`` is every model's
  default; a method-wide one under ``models[].parameters`` is never read by mergekit, so it is an error
  here, as is any unknown parameter. Gradients and filters become per-layer tensor rules
  (:mod:`adaptlab.merge.mergekit_settings`), which needs the base model's tensor names (headers only).
* The base model: linear averages it too when ``base_model`` is set (with the top-level weight, as
  mergekit adds it to the inputs); slerp needs it (t = 0); a task-vector method drops its
  ``models`` entry (mergekit never weighs the base).
* Values without effect in mergekit are dropped: ``int8_mask`` (the dtype of the TIES sign mask), and
  task_arithmetic's ``density`` and ``rescale`` (it sparsifies nothing). TIES with ``rescale: true``
  (an L1 rescaling of the trimmed task vectors) is not implemented: an error.
* ``dtype`` / ``out_dtype``: the output dtype is ``out_dtype``, else ``dtype``. adaptlab always computes
  in float32 and rounds once, where mergekit computes in ``dtype``.
* ``tokenizer_source`` (or ``tokenizer: {source}``): none -> ``vocab: strict`` (the tokenizers must be
  identical; mergekit would merge the rows blindly); ``base`` -> ``vocab: base``; ``union`` -> ``vocab:
  union``; a model -> ``vocab: base`` with ``tokenizer_from`` that model, which must be an input. Rows
  are aligned as :mod:`adaptlab.merge.vocab` says (mergekit drops padding rows and fills a token some
  inputs lack from the base, else the average of the inputs that have it).
* ``chat_template``: ``auto`` or a Jinja template; mergekit's built-in template names are an error.

Not translated (errors): LoRA references (``model+lora``), revisions (``model@rev``),
``tokenizer.tokens`` and ``tokenizer.pad_to_multiple_of``. DARE's random masks and rescaling
(:mod:`adaptlab.merge.methods`) differ from mergekit's, so a DARE merge matches mergekit in
distribution only.
"""

from __future__ import annotations

import math
import re
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adaptlab.config import deep_merge, parse_overrides, read_yaml, set_dotted, validate_config
from adaptlab.errors import ConfigError
from adaptlab.merge import files
from adaptlab.merge.config import MergeConfig
from adaptlab.merge.mergekit_settings import Resolved, evaluate, is_scalar, resolve_all, rules_for
from adaptlab.merge.methods import METHODS, check_params

MERGEKIT_KEYS = ("merge_method", "slices", "modules", "tokenizer_source", "tokenizer", "out_dtype")
ADAPTLAB_KEYS = ("method", "rules", "vocab", "tokenizer_from", "chat_template_from", "config_from")
SHARED_KEYS = ("base_model", "models", "parameters", "dtype", "chat_template")
RUN_OPTIONS = ("name", "output", "seed", "progress", "shard_size_mb", "allow_pickle", "allow_nonfinite")
MERGEKIT_ONLY_METHODS = ("arcee_fusion", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "karcher",
                         "model_stock", "multislerp", "nearswap", "nuslerp", "passthrough", "ram", "ramplus_tl", "sce")
DTYPES = ("float32", "float16", "bfloat16")
REQUIRED = object()


@dataclass(frozen=True)
class Parameter:
    kind: type  # float or bool
    per_model: bool
    default: Any = REQUIRED


def _task_vector_parameters(normalize: bool, rescale: bool) -> dict[str, Parameter]:
    return {"weight": Parameter(float, True), "density": Parameter(float, True, 1.0),
            "normalize": Parameter(bool, False, normalize), "lambda": Parameter(float, False, 1.0),
            "rescale": Parameter(bool, False, rescale), "int8_mask": Parameter(bool, False, False)}


PARAMETERS: dict[str, dict[str, Parameter]] = {
    "linear": {"weight": Parameter(float, True), "normalize": Parameter(bool, False, True)},
    "slerp": {"t": Parameter(float, False)},
    "task_arithmetic": _task_vector_parameters(normalize=False, rescale=False),
    "ties": _task_vector_parameters(normalize=True, rescale=False),
    "dare_linear": _task_vector_parameters(normalize=False, rescale=True),
    "dare_ties": _task_vector_parameters(normalize=False, rescale=True),
}
# Parameters mergekit reads but that change nothing for the method: dropped in translation.
WITHOUT_EFFECT = {method: {"int8_mask"} for method in PARAMETERS} | {
    "task_arithmetic": {"int8_mask", "density", "rescale"}, "ties": {"int8_mask", "rescale"}}
WITHOUT_EFFECT["linear"] = WITHOUT_EFFECT["slerp"] = set()


def load_merge_config(path: str | Path | None, overrides: list[str] | None = None,
                      flags: dict[str, Any] | None = None) -> MergeConfig:
    """A merge config from a YAML file in either dialect, ``key=value`` overrides (in the file's dialect) and
    CLI flags (``output``, ``dtype``), validated."""
    data = read_yaml(path) if path else {}
    data = deep_merge(data, parse_overrides(overrides or []))
    mergekit = is_mergekit(data, path)
    for dotted, value in (flags or {}).items():
        if value is not None:
            set_dotted(data, "out_dtype" if mergekit and dotted == "dtype" else dotted, value)
    if mergekit:
        return from_mergekit(data, path)
    return validate_config(MergeConfig, data, f" (from {path})" if path else "")


def is_mergekit(data: dict[str, Any], path: str | Path | None = None) -> bool:
    """Whether ``data`` (read from ``path``) is in mergekit's dialect; a mix of both dialects is a ConfigError
    naming the keys."""
    models = data.get("models") if isinstance(data.get("models"), list) else []
    entries = [(i, entry) for i, entry in enumerate(models) if isinstance(entry, dict)]
    theirs = [key for key in MERGEKIT_KEYS if key in data]
    theirs += [f"models.{i}.parameters" for i, entry in entries if "parameters" in entry]
    ours = [key for key in ADAPTLAB_KEYS if key in data]
    ours += [f"models.{i}.{key}" for i, entry in entries for key in ("weight", "density") if key in entry]
    if theirs and ours:
        keys = tuple(int(k) if k.isdigit() else k for k in ours[0].split("."))
        raise _Source(path).error(keys, f"the config mixes mergekit keys ({', '.join(theirs)}) with adaptlab keys "
                                        f"({', '.join(ours)}); write it in one dialect", label="adaptlab key")
    return bool(theirs)


class _Source:
    """Where a key is in the YAML file, for messages: ``file:line: key: problem``."""

    def __init__(self, path: str | Path | None):
        self.path = path
        self.root = None
        if path and Path(path).is_file():
            try:
                self.root = yaml.compose(Path(path).read_text(encoding="utf-8"))
            except yaml.YAMLError:
                self.root = None

    def error(self, keys: tuple, problem: str, label: str = "mergekit key") -> ConfigError:
        dotted = ".".join(str(k) for k in keys)
        line = self._line(keys)
        where = f"{self.path}:{line}: " if line else (f"{self.path}: " if self.path else "")
        return ConfigError(f"{where}{label} '{dotted}': {problem}")

    def _line(self, keys: tuple) -> int | None:
        node, line = self.root, None
        for key in keys:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
            else:
                return line
            if node is None:
                return line
            line = node.start_mark.line + 1
        return line


def from_mergekit(data: dict[str, Any], path: str | Path | None = None) -> MergeConfig:
    """The MergeConfig that merges as the mergekit config ``data`` (read from ``path``) says."""
    source = _Source(path)
    _check_structure(data, source)
    method = data["merge_method"]
    spec = PARAMETERS[method]
    top = data.get("parameters") or {}
    _check_parameters(top, spec, ("parameters",), source, top_level=True)
    entries = data["models"]
    for index, entry in enumerate(entries):
        _check_parameters(entry.get("parameters") or {}, spec, ("models", index, "parameters"), source, method)
    base = data.get("base_model")
    translator = _Translator(method, spec, top, _inputs(method, base, entries, source), source)
    settings = [top.get(key) for key in spec] + [own.get(key) for _, own, _ in translator.inputs for key in spec]
    if all(setting is None or is_scalar(setting) for setting in settings):
        baseline, rules = translator.resolve("", 0.0), []
        translator.check(baseline)
    else:
        baseline, rules = translator.per_tensor(base or translator.inputs[0][0], bool(data.get("allow_pickle")))
    config: dict[str, Any] = {key: data[key] for key in RUN_OPTIONS if key in data}
    config.update({
        "method": method, "base_model": base, "parameters": dict(baseline.shared), "rules": rules,
        "models": [{"model": model, **({"weight": weight} if method != "slerp" else {}),
                    **({"density": density} if density != 1.0 else {})}
                   for (model, _, _), weight, density in zip(translator.inputs, baseline.weights, baseline.densities)],
    })
    dtype = data.get("out_dtype") or data.get("dtype")
    if dtype is not None:
        config["dtype"] = _dtype(dtype, ("out_dtype" if data.get("out_dtype") else "dtype",), source)
    config.update(_tokenizer(data, base, [model for model, _, _ in translator.inputs], source))
    if data.get("chat_template") is not None:
        config["chat_template"] = _chat_template(data["chat_template"], source)
    return validate_config(MergeConfig, config, f" (translated from mergekit config {path})" if path else "")


def _check_structure(data: dict[str, Any], source: _Source) -> None:
    for key in data:
        if key not in MERGEKIT_KEYS + SHARED_KEYS + RUN_OPTIONS:
            raise source.error((key,), "unknown key (a mergekit config has merge_method, base_model, models, "
                                       "parameters, dtype, out_dtype, tokenizer_source, chat_template)")
    for key in ("slices", "modules"):
        if key in data:
            raise source.error((key,), f"'{key}' (layer_range stacking, passthrough frankenmerges) is not "
                                       "supported; adaptlab merges whole models: list them under 'models' (a "
                                       "slice over every layer of each model is the same merge)")
    method = data.get("merge_method")
    if method is None:
        raise source.error(("merge_method",), "missing")
    if method in MERGEKIT_ONLY_METHODS:
        raise source.error(("merge_method",), f"{method!r} is a mergekit method adaptlab does not implement "
                                              f"(it has {', '.join(PARAMETERS)}; not: "
                                              f"{', '.join(MERGEKIT_ONLY_METHODS)})")
    if method not in PARAMETERS:
        raise source.error(("merge_method",), f"{method!r} is not a merge method; choose one of "
                                              f"{', '.join(PARAMETERS)}")
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise source.error(("models",), "a list of {model: PATH, parameters: {...}} entries is required")
    for index, entry in enumerate(models):
        if not isinstance(entry, dict) or "model" not in entry:
            raise source.error(("models", index), "each entry is {model: PATH, parameters: {...}}")
        for key in entry:
            if key not in ("model", "parameters"):
                raise source.error(("models", index, key), "unknown key (an entry has model and parameters)")
        _check_reference(entry["model"], ("models", index, "model"), source)
    if data.get("base_model") is not None:
        _check_reference(data["base_model"], ("base_model",), source)


def _check_reference(value: Any, keys: tuple, source: _Source) -> None:
    if not isinstance(value, str) or not value:
        raise source.error(keys, "write the model as a path or hub name (a string)")
    if not Path(value).exists() and ("+" in value or "@" in value):
        kind = "a LoRA (model+lora)" if "+" in value else "a revision (model@revision)"
        raise source.error(keys, f"{value!r} names {kind}, which adaptlab does not read; give a model directory")


def _check_parameters(params: Any, spec: dict[str, Parameter], keys: tuple, source: _Source,
                      method: str | None = None, top_level: bool = False) -> None:
    if not isinstance(params, dict):
        raise source.error(keys, "a mapping of parameter names to values")
    per_model = [k for k, p in spec.items() if p.per_model]
    shared = [k for k, p in spec.items() if not p.per_model]
    for key, setting in params.items():
        if key not in spec:
            raise source.error(keys + (key,), f"unknown parameter (the method takes "
                                              f"{', '.join(per_model) or 'nothing'} per model"
                                              f"{' and ' + ', '.join(shared) + ' in parameters' if shared else ''})")
        if not top_level and not spec[key].per_model:
            raise source.error(keys + (key,), f"{key} is a method-wide parameter of {method}: mergekit reads it from "
                                              "the top-level parameters only (here it would be ignored); move it")
        _check_setting(setting, spec[key].kind, keys + (key,), source)


def _check_setting(setting: Any, kind: type, keys: tuple, source: _Source, conditional: bool = True) -> None:
    expected = "true or false" if kind is bool else "a number"
    if is_scalar(setting):
        if (kind is bool) != isinstance(setting, bool) or isinstance(setting, str):
            raise source.error(keys, f"{setting!r} is not {expected}")
        return
    if isinstance(setting, dict) and conditional:
        extra = set(setting) - {"filter", "value"}
        if extra or "value" not in setting:
            raise source.error(keys, "a condition is {filter: SUBSTRING, value: VALUE}"
                                     + (f" (unknown: {', '.join(map(str, sorted(extra)))})" if extra else ""))
        if setting.get("filter") is not None and not isinstance(setting["filter"], str):
            raise source.error(keys + ("filter",), "a filter is a substring of tensor names")
        _check_setting(setting["value"], kind, keys + ("value",), source, conditional=False)
        return
    if isinstance(setting, list) and setting:
        if all(is_scalar(item) for item in setting):
            for index, item in enumerate(setting):
                _check_setting(item, kind, keys + (index,), source)
            return
        if conditional and all(isinstance(item, dict) for item in setting):
            for index, item in enumerate(setting):
                _check_setting(item, kind, keys + (index,), source)
            return
    raise source.error(keys, f"expected {expected}, a list of them (a gradient over the layers)"
                             f"{', or {filter, value} conditions' if conditional else ''}")


def _inputs(method: str, base: str | None, entries: list[dict], source: _Source) -> list[tuple[str, dict, int | None]]:
    """The models adaptlab weighs, as mergekit builds its inputs: (path, own parameter settings, index in
    ``models`` or None for a base model mergekit adds)."""
    models = [entry["model"] for entry in entries]
    duplicates = sorted({m for m in models if models.count(m) > 1})
    if duplicates:
        raise source.error(("models",), f"{', '.join(duplicates)} listed twice")
    if method != "linear" and base is None:
        role = "slerp goes from it (t = 0) to the other model" if method == "slerp" else "task vectors are θ_i − θ_base"
        raise source.error(("base_model",), f"{method} needs base_model ({role})")
    own = [(entry["model"], entry.get("parameters") or {}, index) for index, entry in enumerate(entries)]
    if method == "linear":
        return own + ([(base, {}, None)] if base is not None and base not in models else [])
    others = [(model, settings, index) for model, settings, index in own if model != base]
    if method == "slerp" and len(others) != 1:
        raise source.error(("models",), f"slerp interpolates base_model and one other model; got {len(others)} other "
                                        "model(s)")
    return others


class _Translator:
    """Resolves every parameter of a mergekit config for one tensor, as mergekit does."""

    def __init__(self, method: str, spec: dict[str, Parameter], top: dict[str, Any],
                 inputs: list[tuple[str, dict, int | None]], source: _Source):
        self.method, self.spec, self.top, self.inputs, self.source = method, spec, top, inputs, source
        self.kept = [key for key in spec if key not in WITHOUT_EFFECT[method]]

    def resolve(self, name: str, t: float) -> Resolved:
        def value(key: str, scopes: list[dict]) -> Any:
            for scope in scopes:
                if key in scope:
                    found = evaluate(scope[key], name, t, self.spec[key].kind)
                    if found is not None:
                        return found
            return self.spec[key].default

        self._refuse_unimplemented(name, t)
        shared = tuple((k, value(k, [self.top])) for k in self.kept if not self.spec[k].per_model)
        weights = tuple(value("weight", [own, self.top]) if "weight" in self.spec else 1.0
                        for _, own, _ in self.inputs)
        densities = tuple(value("density", [own, self.top]) if "density" in self.kept else 1.0
                          for _, own, _ in self.inputs)
        return Resolved(shared, weights, densities)

    def _refuse_unimplemented(self, name: str, t: float) -> None:
        if self.method == "ties" and "rescale" in self.top and evaluate(self.top["rescale"], name, t, bool):
            raise self.source.error(("parameters", "rescale"), "true for ties rescales the trimmed task vectors by "
                                                               "their L1 norm in mergekit, which adaptlab does not "
                                                               "implement; remove it")

    def check(self, values: Resolved) -> None:
        """Missing required parameters and values adaptlab's methods refuse, named by their mergekit key."""
        for key, value in values.shared:
            if value is REQUIRED:
                raise self.source.error(("parameters", key), f"{self.method} needs {key} (e.g. parameters: "
                                                             f"{{{key}: 0.5}})")
        for (model, _, index), weight, density in zip(self.inputs, values.weights, values.densities):
            keys = ("models", index, "parameters") if index is not None else ("parameters",)
            if weight is REQUIRED:
                added = "" if index is not None else " (mergekit averages base_model too when linear has one)"
                raise self.source.error(keys + ("weight",), f"{self.method} needs a weight for {model}{added}; "
                                                            "mergekit has no default: set it under the model's "
                                                            "parameters, or once for all in the top-level parameters")
            if not (math.isfinite(weight) and 0.0 < density <= 1.0):
                problem = f"density {density} is not in (0, 1]" if math.isfinite(weight) else f"weight {weight}"
                raise self.source.error(keys, f"{problem} for {model}")
        try:
            check_params(METHODS[self.method], dict(values.shared))
        except ConfigError as exc:  # "parameters.KEY: problem"
            dotted, _, problem = str(exc).partition(": ")
            raise self.source.error(tuple(dotted.split(".")), problem) from None

    def per_tensor(self, model: str, allow_pickle: bool) -> tuple[Resolved, list[dict[str, Any]]]:
        """The config-wide values and the tensor rules for gradients and filters, from ``model``'s tensor names:
        the values outside every layer and filter, else (when those lack a required one) the most common."""
        names = _tensor_names(model, allow_pickle)
        resolved = resolve_all(names, self.resolve)
        for values in dict.fromkeys(resolved.values()):
            self.check(values)
        baseline = self.resolve("", 0.0)
        if REQUIRED in (*dict(baseline.shared).values(), *baseline.weights):
            found = list(resolved.values())
            baseline = max(dict.fromkeys(found), key=found.count)
        return baseline, rules_for(names, resolved, baseline)


def _tensor_names(model: str, allow_pickle: bool) -> list[str]:
    """The tensor names of ``model`` as the merge plan sees them (tied output embeddings included)."""
    from adaptlab.merge.plan import OUTPUT_EMBEDDING_NAMES, tied_aliases
    from adaptlab.merge.tensors_io import ModelTensors
    from adaptlab.models.checks import read_config

    directory = files.resolve_model_dir(model)
    with ExitStack() as stack:
        tensors = stack.enter_context(ModelTensors(directory, allow_pickle))
        aliases = tied_aliases(directory, read_config(Path(directory), "merge input"), tensors,
                               set(OUTPUT_EMBEDDING_NAMES))
        return list(tensors.names()) + sorted(aliases)


def _dtype(value: Any, keys: tuple, source: _Source) -> str:
    name = str(value).removeprefix("torch.")
    if name not in DTYPES:
        raise source.error(keys, f"{value!r}: adaptlab writes {', '.join(DTYPES)}")
    return name


def _tokenizer(data: dict[str, Any], base: str | None, inputs: list[str], source: _Source) -> dict[str, Any]:
    """``vocab`` and ``tokenizer_from`` for mergekit's ``tokenizer_source`` / ``tokenizer.source``."""
    if "tokenizer" in data and "tokenizer_source" in data:
        raise source.error(("tokenizer",), "set tokenizer_source or tokenizer, not both (as in mergekit)")
    keys, setting = ("tokenizer_source",), data.get("tokenizer_source")
    block = data.get("tokenizer")
    if block is not None:
        if not isinstance(block, dict):
            raise source.error(("tokenizer",), "a mapping {source: base | union | MODEL}")
        for key in block:
            if key != "source":
                raise source.error(("tokenizer", key), "not supported (adaptlab takes tokenizer.source only: "
                                                       "no per-token embedding recipes, no padding)")
        keys, setting = ("tokenizer", "source"), block.get("source", "union")  # mergekit's default
    if setting is None:
        return {}
    if setting in ("base", "union"):
        return {"vocab": setting}
    if not isinstance(setting, str) or setting not in inputs + ([base] if base else []):
        raise source.error(keys, f"{setting!r} is not base, union or one of the merged models "
                                 f"({', '.join(dict.fromkeys(([base] if base else []) + inputs))})")
    return {"vocab": "base", "tokenizer_from": setting}


def _chat_template(value: Any, source: _Source) -> str:
    if not isinstance(value, str) or (value != "auto" and not re.search(r"\{[{%]", value)):
        raise source.error(("chat_template",), f"{value!r}: give 'auto' (the template most inputs have) or the "
                                               "Jinja template itself (mergekit's built-in template names such as "
                                               "chatml are not shipped with adaptlab)")
    return value
