"""mergekit dialect: settings resolved as mergekit does, rules that reproduce them, bad input, round trips."""

from __future__ import annotations

import re
from contextlib import ExitStack

import pytest
import yaml

from adaptlab.errors import ConfigError
from adaptlab.merge.config import MergeConfig
from adaptlab.merge.engine import open_and_plan
from adaptlab.merge.mergekit_config import load_merge_config
from adaptlab.merge.mergekit_export import NotExpressible, to_mergekit, to_mergekit_yaml
from adaptlab.merge.mergekit_settings import Resolved, evaluate, layer_positions, rules_for

SETTINGS = [
    0.4,
    [0, 0.5, 0.3, 0.7, 1],
    [1, 0.7, 0.1],
    [0.25],
    {"filter": "mlp", "value": [0.2, 0.9]},
    [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]}, {"filter": "mlp", "value": 0.7}, {"value": 0.5}],
    [{"filter": "lm_head", "value": 0.1}, {"filter": "*", "value": [0.3, 0.6]}],
]
NAMES = ["model.embed_tokens.weight", "model.layers.3.self_attn.q_proj.weight", "model.layers.3.mlp.up_proj.weight",
         "lm_head.weight", "model.norm.weight"]


@pytest.mark.parametrize("setting", SETTINGS, ids=range(len(SETTINGS)))
def test_settings_evaluate_exactly_as_mergekit(setting):
    mergekit_config = pytest.importorskip("mergekit.config")
    parsed = mergekit_config.MergeConfiguration.model_validate(
        {"merge_method": "slerp", "models": [{"model": "x"}], "parameters": {"t": setting}}).parameters["t"]
    for name in NAMES:
        for t in [0.0, 0.2, 1 / 3, 0.5, 0.6, 2 / 3, 0.8, 1.0]:
            theirs = mergekit_config.evaluate_setting(name, parsed, t, validate=float)
            assert evaluate(setting, name, t, float) == theirs, (name, t)


def test_layer_positions_spread_over_each_stack():
    names = [f"model.layers.{k}.mlp.up_proj.weight" for k in range(6)] + ["model.norm.weight", "h.0.attn.weight",
                                                                           "h.1.attn.weight"]
    positions = layer_positions(names)
    assert [positions[f"model.layers.{k}.mlp.up_proj.weight"] for k in (0, 3, 5)] == [
        ("model.layers.0.", 0.0), ("model.layers.3.", 0.6), ("model.layers.5.", 1.0)]
    assert positions["h.1.attn.weight"] == ("h.1.", 1.0) and "model.norm.weight" not in positions


def test_rules_give_every_tensor_its_values():
    names = [f"model.layers.{k}.{part}" for k in range(12) for part in
             ("input_layernorm.weight", "mlp.up_proj.weight", "mlp.down_proj.weight", "self_attn.q_proj.weight")]
    names += ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    setting = [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]}, {"filter": "up_proj", "value": [1, 0]},
               {"filter": "lm_head", "value": 0.9}, {"value": 0.5}]
    positions = layer_positions(names)

    def resolve(name: str, t: float) -> Resolved:
        return Resolved((("t", evaluate(setting, name, t, float)),), (), ())

    resolved = {name: resolve(name, positions[name][1] if name in positions else 0.0) for name in names}
    baseline = resolve("", 0.0)
    rules = rules_for(names, resolved, baseline)
    for name in names:
        rule = next((r for r in rules if re.search(r["match"], name)), None)
        assert (rule["parameters"]["t"] if rule else 0.5) == dict(resolved[name].shared)["t"], name
    assert {"match": r"model\.layers\.11\.self_attn\.q_proj\.", "parameters": {"t": 1.0}} in rules
    assert {"match": r"model\.layers\.0\.mlp\.up_proj\.", "parameters": {"t": 1.0}} in rules
    assert {"match": r"lm_head\.", "parameters": {"t": 0.9}} in rules


def mergekit_file(tmp_path, family, **changes) -> str:
    config = {"merge_method": "ties", "base_model": str(family["base"]), "dtype": "float32",
              "models": [{"model": str(family["domain"]), "parameters": {"weight": 1.0, "density": 0.5}},
                         {"model": str(family["instruct"]), "parameters": {"weight": 0.5, "density": 0.5}}]}
    config.update(changes)
    path = tmp_path / "mergekit.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


