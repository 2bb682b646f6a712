"""The merge engine end to end: formulas on real model directories, outputs that load, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from adaptlab.errors import AdaptlabError, ConfigError, ModelError, RunDirError
from adaptlab.merge.chat_vector import chat_vector_config
from adaptlab.merge.config import MergeConfig
from adaptlab.merge.engine import merge_models


def test_chat_vector_matches_the_formula_and_the_output_chats(model_family, tmp_path, state):
    family = model_family("llama")
    out = tmp_path / "merged"
    result = merge_models(chat_vector_config(str(family["base"]), str(family["instruct"]), str(family["domain"]),
                                             str(out), scale=0.7))
    base, instruct, domain = (state(family[k]) for k in ("base", "instruct", "domain"))
    merged = state(out)
    assert set(merged) == set(domain)
    for name, value in merged.items():
        expected = domain[name].float() + 0.7 * (instruct[name].float() - base[name].float())
        torch.testing.assert_close(value, expected.to(value.dtype), rtol=0, atol=1e-6)
    assert {"config.json", "generation_config.json", "merge_report.json", "tokenizer.json"} <= {
        p.name for p in out.iterdir()}
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "<user>hi\n"
    model = AutoModelForCausalLM.from_pretrained(out)
    generated = model.generate(torch.tensor([[101, 2000]]), max_new_tokens=3, do_sample=False)
    assert generated.shape == (1, 5)
    report = json.loads((out / "merge_report.json").read_text())
    assert report["tensors"] == len(merged) == len(report["per_tensor"])
    assert result.report["actions"]["merge"] == len(merged)
    assert not list(tmp_path.glob(".merged.partial-*"))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "bert"])
@pytest.mark.parametrize("sharded", [False, True])
def test_linear_merge_of_sharded_tied_and_untied_models_loads(model_family, tmp_path, arch, sharded, state):
    family = model_family(arch, sharded)
    cfg = MergeConfig(method="linear", models=[{"model": str(family["domain"]), "weight": 1.0},
                                               {"model": str(family["instruct"]), "weight": 3.0}],
                      output=str(tmp_path / "out"), shard_size_mb=0.25, progress=False)
    merge_models(cfg)
    domain, instruct, merged = state(family["domain"]), state(family["instruct"]), state(tmp_path / "out")
    assert set(merged) == set(domain)
    for name, value in merged.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (domain[name] + 3 * instruct[name]) / 4, rtol=0, atol=1e-6)
    assert len(list((tmp_path / "out").glob("*.safetensors"))) > 1
    loader = AutoModel if arch == "bert" else AutoModelForCausalLM
    model = loader.from_pretrained(tmp_path / "out")
    if arch == "qwen2":
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_rules_skip_copy_and_override(model_family, tmp_path, state):
    family = model_family("llama")
    cfg = MergeConfig(
        method="task_arithmetic", base_model=str(family["base"]),
        models=[{"model": str(family["domain"])}, {"model": str(family["instruct"])}],
        rules=[{"match": r"norm\.weight$", "action": "skip"},
               {"match": "embed_tokens", "action": "copy", "copy_from": str(family["instruct"])},
               {"match": r"layers\.0\.", "parameters": {"lambda": 0.5}}],
        output=str(tmp_path / "out"), progress=False)
    merge_models(cfg)
    base, domain, instruct, merged = (state(p) for p in (family["base"], family["domain"], family["instruct"],
                                                          tmp_path / "out"))
    assert torch.equal(merged["model.norm.weight"], base["model.norm.weight"])
    assert torch.equal(merged["model.embed_tokens.weight"], instruct["model.embed_tokens.weight"])
    name = "model.layers.0.mlp.up_proj.weight"
    expected = base[name] + 0.5 * ((domain[name] - base[name]) + (instruct[name] - base[name]))
    torch.testing.assert_close(merged[name], expected, rtol=0, atol=1e-6)
    report = json.loads((tmp_path / "out" / "merge_report.json").read_text())
    assert report["actions"]["skip"] == 5 and report["actions"]["copy"] == 1


def test_output_dtype_is_rounded_once(model_family, tmp_path, state):
    family = model_family("llama")
    cfg = chat_vector_config(str(family["base"]), str(family["instruct"]), str(family["domain"]),
                             str(tmp_path / "bf16"), dtype="bfloat16")
    merge_models(cfg)
    merged = state(tmp_path / "bf16")
    base, instruct, domain = (state(family[k]) for k in ("base", "instruct", "domain"))
    name = "model.layers.1.self_attn.q_proj.weight"
    assert merged[name].dtype == torch.bfloat16
    assert torch.equal(merged[name], (domain[name] + (instruct[name] - base[name])).to(torch.bfloat16))
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"


# --- bad input: a clear error and nothing left where the output belongs -------------------------------------


def cv(family, out, **extra) -> MergeConfig:
    return chat_vector_config(str(family["base"]), str(family["instruct"]), str(family["domain"]), str(out), **extra)


def test_missing_model_directory(model_family, tmp_path):
    family = model_family("llama")
    with pytest.raises(ModelError, match="nowhere"):
        merge_models(chat_vector_config(str(tmp_path / "nowhere"), str(family["instruct"]), str(family["domain"]),
                                        str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_unknown_dtype_is_a_config_error(model_family, tmp_path):
    with pytest.raises(ConfigError, match="dtype"):
        cv(model_family("llama"), tmp_path / "out", dtype="bf16")


def test_mismatched_models_list_the_offending_tensors(model_family, tmp_path, tokenizer_dir):
    family = model_family("llama")
    other = LlamaWider(tmp_path / "wider", tokenizer_dir)
    with pytest.raises(ModelError, match=r"differ in shape.*embed_tokens|differ in shape.*layers"):
        merge_models(chat_vector_config(str(family["base"]), str(other), str(family["domain"]), str(tmp_path / "o")))
    qwen = model_family("qwen2")["base"]
    with pytest.raises(ModelError, match="architectures differ"):
        merge_models(chat_vector_config(str(family["base"]), str(qwen), str(family["domain"]), str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def LlamaWider(path: Path, tokenizer_dir) -> Path:  # noqa: N802 - reads like the model it builds
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=30522, hidden_size=32, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_missing_tensor_is_named(model_family, tmp_path, state):
    family = model_family("llama")
    broken = tmp_path / "broken"
    broken.mkdir()
    tensors = state(family["instruct"])
    del tensors["model.layers.1.mlp.down_proj.weight"]
    from safetensors.torch import save_file

    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    (broken / "config.json").write_text((family["instruct"] / "config.json").read_text())
    with pytest.raises(ModelError, match=r"lacks 1 tensor.*layers\.1\.mlp\.down_proj"):
        merge_models(chat_vector_config(str(family["base"]), str(broken), str(family["domain"]), str(tmp_path / "o")))


def test_pickles_are_refused(model_family, tmp_path, state):
    family = model_family("llama")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(state(family["instruct"]), pickled / "pytorch_model.bin")
    (pickled / "config.json").write_text((family["instruct"] / "config.json").read_text())
    with pytest.raises(ModelError, match="allow_pickle"):
        merge_models(chat_vector_config(str(family["base"]), str(pickled), str(family["domain"]), str(tmp_path / "o")))
    cfg = chat_vector_config(str(family["base"]), str(pickled), str(family["domain"]), str(tmp_path / "o"))
    merge_models(cfg.model_copy(update={"allow_pickle": True}))
    assert (tmp_path / "o" / "model.safetensors").is_file()


def test_existing_output_input_as_output_and_read_only(model_family, tmp_path, monkeypatch):
    family = model_family("llama")
    (tmp_path / "taken").mkdir()
    with pytest.raises(RunDirError, match="already exists"):
        merge_models(cv(family, tmp_path / "taken"))
    with pytest.raises(RunDirError, match="one of the inputs"):
        merge_models(cv(family, family["domain"]))
    monkeypatch.setattr("adaptlab.merge.engine.os.access", lambda *a: False)
    with pytest.raises(RunDirError, match="read-only"):
        merge_models(cv(family, tmp_path / "ro" / "out"))


def test_a_failure_while_writing_leaves_nothing(model_family, tmp_path, monkeypatch):
    from adaptlab.merge import tensors_io

    original = tensors_io.SafetensorsShardWriter.write_chunk
    calls = {"n": 0}

    def failing_write(self, name, tensor):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return original(self, name, tensor)

    monkeypatch.setattr(tensors_io.SafetensorsShardWriter, "write_chunk", failing_write)
    with pytest.raises(AdaptlabError, match="No space left"):
        merge_models(cv(model_family("llama"), tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_element_wise_methods_give_the_same_result_in_slices(model_family, tmp_path, monkeypatch, state):
    family = model_family("llama")
    whole = tmp_path / "whole"
    merge_models(cv(family, whole, scale=0.3))
    monkeypatch.setattr("adaptlab.merge.engine.SLICE_ELEMENTS", 37)  # slices end inside rows
    sliced = tmp_path / "sliced"
    merge_models(cv(family, sliced, scale=0.3))
    a, b = state(whole), state(sliced)
    assert all(torch.equal(a[name], b[name]) for name in a)
    report = json.loads((sliced / "merge_report.json").read_text())
    rows = {row["name"]: row for row in json.loads((whole / "merge_report.json").read_text())["per_tensor"]}
    for row in report["per_tensor"]:
        assert row["max_abs_change"] == pytest.approx(rows[row["name"]]["max_abs_change"])
        assert row["rms"] == pytest.approx(rows[row["name"]]["rms"], rel=1e-5)


def copy_with_a_nan(source: Path, target: Path) -> str:
    """A copy of a model directory whose first floating tensor holds one NaN; returns that tensor's name."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    name = next(n for n, t in weights.items() if t.is_floating_point())
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return name


