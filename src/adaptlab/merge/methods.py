"""Merge methods: pure functions that combine one tensor of several models into one output tensor.

Why pure functions: a merge is per-tensor arithmetic. Keeping each method a function of float32 tensors
(no files, no models, no dtype casts) lets the streaming engine call it one tensor at a time, and lets
tests check it against its formula and against mergekit on small random tensors.

Every method has the signature ``fn(base, tensors, weights, densities, params, generator) -> tensor`` and
is registered by name in :data:`METHODS` (the config's ``method`` key). Notation: θ_b the base model's
tensor, θ_i model i's tensor, δ_i = θ_i − θ_b its task vector, w_i its weight, p_i its density, λ the
``lambda`` parameter. The semantics and defaults follow mergekit 0.1.5 run in float32, except where a
docstring says otherwise (DARE's rescaling, linear's zero weight sum, tie-breaking in trimming).

Inputs are never modified in place; the result is a new float32 tensor of the same shape.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from adaptlab.errors import ConfigError

MergeFn = Callable[
    [torch.Tensor | None, Sequence[torch.Tensor], Sequence[float], Sequence[float], Mapping[str, Any],
     torch.Generator | None],
    torch.Tensor,
]

# Every parameter any method accepts, with the check its value must pass and what to write instead.
PARAMETER_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "normalize": (lambda v: isinstance(v, bool), "true or false"),
    "rescale": (lambda v: isinstance(v, bool), "true or false"),
    "lambda": (lambda v: _is_real(v) and math.isfinite(v), "a finite number"),
    "t": (lambda v: _is_real(v) and 0.0 <= v <= 1.0, "a number in [0, 1]"),
}

# |Σ w_i| below this counts as zero (mergekit's guard for the task-arithmetic divisor).
ZERO_WEIGHT_SUM = 1e-8
# slerp: |cos θ| above this means (anti)parallel, so interpolate linearly; norms at or below SLERP_EPS count as 1.
SLERP_DOT_THRESHOLD = 0.9995
SLERP_EPS = 1e-8


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method.

    ``n_models`` is the exact number of tensors it combines, counting the base tensor when one is given
    (slerp: 2), or None for any number. ``defaults`` are the method-wide parameters a config may omit;
    ``required`` the ones it must give. ``fn`` validates its inputs and then applies the formula.
    """

    name: str
    fn: MergeFn
    needs_base: bool
    n_models: int | None
    defaults: Mapping[str, Any]
    required: tuple[str, ...] = ()
    uses_weights: bool = True
    uses_density: bool = False
    summary: str = ""
    elementwise: bool = False  # out[k] depends on the inputs' entry k only: the engine may work in slices
    allowed: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "allowed", frozenset(self.defaults) | frozenset(self.required))


METHODS: dict[str, MergeMethod] = {}


def register(method: MergeMethod) -> MergeMethod:
    """Add ``method`` to :data:`METHODS`; a second method with the same name is a bug."""
    if method.name in METHODS:
        raise ValueError(f"merge method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def merge_method(name: str, *, needs_base: bool, defaults: Mapping[str, Any], n_models: int | None = None,
                 required: tuple[str, ...] = (), uses_weights: bool = True,
                 uses_density: bool = False, elementwise: bool = False) -> Callable[[MergeFn], MergeFn]:
    """Register the decorated formula under ``name``, wrapped so every call checks inputs and parameters."""

    def decorate(formula: MergeFn) -> MergeFn:
        @functools.wraps(formula)
        def checked(base, tensors, weights, densities, params, generator=None):
            method = METHODS[name]
            check_inputs(method, has_base=base is not None, weights=weights, densities=densities)
            _check_tensors(base, tensors, len(weights))
            resolved = {**method.defaults, **params}
            check_params(method, resolved)
            return formula(base, list(tensors), list(weights), list(densities), resolved, generator)

        summary = (formula.__doc__ or "").strip().splitlines()[0]
        register(MergeMethod(name, checked, needs_base, n_models, defaults, required, uses_weights, uses_density,
                             summary, elementwise))
        return checked

    return decorate


