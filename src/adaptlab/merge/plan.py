"""Check the inputs of a merge and decide, tensor by tensor, what the output gets.

Checks (every one is an error listing the offending names, never a skipped tensor):

* every input is a model directory with a ``config.json`` of the same ``model_type`` and
  ``architectures``;
* every tensor name is present in every input. One exception is tied embeddings: a model whose
  config says ``tie_word_embeddings`` may store only the input embedding; its output embedding
  (e.g. ``lm_head.weight``) is then read from the input embedding, so it takes part in the merge
  like any other tensor;
* every tensor has the same shape in every input. Different shapes of the embedding rows are a
  vocabulary mismatch, explained with the ``vocab`` options.

Rules are tried in order, the first whose regular expression is found in the tensor name wins:
``skip`` keeps the base model's tensor, ``copy`` takes the named model's tensor, ``merge`` merges
with the rule's parameter, weight and density overrides. Tensors that are not floating point (integer
buffers) are never merged: they must be equal in every input and are copied from the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adaptlab.errors import ConfigError, ModelError
from adaptlab.merge.config import MergeConfig
from adaptlab.merge.methods import METHODS, check_inputs, check_params
from adaptlab.merge.tensors_io import ModelTensors, parse_dtype
from adaptlab.merge.vocab import VocabAlignment, describe_vocab_difference, has_tokenizer, plan_vocab
from adaptlab.models.checks import read_config

INPUT_EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")
OUTPUT_EMBEDDING_NAMES = ("lm_head.weight", "embed_out.weight", "cls.predictions.decoder.weight")
LISTED = 8  # names shown in an error before "... and N more"


@dataclass(frozen=True)
class TensorPlan:
    """What the output tensor ``name`` is made of."""

    name: str
    shape: tuple[int, ...]
    action: str  # "merge", "skip" (base's), "copy" (inputs[source]'s)
    source: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    weights: tuple[float, ...] = ()
    densities: tuple[float, ...] = ()
    floating: bool = True
    vocab_rows: bool = False  # an embedding matrix whose rows are aligned by token string


@dataclass
class MergePlan:
    inputs: list[str]
    base: int | None  # index into inputs
    models: list[int]  # index into inputs of each configured model, in config order
    tensors: list[TensorPlan]
    dtype: torch.dtype
    aliases: list[dict[str, str]]  # per input: tensor name -> stored name (tied embeddings)
    configs: list[dict[str, Any]]
    vocab: VocabAlignment | None = None
    allow_nonfinite: bool = False  # NaN / Inf in an input tensor is an error unless set


def listing(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return shown + (f" ... and {len(names) - LISTED} more" if len(names) > LISTED else "")


def check_architectures(inputs: list[str], configs: list[dict[str, Any]]) -> None:
    reference = (configs[0].get("model_type"), configs[0].get("architectures"))
    for path, config in zip(inputs[1:], configs[1:]):
        found = (config.get("model_type"), config.get("architectures"))
        if found != reference:
            raise ModelError(f"architectures differ: {inputs[0]} is {reference[0]} {reference[1]}, {path} is "
                             f"{found[0]} {found[1]}; only models of one architecture can be merged")


def ties_embeddings(path: str, config: dict[str, Any]) -> bool:
    """``tie_word_embeddings`` from config.json, or as transformers resolves it when the file omits it
    (save_pretrained leaves out values equal to the architecture's default)."""
    saved = config.get("tie_word_embeddings")
    if isinstance(saved, bool):
        return saved
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError):
        return False
    return bool(getattr(config, "tie_word_embeddings", False))


def tied_aliases(path: str, config: dict[str, Any], source: ModelTensors, all_names: set[str]) -> dict[str, str]:
    """For a tied model storing only its input embedding: output embedding name -> input embedding name."""
    if not ties_embeddings(path, config):
        return {}
    present = set(source.names())
    embedding = next((n for n in present if n.endswith(INPUT_EMBEDDING_SUFFIXES)), None)
    if embedding is None:
        return {}
    return {name: embedding for name in OUTPUT_EMBEDDING_NAMES if name in all_names and name not in present}


def is_vocab_tensor(name: str) -> bool:
    return name.endswith(INPUT_EMBEDDING_SUFFIXES) or name in OUTPUT_EMBEDDING_NAMES