def test_a_nan_in_an_input_is_an_error_naming_the_tensor_unless_allowed(model_family, tmp_path):
    family = model_family("llama")
    name = copy_with_a_nan(family["domain"], tmp_path / "broken")
    cfg = chat_vector_config(str(family["base"]), str(family["instruct"]), str(tmp_path / "broken"),
                             str(tmp_path / "out"), scale=0.5)
    with pytest.raises(ModelError, match=rf"broken: tensor '{name}' holds 1 NaN or Inf values.*allow_nonfinite"):
        merge_models(cfg)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
    merge_models(cfg.model_copy(update={"allow_nonfinite": True}))

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    report = json.loads((tmp_path / "out" / "merge_report.json").read_text(), parse_constant=refuse)
    row = next(r for r in report["per_tensor"] if r["name"] == name)
    assert row["rms"] is None  # NaN is written as null: the report stays valid JSON


def test_a_rule_that_matches_no_tensor_is_an_error(model_family, tmp_path):
    family = model_family("llama")
    cfg = MergeConfig(method="linear", models=[{"model": str(family["domain"])}, {"model": str(family["instruct"])}],
                      rules=[{"match": r"lm_head"}, {"match": r"self_atn\.", "action": "merge"}],
                      output=str(tmp_path / "out"), progress=False)
    with pytest.raises(ConfigError, match=r"rules\[1\]\.match 'self_atn\\\\.' matches no tensor"):
        merge_models(cfg)
    assert not (tmp_path / "out").exists()


def test_a_nan_in_a_copied_tensor_is_an_error_too(model_family, tmp_path):
    family = model_family("llama")
    name = copy_with_a_nan(family["domain"], tmp_path / "broken")
    cfg = MergeConfig(method="linear", models=[{"model": str(tmp_path / "broken")}, {"model": str(family["instruct"])}],
                      rules=[{"match": f"^{name}$", "action": "copy", "copy_from": str(tmp_path / "broken")}],
                      output=str(tmp_path / "out"), progress=False)
    with pytest.raises(ModelError, match=rf"tensor '{name}' holds 1 NaN or Inf values"):
        merge_models(cfg)
