"""Merge methods against their formulas, against mergekit (when installed), and DARE's statistics."""

from __future__ import annotations

import math

import pytest
import torch

from adaptlab.errors import ConfigError
from adaptlab.merge.methods import (
    METHODS,
    MergeMethod,
    check_inputs,
    check_params,
    describe_methods,
    get_method,
    register,
    tensor_generator,
)

NAMES = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp")


def rand(*shape: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale + shift


def models_around(base: torch.Tensor, count: int, seed: int, scale: float = 0.01) -> list[torch.Tensor]:
    return [base + rand(*base.shape, seed=seed + i, scale=scale) for i in range(count)]


def merge(name: str, base, tensors, weights=None, densities=None, generator=None, **params) -> torch.Tensor:
    weights = [1.0] * len(tensors) if weights is None else weights
    densities = [1.0] * len(tensors) if densities is None else densities
    return METHODS[name].fn(base, tensors, weights, densities, params, generator)


def reference_trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the max(1, floor(density·n)) largest |δ| (stable sort: ties go to the lower index)."""
    if density >= 1:
        return delta
    keep_count = max(1, int(density * delta.numel()))
    order = torch.sort(delta.abs().reshape(-1), descending=True, stable=True).indices[:keep_count]
    mask = torch.zeros(delta.numel(), dtype=torch.bool)
    mask[order] = True
    return torch.where(mask.reshape(delta.shape), delta, 0.0)


def reference_elect(base, deltas, weights, normalize: bool, lam: float) -> torch.Tensor:
    """TIES sign election and disjoint mean, entry by entry in float64."""
    weighted = [d.double() * w for d, w in zip(deltas, weights)]
    positive = sum(weighted) >= 0
    mixed = torch.zeros_like(weighted[0])
    divisor = torch.zeros_like(weighted[0])
    for term, weight in zip(weighted, weights):
        agrees = (term > 0) & positive | (term < 0) & ~positive
        mixed += torch.where(agrees, term, 0.0)
        divisor += agrees.double() * weight
    divisor[divisor == 0] = 1
    return (base.double() + lam * (mixed / divisor if normalize else mixed)).float()


# --- registry and parameters -----------------------------------------------------------------------------------


def test_registry_holds_every_method_with_its_formula_in_the_docstring():
    assert set(NAMES) <= set(METHODS)
    for name in NAMES:
        method = get_method(name)
        assert method.name == name and "θ" in method.fn.__doc__ and "=" in method.fn.__doc__
        assert method.summary and method.summary in describe_methods()
    assert [METHODS[n].needs_base for n in NAMES] == [False, True, True, True, True, False]
    assert METHODS["slerp"].required == ("t",) and METHODS["slerp"].n_models == 2
    assert dict(METHODS["ties"].defaults) == {"normalize": True, "lambda": 1.0}
    assert dict(METHODS["dare_ties"].defaults) == {"normalize": False, "lambda": 1.0, "rescale": True}
    with pytest.raises(TypeError):
        METHODS["ties"].defaults["normalize"] = False  # read-only, so no call can change another's defaults


def test_unknown_method_and_duplicate_registration_are_refused():
    with pytest.raises(ConfigError, match=r"'tie' is not a merge method; choose one of .*ties"):
        get_method("tie")
    with pytest.raises(ValueError, match="already registered"):
        register(MergeMethod("ties", METHODS["ties"].fn, True, None, {}))


def test_check_params_rejects_unknown_keys_naming_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"parameters\.lamda: .*no parameter 'lamda' \(allowed: lambda, normalize\)"):
        check_params(METHODS["task_arithmetic"], {"normalize": False, "lamda": 0.5})
    with pytest.raises(ConfigError, match=r"rules\[2\]\.parameters\.density.*allowed: t\)"):
        check_params(METHODS["slerp"], {"t": 0.5, "density": 0.5}, where="rules[2].parameters")
    check_params(METHODS["dare_ties"], {"normalize": True, "lambda": 2, "rescale": False})


@pytest.mark.parametrize(("name", "params", "expected"), [
    ("linear", {"normalize": "yes"}, "true or false"),
    ("task_arithmetic", {"lambda": True}, "a finite number"),
    ("task_arithmetic", {"lambda": math.nan}, "a finite number"),
    ("slerp", {"t": 1.5}, r"a number in \[0, 1\]"),
    ("slerp", {"t": "0.5"}, r"a number in \[0, 1\]"),
])
def test_check_params_rejects_bad_values(name, params, expected):
    with pytest.raises(ConfigError, match=expected):
        check_params(METHODS[name], params)


def test_slerp_without_t_says_how_to_set_it():
    with pytest.raises(ConfigError, match=r"slerp needs t \(e\.g\. parameters: \{t: 0\.5\}\)"):
        check_params(METHODS["slerp"], {})
    a, b = rand(5, seed=0), rand(5, seed=1)
    with pytest.raises(ConfigError, match="slerp needs t"):
        merge("slerp", a, [b])


def test_omitted_parameters_take_the_defaults():
    base = rand(6, seed=0)
    tensors = models_around(base, 2, seed=1)
    assert torch.equal(merge("task_arithmetic", base, tensors), merge("task_arithmetic", base, tensors,
                                                                      normalize=False, **{"lambda": 1.0}))


@pytest.mark.parametrize(("name", "has_base", "count", "message"), [
    ("slerp", True, 2, r"exactly 2 models: base_model \(t=0\) and one model \(t=1\).*got 2 model\(s\) and base_model"),
    ("slerp", False, 1, r"got 1 model\(s\) and no base_model"),
    ("slerp", False, 3, "exactly 2 models"),
    ("ties", False, 2, "base_model: method ties needs a base model"),
    ("task_arithmetic", False, 1, "needs a base model"),
    ("linear", False, 0, "needs at least one model"),
])
def test_wrong_inputs_are_config_errors(name, has_base, count, message):
    with pytest.raises(ConfigError, match=message):
        check_inputs(METHODS[name], has_base=has_base, weights=[1.0] * count, densities=[1.0] * count)
    base = rand(4, seed=9) if has_base else None
    params = {"t": 0.5} if name == "slerp" else {}
    with pytest.raises(ConfigError, match=message):
        merge(name, base, [rand(4, seed=i) for i in range(count)], **params)


def test_weights_and_densities_that_would_be_ignored_or_are_invalid_are_refused():
    with pytest.raises(ConfigError, match=r"models\[1\]\.density: method task_arithmetic keeps every entry"):
        check_inputs(METHODS["task_arithmetic"], has_base=True, weights=[1, 1], densities=[1.0, 0.5])
    with pytest.raises(ConfigError, match=r"models\[0\]\.weight: method slerp has no per-model weights"):
        check_inputs(METHODS["slerp"], has_base=True, weights=[0.3], densities=[1.0])
    with pytest.raises(ConfigError, match=r"models\[0\]\.density: 0 is not in \(0, 1\]"):
        check_inputs(METHODS["ties"], has_base=True, weights=[1.0], densities=[0])
    with pytest.raises(ConfigError, match=r"models\[0\]\.weight: inf is not a finite number"):
        check_inputs(METHODS["ties"], has_base=True, weights=[math.inf], densities=[1.0])
    with pytest.raises(ConfigError, match="2 weights but 1 densities"):
        check_inputs(METHODS["ties"], has_base=True, weights=[1.0, 1.0], densities=[1.0])


def test_tensors_that_do_not_match_are_bugs_reported_as_value_errors():
    base = rand(4, seed=0)
    with pytest.raises(ValueError, match="1 tensors but 2 weights"):
        METHODS["task_arithmetic"].fn(base, [base], [1.0, 1.0], [1.0, 1.0], {}, None)
    with pytest.raises(ValueError, match="float32 tensors of one shape; got torch.float16"):
        merge("task_arithmetic", base, [base.half()])
    with pytest.raises(ValueError, match=r"got torch.float32 \(5,\) beside torch.float32 \(4,\)"):
        merge("task_arithmetic", base, [rand(5, seed=1)])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(), (0,), (3, 4, 5)])
def test_every_method_returns_float32_of_the_input_shape_and_leaves_inputs_alone(name, shape):
    base = rand(*shape, seed=0)
    tensors = models_around(base, 1 if name == "slerp" else 3, seed=1, scale=0.1)
    originals = [base.clone()] + [t.clone() for t in tensors]
    densities = [1.0] if name == "slerp" else [0.5, 0.7, 1.0]
    if name in ("linear", "task_arithmetic"):
        densities = [1.0] * 3
    params = {"t": 0.3} if name == "slerp" else {}
    out = merge(name, base, tensors, densities=densities, generator=tensor_generator(0, "w"), **params)
    assert out.dtype == torch.float32 and out.shape == base.shape
    for before, after in zip(originals, [base] + tensors):
        assert torch.equal(before, after)
    assert all(out.data_ptr() != t.data_ptr() for t in [base] + tensors) or out.numel() == 0


# --- linear and task arithmetic -------------------------------------------------------------------------------


def test_linear_is_the_weighted_average_and_ignores_the_base():
    tensors = [rand(7, 3, seed=i) for i in range(3)]
    weights = [0.5, 2.0, -0.25]
    total = sum(w * t.double() for w, t in zip(weights, tensors))
    torch.testing.assert_close(merge("linear", None, tensors, weights), (total / sum(weights)).float())
    torch.testing.assert_close(merge("linear", None, tensors, weights, normalize=False), total.float())
    assert torch.equal(merge("linear", rand(7, 3, seed=9), tensors, weights), merge("linear", None, tensors, weights))


def test_linear_refuses_to_normalise_by_a_zero_weight_sum():
    tensors = [rand(4, seed=i) for i in range(2)]
    with pytest.raises(ConfigError, match=r"weights \[1\.0, -1\.0\] sum to zero.*normalize: false"):
        merge("linear", None, tensors, [1.0, -1.0])
    torch.testing.assert_close(merge("linear", None, tensors, [1.0, -1.0], normalize=False), tensors[0] - tensors[1])
    assert torch.equal(merge("linear", None, tensors, [0.0, 0.0], normalize=False), torch.zeros(4))


def test_task_arithmetic_adds_scaled_weighted_task_vectors():
    base = rand(5, 6, seed=0)
    tensors = models_around(base, 3, seed=1, scale=0.1)
    weights = [1.0, 0.5, -0.3]
    vector = sum(w * (t.double() - base.double()) for w, t in zip(weights, tensors))
    expected = {(False, 1.0): base.double() + vector, (False, 0.7): base.double() + 0.7 * vector,
                (True, 0.7): base.double() + 0.7 * vector / sum(weights)}
    for (normalize, lam), value in expected.items():
        out = merge("task_arithmetic", base, tensors, weights, normalize=normalize, **{"lambda": lam})
        torch.testing.assert_close(out, value.float(), rtol=1e-6, atol=1e-6)


def test_task_arithmetic_chat_vector_and_zero_weight_sum_guard():
    base, instruct, domain = rand(8, seed=0), rand(8, seed=1), rand(8, seed=2)
    # θ_domain + λ(θ_instruct − θ_base) is task arithmetic with the domain model as base, weights (1, −1), λ.
    chat = merge("task_arithmetic", domain, [instruct, base], [1.0, -1.0], **{"lambda": 0.8})
    torch.testing.assert_close(chat, domain + 0.8 * (instruct - base))
    # Σ w = 0 under normalize divides by 1 instead (mergekit's guard), so normalize changes nothing here.
    assert torch.equal(chat, merge("task_arithmetic", domain, [instruct, base], [1.0, -1.0], normalize=True,
                                   **{"lambda": 0.8}))


# --- ties -----------------------------------------------------------------------------------------------------


def test_ties_trims_to_floor_of_density_times_n_and_breaks_ties_by_index():
    base = torch.zeros(5)
    delta = torch.tensor([0.1, -5.0, 3.0, -0.2, 4.0])
    assert merge("ties", base, [delta], densities=[0.4]).tolist() == [0, -5, 0, 0, 4]  # k = 2
    assert merge("ties", base, [delta], densities=[0.39]).tolist() == [0, -5, 0, 0, 0]  # k = ⌊1.95⌋ = 1
    assert merge("ties", base, [delta], densities=[0.01]).tolist() == [0, -5, 0, 0, 0]  # k = max(1, 0)
    assert torch.equal(merge("ties", base, [delta], densities=[1.0]), delta)  # density 1: nothing trimmed
    tied = torch.tensor([1.0, -3.0, 3.0, 2.0, -3.0])
    assert merge("ties", base, [tied], densities=[0.4]).tolist() == [0, -3, 3, 0, 0]


def test_ties_elects_signs_and_averages_the_agreeing_entries():
    base = torch.tensor([10.0, 10.0, 10.0, 10.0, 10.0])
    first = base + torch.tensor([1.0, -2.0, 3.0, 0.0, 2.0])
    second = base + torch.tensor([-3.0, 1.0, 2.0, 5.0, -2.0])
    # Σδ = (−2, −1, 5, 5, 0): elected (−, −, +, +, + since ≥ 0 counts as +); zero deltas never vote.
    assert merge("ties", base, [first, second]).tolist() == [7, 8, 12.5, 15, 12]
    assert merge("ties", base, [first, second], normalize=False, **{"lambda": 2.0}).tolist() == [4, 6, 20, 20, 14]
    # Weighted: the second model counts double in the vote (Σ w δ = (−5, 0, 7, 10, −2)) and in the mean.
    torch.testing.assert_close(merge("ties", base, [first, second], [1.0, 2.0]),
                               torch.tensor([7, 11, 10 + 7 / 3, 15, 8]))
    # Kept weights can cancel (−1 + 1 = 0): the divisor 0 counts as 1, as in mergekit.
    assert merge("ties", torch.zeros(1), [torch.tensor([-2.0]), torch.tensor([3.0])], [-1.0, 1.0]).tolist() == [5]


@pytest.mark.parametrize("normalize", [True, False])
def test_ties_matches_a_reference_implementation_on_random_tensors(normalize):
    base = rand(40, 30, seed=0)
    tensors = models_around(base, 3, seed=1, scale=0.05)
    weights, densities = [1.0, 0.6, 1.4], [0.2, 0.55, 1.0]
    deltas = [reference_trim(t - base, p) for t, p in zip(tensors, densities)]
    expected = reference_elect(base, deltas, weights, normalize, lam=0.9)
    out = merge("ties", base, tensors, weights, densities, normalize=normalize, **{"lambda": 0.9})
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


# --- DARE -----------------------------------------------------------------------------------------------------


def test_tensor_generator_is_stable_and_depends_on_seed_and_name():
    assert tensor_generator(0, "model.layers.0.mlp.up_proj.weight").initial_seed() == 2826254160607379106
    assert tensor_generator(7, "lm_head.weight").initial_seed() == 5279730369594679208
    draws = {(seed, name): torch.rand(4, generator=tensor_generator(seed, name)) for seed in (0, 1) for name in "ab"}
    assert torch.equal(draws[0, "a"], torch.rand(4, generator=tensor_generator(0, "a")))
    assert len({tuple(v.tolist()) for v in draws.values()}) == 4


DARE_SIZE = 200_000


@pytest.mark.parametrize("density", [0.1, 0.3, 0.9])
def test_dare_keeps_about_density_of_the_entries_and_rescales_them_by_exactly_one_over_density(density):
    base = torch.zeros(DARE_SIZE)
    model = rand(DARE_SIZE, seed=1, shift=0.5)  # no exact zeros, so a kept entry is visible as nonzero
    out = merge("dare_linear", base, [model], densities=[density], generator=tensor_generator(0, "w"))
    kept = out != 0
    sigma = math.sqrt(density * (1 - density) / DARE_SIZE)
    assert abs(kept.float().mean().item() - density) < 5 * sigma
    assert torch.equal(out[kept], model[kept] / density)
    no_rescale = merge("dare_linear", base, [model], densities=[density], generator=tensor_generator(0, "w"),
                       rescale=False)
    assert torch.equal(no_rescale, torch.where(kept, model, 0.0))


def test_dare_is_unbiased_for_task_arithmetic_and_only_with_rescale():
    base = rand(DARE_SIZE, seed=0)
    tensors = [base + rand(DARE_SIZE, seed=1, shift=1.0), base + rand(DARE_SIZE, seed=2, shift=-0.5)]
    weights, densities = [0.7, 0.5], [0.3, 0.6]
    reference = merge("task_arithmetic", base, tensors, weights)
    out = merge("dare_linear", base, tensors, weights, densities, generator=tensor_generator(3, "x"))
    error = (out - reference).double()
    assert abs(error.mean().item()) < 5 * error.std().item() / math.sqrt(DARE_SIZE)
    # Without rescaling the vector shrinks to Σ w_i p_i δ_i on average: 0.7·0.3·1 + 0.5·0.6·(−0.5) = 0.06.
    shrunk = merge("dare_linear", base, tensors, weights, densities, generator=tensor_generator(3, "x"), rescale=False)
    assert abs((shrunk - base).double().mean().item() - 0.06) < 0.01
    assert abs((reference - base).double().mean().item() - 0.45) < 0.01


def test_dare_is_reproducible_per_name_and_independent_of_order():
    base = rand(10_000, seed=0)
    tensors = models_around(base, 2, seed=1)
    run = lambda name: merge("dare_ties", base, tensors, densities=[0.5, 0.5],  # noqa: E731
                             generator=tensor_generator(42, name))
    first_a = run("layers.0.weight")
    run("layers.1.weight")
    assert torch.equal(run("layers.0.weight"), first_a)
    kept_a, kept_b = run("layers.0.weight") != base, run("layers.1.weight") != base
    overlap = (kept_a & kept_b).float().mean().item()
    assert 0.2 < overlap < 0.6 and not torch.equal(kept_a, kept_b)  # independent masks: overlap ≈ p² + …


def test_dare_with_density_one_is_task_arithmetic_or_ties():
    base = rand(30, seed=0)
    tensors = models_around(base, 3, seed=1)
    weights = [1.0, -0.5, 2.0]
    generator = tensor_generator(0, "w")
    assert torch.equal(merge("dare_linear", base, tensors, weights, generator=generator),
                       merge("task_arithmetic", base, tensors, weights))
    assert torch.equal(merge("dare_ties", base, tensors, weights, generator=generator, normalize=True),
                       merge("ties", base, tensors, weights))


def test_dare_ties_elects_signs_on_a_hand_built_case():
    base = torch.zeros(5)
    first = torch.tensor([1.0, -2.0, 3.0, 0.0, 2.0])
    second = torch.tensor([-3.0, 1.0, 2.0, 5.0, -2.0])
    generator = tensor_generator(0, "w")
    assert merge("dare_ties", base, [first, second], generator=generator).tolist() == [-3, -2, 5, 5, 2]
    assert merge("dare_ties", base, [first, second], generator=generator, normalize=True).tolist() == \
        [-3, -2, 2.5, 5, 2]


def test_dare_ties_elects_signs_among_the_randomly_kept_entries():
    base = rand(2_000, seed=0)
    tensors = models_around(base, 3, seed=1)
    weights, densities = [1.0, 0.5, 0.8], [0.4, 1.0, 0.7]
    out = merge("dare_ties", base, tensors, weights, densities, generator=tensor_generator(5, "w"), normalize=True)
    # The documented draw order: one uniform tensor per model with p < 1, in model order; keep u < p, scale 1/p.
    draws = tensor_generator(5, "w")
    deltas = []
    for tensor, density in zip(tensors, densities):
        delta = tensor - base
        if density < 1:
            delta = torch.where(torch.rand(delta.shape, generator=draws) < density, delta, 0.0) / density
        deltas.append(delta)
    torch.testing.assert_close(out, reference_elect(base, deltas, weights, normalize=True, lam=1.0))


def test_dare_without_a_generator_is_a_bug():
    base = rand(4, seed=0)
    with pytest.raises(ValueError, match="tensor_generator"):
        merge("dare_linear", base, [base + 1], densities=[0.5])


# --- slerp ----------------------------------------------------------------------------------------------------


def test_slerp_follows_the_great_circle():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])  # orthogonal: θ = π/2
    torch.testing.assert_close(merge("slerp", a, [b], t=0.5), torch.tensor([[math.sqrt(0.5), 2 * math.sqrt(0.5)]]))
    start, end = rand(6, 7, seed=0), rand(6, 7, seed=1)
    x, y = start.double().reshape(-1), end.double().reshape(-1)
    theta = math.acos(float(x @ y / (x.norm() * y.norm())))
    for t in (0.2, 0.75):
        expected = (math.sin((1 - t) * theta) * x + math.sin(t * theta) * y) / math.sin(theta)
        torch.testing.assert_close(merge("slerp", start, [end], t=t), expected.reshape(6, 7).float())
        # Without a base model the first model is the t = 0 end.
        assert torch.equal(merge("slerp", None, [start, end], t=t), merge("slerp", start, [end], t=t))


def test_slerp_endpoints_are_exact():
    start, end = rand(9, 4, seed=0), rand(9, 4, seed=1)
    assert torch.equal(merge("slerp", start, [end], t=0), start)
    assert torch.equal(merge("slerp", start, [end], t=1.0), end)


def test_slerp_falls_back_to_lerp_for_nearly_parallel_or_antiparallel_tensors():
    a = rand(50, seed=0)
    for b in (2 * a + rand(50, seed=1, scale=1e-3), -3 * a):
        assert abs(torch.nn.functional.cosine_similarity(a, b, dim=0).item()) > 0.9995
        assert torch.equal(merge("slerp", a, [b], t=0.3), 0.7 * a + 0.3 * b)
    # Just below the threshold (cos θ ≈ 0.999) it is still spherical: the midpoint is longer than lerp's.
    b = a + rand(50, seed=2, scale=0.045 * a.norm().item() / math.sqrt(50))
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    assert 0.998 < cosine < 0.9995
    assert merge("slerp", a, [b], t=0.5).norm() > (0.5 * a + 0.5 * b).norm()


# --- cross-check with mergekit --------------------------------------------------------------------------------


@pytest.fixture
def mergekit_merge():
    """mergekit's own per-tensor entry point; inputs in order, base (if any) first."""
    pytest.importorskip("mergekit")
    from mergekit.merge_methods import merge_tensors

    def run(name, base, tensors, weights, densities, **params):
        if name in ("linear", "slerp"):
            per_model = {"weight": weights} if name == "linear" else {}
            inputs = tensors if base is None else [base] + tensors
            return merge_tensors(inputs, name, base_index=None if base is None else 0,
                                 parameters={**per_model, **params})
        ids = range(1, len(tensors) + 1)
        per_model = {"weight": dict(zip(ids, weights)), "density": dict(zip(ids, densities))}
        return merge_tensors([base] + tensors, name, base_index=0, parameters={**per_model, **params})

    return run


SHAPES = [(17,), (33, 65), (4, 8, 16)]


def assert_agree(ours: torch.Tensor, theirs: torch.Tensor, scale: float) -> None:
    assert theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("normalize", [True, False])
def test_linear_agrees_with_mergekit(mergekit_merge, shape, normalize):
    tensors = [rand(*shape, seed=i, scale=0.02) for i in range(3)]
    weights = [0.3, 1.2, -0.4]
    assert_agree(merge("linear", None, tensors, weights, normalize=normalize),
                 mergekit_merge("linear", None, tensors, weights, None, normalize=normalize), 0.02)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("params", [{}, {"normalize": True, "lambda": 0.6}, {"lambda": 1.7}])
def test_task_arithmetic_agrees_with_mergekit(mergekit_merge, shape, params):
    base = rand(*shape, seed=0, scale=0.02)
    tensors = models_around(base, 3, seed=1, scale=0.002)
    weights, densities = [1.0, -0.5, 0.8], [1.0] * 3
    assert_agree(merge("task_arithmetic", base, tensors, weights, **params),
                 mergekit_merge("task_arithmetic", base, tensors, weights, densities, **params), 0.02)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("densities", "params"), [
    ([0.5, 0.5, 0.5], {}),
    ([0.2, 0.66, 1.0], {"lambda": 0.8}),
    ([0.01, 0.3, 0.9], {"normalize": False}),
])
def test_ties_agrees_with_mergekit(mergekit_merge, shape, densities, params):
    base = rand(*shape, seed=0, scale=0.02)
    tensors = models_around(base, 3, seed=1, scale=0.002)
    weights = [1.0, 0.7, -0.4]
    assert_agree(merge("ties", base, tensors, weights, densities, **params),
                 mergekit_merge("ties", base, tensors, weights, densities, **params), 0.02)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [0.0, 0.25, 0.5, 1.0])
def test_slerp_agrees_with_mergekit(mergekit_merge, shape, t):
    start = rand(*shape, seed=0, scale=0.02)
    cases = {
        "generic": rand(*shape, seed=1, scale=0.05),
        "near": start + rand(*shape, seed=2, scale=2e-4),  # nearly parallel: lerp branch
        "antiparallel": -2 * start,
    }
    for end in cases.values():
        assert_agree(merge("slerp", start, [end], t=t), mergekit_merge("slerp", start, [end], None, None, t=t), 0.05)
    zero = torch.zeros(shape)  # a zero norm counts as 1 in both
    assert_agree(merge("slerp", zero, [start], t=t), mergekit_merge("slerp", zero, [start], None, None, t=t), 0.05)
