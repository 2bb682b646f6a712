"""GGUF files as models: conversion equals transformers' own GGUF load, a content-keyed cache, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adaptlab.errors import ModelError
from adaptlab.models import gguf as gguf_import
from adaptlab.models.gguf import RECORD_FILE, import_gguf, inspect_gguf, resolve_model
from gguf_files import write_tiny_gguf


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTLAB_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf")
    return {kind: write_tiny_gguf(root / f"tiny-{kind}.gguf", tensor_type=kind) for kind in ("F32", "Q8_0")}


def logits(model, tokenizer, text: str = "the cat sat on the mat") -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


@pytest.mark.parametrize("kind", ["F32", "Q8_0"])
def test_import_gives_the_same_model_as_transformers_gguf_loading(tiny_files, tmp_path, kind):
    path = tiny_files[kind]
    directory = import_gguf(path, tmp_path / "out")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(directory), AutoTokenizer.from_pretrained(directory)
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    assert torch.equal(logits(model, tokenizer), logits(reference, tokenizer))
    assert "quantization_config" not in json.loads((directory / "config.json").read_text())
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                             add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == 2
    record = json.loads((directory / RECORD_FILE).read_text())
    assert record["architecture"] == "llama" and record["dtype"] == "float32"
    assert record["tensor_types"][kind] == (20 if kind == "F32" else 15) and len(record["sha256"]) == 64


def test_bfloat16_import_halves_the_weights(tiny_files, tmp_path):
    directory = import_gguf(tiny_files["F32"], tmp_path / "bf16", dtype="bfloat16")
    model = AutoModelForCausalLM.from_pretrained(directory, dtype="auto")
    assert model.dtype == torch.bfloat16


def test_resolve_converts_once_per_content_whatever_the_file_name(tiny_files, tmp_path, monkeypatch):
    first = resolve_model(str(tiny_files["F32"]))
    assert (Path(first) / RECORD_FILE).is_file() and Path(first).parent.parent == tmp_path / "cache"
    renamed = tmp_path / "Renamed.GGUF"
    shutil.copyfile(tiny_files["F32"], renamed)
    monkeypatch.setattr(gguf_import, "_convert", lambda *a: pytest.fail("converted twice"))
    assert resolve_model(str(renamed)) == first
    assert resolve_model("some/hf-directory") == "some/hf-directory"  # anything but .gguf passes through


def test_an_interrupted_conversion_leaves_nothing_in_place(tiny_files, tmp_path, monkeypatch):
    def interrupted(path, out_dir, dtype):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_import, "_convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_gguf(tiny_files["F32"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob(".out.partial-*")) == []


def test_not_a_gguf_file(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_text("this is text, not a model")
    with pytest.raises(ModelError, match=r"model.gguf: not a GGUF file"):
        resolve_model(str(fake))


@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_a_truncated_gguf_is_named_truncated(tiny_files, tmp_path, keep):
    data = tiny_files["F32"].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError, match="cut.gguf: truncated"):
        import_gguf(cut, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_architecture_transformers_cannot_load(tmp_path):
    path = write_tiny_gguf(tmp_path / "encoder.gguf", architecture="bert")
    with pytest.raises(ModelError, match=r"architecture 'bert' cannot be loaded as a causal LM.*llama"):
        inspect_gguf(path)


def test_a_tensor_type_gguf_cannot_dequantise(tmp_path):
    path = write_tiny_gguf(tmp_path / "odd.gguf", tensor_type="Q8_1")
    with pytest.raises(ModelError, match=r"odd.gguf: tensor type\(s\) Q8_1 cannot be dequantised"):
        import_gguf(path, tmp_path / "out")


def test_a_missing_gguf_names_the_key(tmp_path):
    with pytest.raises(ModelError, match=r"teacher.model: GGUF file .*absent.gguf not found"):
        resolve_model(str(tmp_path / "absent.gguf"), "teacher.model")


def test_cli_import_and_its_errors(run_cli, tiny_files, tmp_path):
    code, out, _ = run_cli("model", "import", tiny_files["Q8_0"], "--output", tmp_path / "m")
    assert code == 0 and "Q8_0 x15" in out and str(tmp_path / "m") in out
    code, _, err = run_cli("model", "import", tiny_files["Q8_0"], "--output", tmp_path / "m")
    assert code == 2 and "already exists" in err
    code, _, err = run_cli("model", "import", tiny_files["Q8_0"], "--dtype", "int4", "--output", tmp_path / "n")
    assert code == 2 and "dtype must be one of" in err and not (tmp_path / "n").exists()