def check_names_and_shapes(inputs: list[str], sources: list[ModelTensors], aliases: list[dict[str, str]],
                           align_vocab: bool) -> list[str]:
    """The tensor names of the merge (the first input's order); raises on any missing name or shape."""
    per_input = [set(s.names()) | set(a) for s, a in zip(sources, aliases)]
    everything = set().union(*per_input)
    for path, names in zip(inputs, per_input):
        missing = sorted(everything - names)
        if missing:
            raise ModelError(f"{path} lacks {len(missing)} tensor(s) the other inputs have: {listing(missing)}; "
                             "the models are not the same architecture or a checkpoint is incomplete")
    order = list(sources[0].names()) + sorted(set(aliases[0]))
    mismatched, vocab_rows = [], []
    for name in order:
        shapes = [tuple(s.shape(a.get(name, name))) for s, a in zip(sources, aliases)]
        compared = [shape[1:] for shape in shapes] if align_vocab and is_vocab_tensor(name) else shapes
        if len(set(compared)) > 1:
            detail = f"{name}: " + ", ".join(f"{shape}" for shape in shapes)
            (vocab_rows if is_vocab_tensor(name) and len({s[1:] for s in shapes}) == 1 else mismatched).append(detail)
    if mismatched:
        raise ModelError(f"{len(mismatched)} tensor(s) differ in shape between the inputs ({', '.join(inputs)}): "
                         f"{listing(mismatched)}")
    if vocab_rows:
        raise ModelError(vocab_error(f"embedding rows differ: {listing(vocab_rows)}"))
    return order


def vocab_error(difference: str) -> str:
    return (f"the tokenizers differ ({difference}). Merging embeddings row by row would mix different "
            "tokens. Set vocab: base (align every model's rows to the output tokenizer by token string, "
            "dropping tokens it lacks) or vocab: union (also add the tokens only some models have, e.g. an "
            "instruct model's chat tokens)")


def side_file_indices(cfg: MergeConfig, inputs: list[str]) -> tuple[int, list[int]]:
    """Index of the tokenizer source (the output vocabulary) and the order inputs donate missing rows."""
    reference = inputs.index(cfg.tokenizer_from) if cfg.tokenizer_from in inputs else (
        inputs.index(cfg.base_model) if cfg.base_model else 0)
    first = [inputs.index(cfg.chat_template_from)] if cfg.chat_template_from in inputs else []
    return reference, first + [i for i in range(len(inputs)) if i not in first]


def check_same_tokenizers(cfg: MergeConfig, inputs: list[str], paths: list[str]) -> None:
    """vocab: strict: the inputs' tokenizers must be identical (checked when every input has one)."""
    if all(has_tokenizer(path) for path in paths):
        difference = describe_vocab_difference(paths, side_file_indices(cfg, inputs)[0])
        if difference:
            raise ModelError(vocab_error(difference))


def plan_vocabulary(cfg: MergeConfig, inputs: list[str], sources: list[ModelTensors],
                    aliases: list[dict[str, str]], names: list[str]) -> VocabAlignment:
    """The row alignment of vocab: base | union."""
    reference, priority = side_file_indices(cfg, inputs)
    paths = [str(source.path) for source in sources]
    if not all(has_tokenizer(path) for path in paths):
        missing = [name for name, path in zip(inputs, paths) if not has_tokenizer(path)]
        raise ModelError(f"vocab: {cfg.vocab} aligns rows by token string, but {listing(missing)} has no tokenizer")
    embedding = next((n for n in names if n.endswith(INPUT_EMBEDDING_SUFFIXES)), None)
    if embedding is None:
        raise ModelError(f"vocab: {cfg.vocab} needs an input embedding (a tensor ending in "
                         f"{' / '.join(INPUT_EMBEDDING_SUFFIXES)}); none found")
    rows = [s.shape(a.get(embedding, embedding))[0] for s, a in zip(sources, aliases)]
    return plan_vocab(paths, cfg.vocab, reference, priority, rows)


def rule_index(cfg: MergeConfig, name: str) -> int | None:
    """The index of the first rule whose pattern is found in ``name``."""
    return next((index for index, rule in enumerate(cfg.rules) if re.search(rule.match, name)), None)