BAD = {  # case: (changes to a valid TIES config, what the one-line error must say)
    "unknown parameter": ({"models.0.parameters.bogus": 3}, ["models.0.parameters.bogus", ":9:", "weight, density"]),
    "unknown key": ({"merge_methods": "ties"}, ["'merge_methods'", "unknown key"]),
    "slices": ({"slices": [{"sources": [{"model": "m", "layer_range": [0, 2]}]}]}, ["'slices'", "layer_range"]),
    "unsupported method": ({"merge_method": "della"}, ["'della'", "does not implement", "passthrough", "model_stock"]),
    "mixed dialect": ({"rules": [{"match": "mlp", "action": "skip"}]}, ["'rules'", "mixes", "merge_method"]),
    "shared parameter per model": ({"models.1.parameters.lambda": 0.5}, ["models.1.parameters.lambda", "top-level"]),
    "missing weight": ({"models.1.parameters": {"density": 0.5}}, ["models.1.parameters.weight", "no default"]),
    "ties rescale": ({"parameters": {"rescale": True}}, ["parameters.rescale", "L1"]),
    "gradient of words": ({"models.0.parameters.weight": ["a", "b"]}, ["models.0.parameters.weight.0", "number"]),
    "named chat template": ({"chat_template": "chatml"}, ["chat_template", "Jinja"]),
    "lora": ({"models.0.model": "org/model+org/lora"}, ["models.0.model", "LoRA"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_mergekit_configs_exit_2_in_one_line(case, model_family, tmp_path, run_cli, capsys):
    family = model_family("llama")
    capsys.readouterr()  # building the models prints save progress
    changes, expected = BAD[case]
    nested = {key: value for key, value in changes.items() if "." not in key}
    path = mergekit_file(tmp_path, family, **nested)
    data = yaml.safe_load(open(path))
    for dotted, value in changes.items():
        if "." in dotted:
            *parents, last = dotted.split(".")
            node = data
            for part in parents:
                node = node[int(part)] if part.isdigit() else node[part]
            node[last] = value
    open(path, "w").write(yaml.safe_dump(data, sort_keys=False))
    code, out, err = run_cli("merge", path, "--output", tmp_path / "out")
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for part in expected:
        assert part in err, (part, err)
    assert str(path) in err and not (tmp_path / "out").exists()


def plans(cfg: MergeConfig):
    with ExitStack() as stack:
        return open_and_plan(cfg, stack)[2]


def same_plan(first, second) -> None:
    assert first.inputs == second.inputs and first.base == second.base and first.models == second.models
    assert first.dtype == second.dtype
    for ours, theirs in zip(first.tensors, second.tensors, strict=True):
        assert (ours.name, ours.action, ours.params, ours.weights, ours.densities) == (
            theirs.name, theirs.action, theirs.params, theirs.weights, theirs.densities), ours.name


def test_adaptlab_config_round_trips_through_mergekit_dialect(model_family, tmp_path):
    family = model_family("llama")
    ours = MergeConfig(
        method="ties", base_model=str(family["base"]), dtype="bfloat16", vocab="base",
        models=[{"model": str(family["domain"]), "weight": 1.0, "density": 0.6},
                {"model": str(family["instruct"]), "weight": 0.7, "density": 0.4}],
        parameters={"lambda": 0.9},
        rules=[{"match": "self_attn", "parameters": {"lambda": 0.5}},
               {"match": r"layers\.1\.mlp|lm_head", "weights": [0.2, 1.0], "densities": [1.0, 0.3]},
               {"match": r"norm\.weight$", "parameters": {"normalize": False}}],
        output=str(tmp_path / "unused"))
    plan = plans(ours)
    text = to_mergekit_yaml(ours, [t.name for t in plan.tensors])
    exported = yaml.safe_load(text)
    assert exported["merge_method"] == "ties" and exported["tokenizer_source"] == "base"
    assert exported["dtype"] == "float32" and exported["out_dtype"] == "bfloat16"
    assert exported["models"][1]["parameters"]["density"][0] == {"filter": "self_attn", "value": 0.4}
    (tmp_path / "exported.yml").write_text(text)
    again = load_merge_config(tmp_path / "exported.yml", flags={"output": str(tmp_path / "unused")})
    same_plan(plan, plans(again))
    with pytest.raises(NotExpressible, match=r"rules\[2\].match"):
        to_mergekit(ours)  # 'norm\.weight$' is a regular expression: it needs the tensor names


def test_mergekit_gradients_round_trip(model_family, tmp_path):
    family = model_family("llama")
    path = mergekit_file(tmp_path, family, merge_method="slerp", models=[{"model": str(family["instruct"])}],
                         parameters={"t": [{"filter": "self_attn", "value": [0, 1]},
                                           {"filter": "mlp", "value": [0.8, 0.3]}, {"value": 0.5}]})
    first = load_merge_config(path, flags={"output": str(tmp_path / "unused")})
    assert first.parameters == {"t": 0.5} and len(first.rules) == 4  # two layers × self_attn, mlp
    plan = plans(first)
    (tmp_path / "again.yml").write_text(to_mergekit_yaml(first, [t.name for t in plan.tensors]))
    same_plan(plan, plans(load_merge_config(tmp_path / "again.yml", flags={"output": str(tmp_path / "unused")})))


def test_mergekit_config_yml_reproduces_skip_and_copy_in_mergekit(model_family, tmp_path, run_cli, state):
    mergekit_config = pytest.importorskip("mergekit.config")
    mergekit_merge = pytest.importorskip("mergekit.merge")
    family = model_family("llama")
    config = tmp_path / "ours.yaml"
    config.write_text(yaml.safe_dump({
        "method": "task_arithmetic", "base_model": str(family["base"]), "dtype": "float32", "progress": False,
        "models": [{"model": str(family["domain"]), "weight": 0.6}, {"model": str(family["instruct"]), "weight": 0.4}],
        "rules": [{"match": r"norm\.weight$", "action": "skip"},
                  {"match": "embed_tokens|lm_head", "action": "copy", "copy_from": str(family["instruct"])}]}))
    code, _, err = run_cli("merge", config, "--output", tmp_path / "ours")
    assert code == 0, err
    exported = yaml.safe_load((tmp_path / "ours" / "mergekit_config.yml").read_text())
    mergekit_merge.run_merge(mergekit_config.MergeConfiguration.model_validate(exported), str(tmp_path / "theirs"),
                             mergekit_merge.MergeOptions(quiet=True, copy_tokenizer=False, write_model_card=False))
    mine, theirs, base = state(tmp_path / "ours"), state(tmp_path / "theirs"), state(family["base"])
    assert sorted(mine) == sorted(theirs)
    for name in mine:
        exact = name.endswith("norm.weight")  # skipped: exactly the base's tensor, in both
        assert (mine[name] - theirs[name]).abs().max() <= (0 if exact else 1e-6), name
    assert (mine["model.norm.weight"] == base["model.norm.weight"]).all()


def translated(tmp_path, config: dict, flags: dict | None = None) -> MergeConfig:
    path = tmp_path / "mergekit.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_merge_config(path, flags=flags)


def test_mergekit_scalars_translate_with_mergekit_semantics(tmp_path):
    linear = translated(tmp_path, {"merge_method": "linear", "base_model": "B", "parameters": {"weight": 0.5},
                                   "models": [{"model": "A", "parameters": {"weight": 2}}, {"model": "C"}]})
    # linear averages a base_model it is given (mergekit adds it to the inputs), with the top-level weight
    assert [(m.model, m.weight) for m in linear.models] == [("A", 2.0), ("C", 0.5), ("B", 0.5)]
    assert linear.parameters == {"normalize": True} and linear.vocab == "strict"
    arithmetic = translated(tmp_path, {
        "merge_method": "task_arithmetic", "base_model": "B", "dtype": "bfloat16", "tokenizer_source": "A",
        "parameters": {"int8_mask": True, "lambda": 0.7, "rescale": True},
        "models": [{"model": "B", "parameters": {"weight": 9}}, {"model": "A", "parameters": {"weight": 1,
                                                                                             "density": 0.5}}]},
        flags={"dtype": "float16"})
    # the base's own entry is never weighed; int8_mask, and task_arithmetic's density and rescale change nothing
    assert [(m.model, m.weight, m.density) for m in arithmetic.models] == [("A", 1.0, 1.0)]
    assert arithmetic.parameters == {"normalize": False, "lambda": 0.7}
    assert (arithmetic.vocab, arithmetic.tokenizer_from) == ("base", "A") and arithmetic.dtype == "float16"
    union = translated(tmp_path, {"merge_method": "slerp", "base_model": "B", "tokenizer": {"source": "union"},
                                  "models": [{"model": "A"}], "parameters": {"t": 0.25}})
    assert union.vocab == "union" and union.parameters == {"t": 0.25} and union.models[0].model == "A"


def test_mergekit_translation_errors_name_the_key(tmp_path):
    cases = [
        ({"merge_method": "linear", "base_model": "B", "models": [{"model": "A", "parameters": {"weight": 1}}]},
         "mergekit key 'parameters.weight'"),
        ({"merge_method": "ties", "base_model": "B", "tokenizer_source": "X",
          "models": [{"model": "A", "parameters": {"weight": 1}}]}, "'X' is not base, union or one of"),
        ({"merge_method": "slerp", "models": [{"model": "A"}, {"model": "C"}], "parameters": {"t": 0.5}},
         "slerp needs base_model"),
        ({"merge_method": "slerp", "base_model": "B", "models": [{"model": "A"}], "parameters": {"t": 1.5}},
         "expected a number in [0, 1]"),
        ({"merge_method": "ties", "base_model": "B", "dtype": "float64",
          "models": [{"model": "A", "parameters": {"weight": 1}}]}, "'dtype': 'float64'"),
    ]
    for config, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            translated(tmp_path, config)
