"""mergekit's parameter settings (scalars, gradients, filters) resolved per tensor, and turned into tensor rules.

A mergekit parameter setting is one of

* a scalar: ``t: 0.5``;
* a gradient, a list of scalars ``v_0 .. v_{n-1}`` spread over the layers: at position ``t`` in [0, 1],
  with ``s = t·(n−1)``, ``i = ⌊s⌋``, ``f = s − i``, the value is ``(1−f)·v_i + f·v_{min(i+1, n−1)}``
  (a list of booleans takes ``v_⌊s⌋``);
* a condition ``{filter: F, value: V}`` or a list of them: the first whose ``F`` is a substring of the
  tensor name (or that has no filter, or ``filter: '*'``) gives ``V``, itself a scalar or a gradient. When
  none matches, the setting gives nothing and the next scope is asked.

Scopes, first to last: for a per-model parameter (``weight``, ``density``) the model's
``models[i].parameters`` then the top-level ``parameters``; for a method-wide one (``t``, ``lambda``,
``normalize``...) the top-level ``parameters`` only. Then the method's default, or an error when the
parameter is required.

Position: layer ``k`` of a stack of ``L`` layers is at ``t = k/(L−1)`` (``t = 1`` when ``L = 1``); tensors
outside the layers (embeddings, the final norm, ``lm_head``) are at ``t = 0``, so they take a
gradient's first value. These are mergekit's rules (mergekit/config.py ``evaluate_setting``,
parameter_resolver.py, plan.py), reproduced in the same float arithmetic.

adaptlab's tensor rules match regular expressions, first match wins, and override the config's
parameters, weights and densities. :func:`rules_for` builds them from the resolved value of every
tensor name: tensors whose values differ from the config-wide ones (``baseline``) are grouped by layer
and values, and each group gets the shortest literal name prefix (escaped, so it is also a plain
mergekit filter) that selects exactly that group among the tensors no earlier rule took, else the
group's exact names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LAYER = re.compile(r"^(.*?(?:^|\.)(?:layers|layer|h|blocks|block)\.)(\d+)\.")

Setting = Any  # a scalar, a list of scalars, a {filter, value} mapping, or a list of those


@dataclass(frozen=True)
class Resolved:
    """The values one tensor gets: method-wide parameters, then per-model weights and densities."""

    shared: tuple[tuple[str, Any], ...]
    weights: tuple[float, ...]
    densities: tuple[float, ...]


def is_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def evaluate(setting: Setting, name: str, t: float, kind: type) -> Any:
    """The value of ``setting`` for tensor ``name`` at layer position ``t``, or None (no condition matched)."""
    if isinstance(setting, Mapping):
        setting = [setting]
    if is_scalar(setting):
        return _typed(setting, kind)
    if not setting:
        return None
    if all(is_scalar(item) for item in setting):
        values = [_typed(item, kind) for item in setting]
        if kind is bool:
            return values[int(t * (len(values) - 1))]
        scaled = t * (len(values) - 1)
        low = int(scaled)
        high = min(len(values) - 1, low + 1)
        fraction = scaled - low
        return float((1 - fraction) * values[low] + fraction * values[high])
    for condition in setting:
        where = condition.get("filter")
        if where is None or where == "*" or (name and where in name):
            return evaluate(condition["value"], name, t, kind)
    return None


def _typed(value: Any, kind: type) -> Any:
    return float(value) if kind is float else value


def layer_positions(names: Sequence[str]) -> dict[str, tuple[str, float]]:
    """name -> (its layer's name prefix, e.g. ``model.layers.3.``, and its position t) for layer tensors.

    Stacks are told apart by the prefix before the index (``model.layers.``, ``vision_tower.layers.``),
    each with its own ``L`` = largest index + 1.
    """
    found = {name: match for name in names if (match := LAYER.match(name))}
    counts: dict[str, int] = {}
    for match in found.values():
        counts[match.group(1)] = max(counts.get(match.group(1), 0), int(match.group(2)) + 1)
    positions = {}
    for name, match in found.items():
        stack, index = match.group(1), int(match.group(2))
        size = counts[stack]
        positions[name] = (f"{stack}{index}.", index / (size - 1) if size > 1 else 1.0)
    return positions


def resolve_all(names: Sequence[str], resolve: Callable[[str, float], Resolved]) -> dict[str, Resolved]:
    """Every tensor's values, at its layer position (0 outside the layers)."""
    positions = layer_positions(names)
    return {name: resolve(name, positions[name][1] if name in positions else 0.0) for name in names}


def rules_for(names: Sequence[str], resolved: Mapping[str, Resolved], baseline: Resolved) -> list[dict[str, Any]]:
    """adaptlab tensor rules giving each name its ``resolved`` values where they differ from ``baseline``."""
    positions = layer_positions(names)
    groups: dict[tuple[str | None, Resolved], list[str]] = {}
    for name in names:
        if resolved[name] != baseline:
            layer = positions[name][0] if name in positions else None
            groups.setdefault((layer, resolved[name]), []).append(name)
    ordered = sorted(groups.items(), key=lambda item: -len(_common_prefix(item[1])))  # most specific first
    unclaimed = set(names)
    rules = []
    for (_, values), members in ordered:
        match = _selecting_pattern(members, unclaimed)
        unclaimed -= set(members)
        rules.append({"match": match, **overrides(values, baseline)})
    return rules


def overrides(values: Resolved, baseline: Resolved) -> dict[str, Any]:
    """A rule's ``parameters`` / ``weights`` / ``densities``: only what differs from the baseline."""
    rule: dict[str, Any] = {}
    base = dict(baseline.shared)
    changed = {key: value for key, value in values.shared if base.get(key) != value}
    if changed:
        rule["parameters"] = changed
    if values.weights != baseline.weights:
        rule["weights"] = list(values.weights)
    if values.densities != baseline.densities:
        rule["densities"] = list(values.densities)
    return rule


def _selecting_pattern(members: list[str], unclaimed: set[str]) -> str:
    """The escaped literal that selects exactly ``members`` among ``unclaimed``: their common prefix (cut after
    a dot, then whole) if it does, else an alternation of their exact names (anchored if a name is part of
    another's)."""
    prefix = _common_prefix(members)
    wanted = set(members)
    for candidate in dict.fromkeys([prefix[: prefix.rfind(".") + 1], prefix]):
        if candidate and {name for name in unclaimed if candidate in name} == wanted:
            return re.escape(candidate)
    if {name for name in unclaimed if any(member in name for member in members)} == wanted:
        return "|".join(re.escape(name) for name in members)
    return "|".join(f"^{re.escape(name)}$" for name in members)


def _common_prefix(names: list[str]) -> str:
    first, last = min(names), max(names)
    size = next((i for i, (a, b) in enumerate(zip(first, last)) if a != b), min(len(first), len(last)))
    return first[:size]