def get_method(name: str) -> MergeMethod:
    """The method registered as ``name``; a ConfigError lists the choices otherwise."""
    if name not in METHODS:
        raise ConfigError(f"method: {name!r} is not a merge method; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def check_params(method: MergeMethod, params: Mapping[str, Any], where: str = "parameters") -> None:
    """Reject unknown keys, missing required keys and bad values of method-wide parameters.

    ``params`` are the parameters after defaults and rule overrides were applied; ``where`` names the
    config key they came from, for the message.
    """
    allowed = ", ".join(sorted(method.allowed)) or "none"
    for key, value in params.items():
        if key not in method.allowed:
            raise ConfigError(f"{where}.{key}: method {method.name} has no parameter {key!r} (allowed: {allowed})")
        accepts, expected = PARAMETER_RULES[key]
        if not accepts(value):
            raise ConfigError(f"{where}.{key}: {value!r} is not valid for {method.name}; expected {expected}")
    missing = [key for key in method.required if key not in params]
    if missing:
        raise ConfigError(f"{where}: method {method.name} needs {', '.join(missing)} "
                          f"(e.g. {where}: {{{missing[0]}: 0.5}})")


def check_inputs(method: MergeMethod, *, has_base: bool, weights: Sequence[float], densities: Sequence[float],
                 where: str = "models") -> None:
    """Check the input models against the method: base present, model count, weights and densities.

    The engine can call this once before merging; every method call repeats it cheaply.
    """
    if len(weights) != len(densities):
        raise ConfigError(f"{where}: {len(weights)} weights but {len(densities)} densities")
    if not weights:
        raise ConfigError(f"{where}: method {method.name} needs at least one model")
    if method.needs_base and not has_base:
        raise ConfigError(f"base_model: method {method.name} needs a base model (the task vectors are θ_i − θ_base)")
    total = len(weights) + int(has_base)
    if method.n_models is not None and total != method.n_models:
        raise ConfigError(
            f"{where}: method {method.name} combines exactly {method.n_models} models: base_model (t=0) and one "
            f"model (t=1), or two models and no base_model (the first is t=0); got {len(weights)} model(s) "
            f"{'and' if has_base else 'and no'} base_model")
    for index, (weight, density) in enumerate(zip(weights, densities)):
        if not (_is_real(weight) and math.isfinite(weight)):
            raise ConfigError(f"{where}[{index}].weight: {weight!r} is not a finite number")
        if not (_is_real(density) and 0.0 < density <= 1.0):
            raise ConfigError(f"{where}[{index}].density: {density!r} is not in (0, 1]")
        if density != 1.0 and not method.uses_density:
            raise ConfigError(f"{where}[{index}].density: method {method.name} keeps every entry, so density "
                              f"{density} would be ignored; remove it or use ties, dare_linear or dare_ties")
        if weight != 1.0 and not method.uses_weights:
            raise ConfigError(f"{where}[{index}].weight: method {method.name} has no per-model weights, so "
                              f"weight {weight} would be ignored; remove it (slerp is steered by parameters.t)")


def tensor_generator(seed: int, name: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded from (seed, tensor name), for DARE.

    The seed is the first 63 bits of sha256(f"{seed}:{name}"), so a tensor's random mask depends only on
    the run seed and its own name: stable across processes (unlike ``hash()``), the order tensors are
    merged in, and which other tensors exist.
    """
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return generator


def describe_methods() -> str:
    """One line per method for CLI help: name, what it does, base requirement and parameters."""
    lines = []
    for method in METHODS.values():
        params = [f"{key}={value}" for key, value in method.defaults.items()]
        params += [f"{key} (required)" for key in method.required]
        base = "needs base_model" if method.needs_base else "base_model optional"
        density = "; per-model density" if method.uses_density else ""
        lines.append(f"{method.name}: {method.summary} [{base}{density}; parameters: {', '.join(params) or 'none'}]")
    return "\n".join(lines)


# --- methods -------------------------------------------------------------------------------------------------


@merge_method("linear", needs_base=False, defaults={"normalize": True}, elementwise=True)
def linear(base, tensors, weights, densities, params, generator=None) -> torch.Tensor:
    """Weighted average of the models: out = Σ w_i θ_i / Σ w_i (Σ w_i θ_i when normalize is false).

    The base model is not part of the average unless it is also listed among the models. With normalize
    and |Σ w_i| < 1e-8 this raises a ConfigError, where mergekit would divide by zero.
    """
    total = torch.zeros_like(tensors[0])
    for tensor, weight in zip(tensors, weights):
        total.add_(tensor, alpha=weight)
    if not params["normalize"]:
        return total
    weight_sum = torch.tensor(weights, dtype=torch.float32).sum()
    if abs(float(weight_sum)) < ZERO_WEIGHT_SUM:
        raise ConfigError(f"weights {list(weights)} sum to zero, so linear cannot normalise by their sum; "
                          "change the weights or set parameters.normalize: false")
    return total / weight_sum


@merge_method("task_arithmetic", needs_base=True, defaults={"normalize": False, "lambda": 1.0}, elementwise=True)
def task_arithmetic(base, tensors, weights, densities, params, generator=None) -> torch.Tensor:
    """Add weighted task vectors to the base: θ_b + λ·Σ w_i δ_i, with δ_i = θ_i − θ_b.

    With normalize the sum is divided by Σ w_i (by 1 when |Σ w_i| < 1e-8, as mergekit does). One model with
    weight λ on top of a domain base is the chat vector: θ_domain + λ·(θ_instruct − θ_base).
    """
    deltas = [tensor - base for tensor in tensors]
    return _combine(base, deltas, weights, params, elect_sign=False)


@merge_method("ties", needs_base=True, defaults={"normalize": True, "lambda": 1.0}, uses_density=True)
def ties(base, tensors, weights, densities, params, generator=None) -> torch.Tensor:
    """TIES: trim each task vector to its largest entries, elect a sign per entry, average the agreeing entries.

    1. trim: keep the k_i = max(1, ⌊p_i·n⌋) entries of δ_i with the largest |δ_i| (p_i = 1 keeps all);
    2. elect: s = +1 where Σ_i w_i δ̂_i ≥ 0, else −1;
    3. disjoint merge: m_i = [sign(w_i δ̂_i) = s]; out = θ_b + λ·Σ_i m_i w_i δ̂_i / Σ_i m_i w_i, where the
       divisor is used only with normalize (default) and a zero divisor counts as 1.
    Magnitude ties at the k-th largest value are broken by lower flat index (mergekit leaves it to the sort).
    """
    deltas = [_trim_by_magnitude(tensor - base, density) for tensor, density in zip(tensors, densities)]
    return _combine(base, deltas, weights, params, elect_sign=True)


_DARE_DEFAULTS = {"normalize": False, "lambda": 1.0, "rescale": True}
_DARE_RESCALING = """
    DARE drop: each entry of δ_i is kept independently with probability p_i (drawn from ``generator``) and,
    with rescale (default), multiplied by exactly 1/p_i, so E[δ̃_i] = δ_i. mergekit instead rescales by the
    L1 ratio ‖δ_i‖₁/‖δ̃_i‖₁, which on large tensors is 1/p_i up to O(1/√n); we keep the paper's unbiased
    1/p_i. Masks are drawn model by model, only for p_i < 1. normalize defaults to false, as in mergekit.
"""


@merge_method("dare_linear", needs_base=True, defaults=_DARE_DEFAULTS, uses_density=True, elementwise=True)
def dare_linear(base, tensors, weights, densities, params, generator=None) -> torch.Tensor:
    """DARE + task arithmetic: θ_b + λ·Σ w_i δ̃_i, with δ̃_i = δ_i randomly dropped to density p_i.

    With normalize the sum is divided by Σ w_i (by 1 when |Σ w_i| < 1e-8).
    """
    deltas = _dare_deltas(base, tensors, densities, params, generator)
    return _combine(base, deltas, weights, params, elect_sign=False)


@merge_method("dare_ties", needs_base=True, defaults=_DARE_DEFAULTS, uses_density=True, elementwise=True)
def dare_ties(base, tensors, weights, densities, params, generator=None) -> torch.Tensor:
    """DARE + TIES sign election: the ties formula with δ̂_i replaced by randomly dropped δ̃_i.

    s = +1 where Σ_i w_i δ̃_i ≥ 0, else −1; m_i = [sign(w_i δ̃_i) = s];
    out = θ_b + λ·Σ_i m_i w_i δ̃_i (divided by Σ_i m_i w_i, zero → 1, with normalize).
    """
    deltas = _dare_deltas(base, tensors, densities, params, generator)
    return _combine(base, deltas, weights, params, elect_sign=True)


dare_linear.__doc__ = f"{dare_linear.__doc__}{_DARE_RESCALING}"
dare_ties.__doc__ = f"{dare_ties.__doc__}{_DARE_RESCALING}"


@merge_method("slerp", needs_base=False, defaults={}, required=("t",), n_models=2, uses_weights=False)
def slerp(base, tensors, weights, densities, params, generator=None) -> torch.Tensor:
    """Spherical interpolation between two models, per tensor, falling back to linear when nearly parallel.

    Endpoints: a = base_model (t=0) and b = the one model (t=1); without a base model, the first and second
    model. Flattened, with â = a/‖a‖, b̂ = b/‖b‖ (a norm ≤ 1e-8 counts as 1), cos θ = clamp(â·b̂, −1, 1):
        out = sin((1−t)θ)/sin θ · a + sin(tθ)/sin θ · b      if |cos θ| ≤ 0.9995,
        out = (1−t)·a + t·b                                   otherwise (parallel or antiparallel).
    The unnormalised tensors are interpolated, so norms are interpolated too (mergekit's convention).
    """
    start, end = (base, tensors[0]) if base is not None else (tensors[0], tensors[1])
    t = float(params["t"])
    a, b = start.reshape(-1), end.reshape(-1)
    if a.numel() == 0:
        return (1 - t) * start + t * end
    norm_a, norm_b = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    norm_a = torch.where(norm_a > SLERP_EPS, norm_a, 1.0)
    norm_b = torch.where(norm_b > SLERP_EPS, norm_b, 1.0)
    cosine = torch.dot(a / norm_a, b / norm_b).clamp(-1.0, 1.0)
    if abs(float(cosine)) > SLERP_DOT_THRESHOLD:
        return ((1 - t) * a + t * b).reshape(start.shape)
    theta = torch.acos(cosine)
    sin_theta = torch.sin(theta)
    coef_a = torch.sin((1 - t) * theta) / sin_theta
    coef_b = torch.sin(t * theta) / sin_theta
    return (coef_a * a + coef_b * b).reshape(start.shape)


# --- building blocks -----------------------------------------------------------------------------------------


def _combine(base: torch.Tensor, deltas: list[torch.Tensor], weights: list[float], params: Mapping[str, Any],
             *, elect_sign: bool) -> torch.Tensor:
    """θ_b + λ·(Σ_i m_i w_i δ_i) / D, where m_i = 1 without sign election; D = Σ_i m_i w_i with normalize, else 1."""
    weighted = [delta * weight for delta, weight in zip(deltas, weights)]
    if elect_sign:
        positive = functools.reduce(torch.add, weighted) >= 0
        mixed = torch.zeros_like(base)
        divisor = torch.zeros_like(base)
        for term, weight in zip(weighted, weights):
            agrees = torch.where(positive, term > 0, term < 0)
            mixed += torch.where(agrees, term, 0.0)
            divisor += agrees * torch.tensor(weight, dtype=torch.float32)
        divisor = torch.where(divisor == 0, 1.0, divisor)
    else:
        mixed = functools.reduce(torch.add, weighted)
        divisor = torch.tensor(weights, dtype=torch.float32).sum()
        if abs(float(divisor)) < ZERO_WEIGHT_SUM:
            divisor = torch.ones((), dtype=torch.float32)
    if params["normalize"]:
        mixed = mixed / divisor
    if params["lambda"] != 1:
        mixed = mixed * params["lambda"]
    return base + mixed


def _trim_by_magnitude(delta: torch.Tensor, density: float) -> torch.Tensor:
    """δ with all but its k = max(1, ⌊density·n⌋) largest-magnitude entries set to 0 (ties: lower index first).

    Uses a k-th-value selection rather than a full sort, so the extra memory is a copy and a few masks.
    """
    count = delta.numel()
    if density >= 1 or count == 0:
        return delta
    keep_count = max(1, int(density * count))
    magnitude = delta.abs().reshape(-1)
    threshold = torch.kthvalue(magnitude, count - keep_count + 1).values
    keep = magnitude > threshold
    still_needed = keep_count - int(keep.sum())
    if still_needed > 0:
        at_threshold = torch.nonzero(magnitude == threshold).reshape(-1)[:still_needed]
        keep[at_threshold] = True
    return torch.where(keep.reshape(delta.shape), delta, 0.0)


def _dare_deltas(base: torch.Tensor, tensors: list[torch.Tensor], densities: list[float],
                 params: Mapping[str, Any], generator: torch.Generator | None) -> list[torch.Tensor]:
    """δ̃_i = δ_i ⊙ Bernoulli(p_i) (× 1/p_i with rescale), drawn in model order from ``generator``."""
    if generator is None:
        raise ValueError("DARE needs a torch.Generator; build one with tensor_generator(seed, tensor_name)")
    deltas = []
    for tensor, density in zip(tensors, densities):
        delta = tensor - base
        if density < 1:
            keep = torch.rand(delta.shape, generator=generator, device=delta.device) < density
            delta = torch.where(keep, delta, 0.0)
            if params["rescale"]:
                delta = delta / density
        deltas.append(delta)
    return deltas


def _check_tensors(base: torch.Tensor | None, tensors: Sequence[torch.Tensor], n_weights: int) -> None:
    """One float32 tensor per weight, all of one shape (the engine checked names and shapes: this catches bugs)."""
    if len(tensors) != n_weights:
        raise ValueError(f"{len(tensors)} tensors but {n_weights} weights")
    reference = base if base is not None else tensors[0]
    for tensor in ([base] if base is not None else []) + list(tensors):
        if tensor.dtype != torch.float32 or tensor.shape != reference.shape:
            raise ValueError(f"merge methods take float32 tensors of one shape; got {tensor.dtype} "
                             f"{tuple(tensor.shape)} beside {reference.dtype} {tuple(reference.shape)}")


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