def build_plan(cfg: MergeConfig, sources: list[ModelTensors]) -> MergePlan:
    method = METHODS.get(cfg.method)
    if method is None:
        raise ConfigError(f"method {cfg.method!r} is not one of {', '.join(sorted(METHODS))}")
    if method.needs_base and not cfg.base_model:
        raise ConfigError(f"method {cfg.method} needs base_model")
    inputs = cfg.all_models()
    base = inputs.index(cfg.base_model) if cfg.base_model else None
    params = {**method.defaults, **cfg.parameters}
    check_params(method, params)
    check_inputs(method, has_base=cfg.base_model is not None, weights=[m.weight for m in cfg.models],
                 densities=[m.density for m in cfg.models])
    paths = [str(source.path) for source in sources]  # inputs as resolved directories (hub names downloaded)
    configs = [read_config(Path(path), "merge input") for path in paths]
    check_architectures(inputs, configs)
    all_names = set().union(*(set(s.names()) for s in sources))
    aliases = [tied_aliases(p, c, s, all_names) for p, c, s in zip(paths, configs, sources)]
    if cfg.vocab == "strict":
        check_same_tokenizers(cfg, inputs, paths)
    names = check_names_and_shapes(inputs, sources, aliases, cfg.vocab != "strict")
    vocab = plan_vocabulary(cfg, inputs, sources, aliases, names) if cfg.vocab != "strict" else None
    weights = tuple(m.weight for m in cfg.models)
    densities = tuple(m.density for m in cfg.models)
    tensors, by_rule = [], {}
    for name in names:
        stored = aliases[0].get(name, name)
        floating = sources[0].dtype(stored).is_floating_point
        index = rule_index(cfg, name)
        rule = cfg.rules[index] if index is not None else None
        shape = tuple(sources[0].shape(stored))
        vocab_rows = vocab is not None and is_vocab_tensor(name)
        if vocab_rows:
            shape = (vocab.out_rows, *shape[1:])
        if not floating:
            tensors.append(TensorPlan(name, shape, "copy", 0, floating=False))
        elif rule is None:
            tensors.append(TensorPlan(name, shape, "merge", None, params, weights, densities, vocab_rows=vocab_rows))
        elif rule.action == "merge":
            if index not in by_rule:
                by_rule[index] = rule_settings(method, cfg, index, params, weights, densities)
            tensors.append(TensorPlan(name, shape, "merge", None, *by_rule[index], vocab_rows=vocab_rows))
        elif rule.action == "skip":
            if base is None:
                raise ConfigError(f"rule {rule.match!r}: 'skip' keeps the base model's tensor, but there is no "
                                  "base_model")
            tensors.append(TensorPlan(name, shape, "skip", base, vocab_rows=vocab_rows))
        else:
            if rule.copy_from not in inputs:
                raise ConfigError(f"rule {rule.match!r}: copy_from {rule.copy_from!r} is not one of the inputs "
                                  f"({', '.join(inputs)})")
            tensors.append(TensorPlan(name, shape, "copy", inputs.index(rule.copy_from), vocab_rows=vocab_rows))
    check_every_rule_matches(cfg, names)
    dtype = parse_dtype(cfg.dtype) if cfg.dtype else output_dtype_default(sources[base or 0], names, aliases[base or 0])
    return MergePlan(inputs, base, [inputs.index(m.model) for m in cfg.models], tensors, dtype, aliases, configs,
                     vocab, cfg.allow_nonfinite)


def rule_settings(method, cfg: MergeConfig, index: int, params: dict[str, Any], weights: tuple[float, ...],
                  densities: tuple[float, ...]) -> tuple[dict[str, Any], tuple[float, ...], tuple[float, ...]]:
    """Merge rule ``index``'s parameters, weights and densities: its overrides over the config's, checked."""
    rule, where = cfg.rules[index], f"rules[{index}]"
    merged_params = {**params, **rule.parameters}
    check_params(method, merged_params, where=f"{where}.parameters")
    own = {}
    for key, default in (("weights", weights), ("densities", densities)):
        values = getattr(rule, key)
        if values is not None and len(values) != len(default):
            raise ConfigError(f"{where} ({rule.match!r}): {key} has {len(values)} values for {len(default)} models")
        own[key] = tuple(values) if values is not None else default
    check_inputs(method, has_base=cfg.base_model is not None, weights=own["weights"], densities=own["densities"],
                 where=f"{where}.models")
    return merged_params, own["weights"], own["densities"]


def check_every_rule_matches(cfg: MergeConfig, names: list[str]) -> None:
    """A rule that no tensor name matches is a typo or a rule for another architecture: an error naming it."""
    for index, rule in enumerate(cfg.rules):
        if not any(re.search(rule.match, name) for name in names):
            raise ConfigError(f"rules[{index}].match {rule.match!r} matches no tensor of the inputs (e.g. "
                              f"{', '.join(names[:3])}); fix the pattern (re.search on tensor names) or remove the "
                              "rule")


def output_dtype_default(source: ModelTensors, names: list[str], aliases: dict[str, str]) -> torch.dtype:
    """The dtype of the (base) model's first floating-point tensor."""
    for name in names:
        dtype = source.dtype(aliases.get(name, name))
        if dtype.is_floating_point:
            return dtype
    return torch.float32
