"""Streaming tensor I/O: reading single/sharded/pickled model directories, writing safetensors shards."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from adaptlab.errors import ConfigError, ModelError
from adaptlab.merge.tensors_io import (
    DTYPES,
    SAFETENSORS_DTYPE_CODES,
    ModelTensors,
    PlannedTensor,
    SafetensorsShardWriter,
    assign_shards,
    parse_dtype,
)


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(10, 4, generator=gen),
        "layers.0.weight": torch.randn(4, 4, generator=gen).to(torch.bfloat16),
        "layers.0.bias": torch.randn(4, generator=gen).to(torch.float16),
        "positions": torch.arange(7, dtype=torch.int64),
    }


def _write_sharded(directory: Path, state: dict[str, torch.Tensor], split: list[list[str]]) -> dict[str, str]:
    """save_file each group as a shard, plus a hand-written HF index."""
    directory.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for i, names in enumerate(split, start=1):
        file = f"model-{i:05d}-of-{len(split):05d}.safetensors"
        save_file({n: state[n] for n in names}, directory / file, metadata={"format": "pt"})
        weight_map.update({n: file for n in names})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return weight_map


def _assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


# -- dtype helpers ---------------------------------------------------------------------------------


def test_parse_dtype_and_codes():
    assert parse_dtype("bfloat16") is torch.bfloat16 and set(DTYPES) == {"float32", "float16", "bfloat16"}
    with pytest.raises(ConfigError, match=r"dtype: unknown dtype 'bf16'; use one of: float32, float16, bfloat16"):
        parse_dtype("bf16")
    assert SAFETENSORS_DTYPE_CODES[torch.bfloat16] == "BF16" and SAFETENSORS_DTYPE_CODES[torch.int64] == "I64"
    assert len(SAFETENSORS_DTYPE_CODES) == 10


# -- reading ---------------------------------------------------------------------------------------


def test_single_file_reading(tmp_path):
    state = _state()
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with ModelTensors(tmp_path) as model:
        assert sorted(model.names()) == sorted(state) and len(model) == 4
        assert model.names() == model.names()  # deterministic
        assert "embed.weight" in model and "nope" not in model
        assert model.shape("layers.0.weight") == (4, 4) and model.dtype("layers.0.weight") is torch.bfloat16
        assert model.nbytes("embed.weight") == 10 * 4 * 4 and model.nbytes("positions") == 7 * 8
        assert model.metadata() == {"format": "pt"}
        for name, tensor in state.items():
            _assert_same(model.get(name), tensor)
        with pytest.raises(ModelError, match="has no tensor 'nope'"):
            model.shape("nope")
    with pytest.raises(ValueError, match="closed"):
        model.get("embed.weight")


def test_shape_dtype_nbytes_do_not_load_data(tmp_path, monkeypatch):
    save_file(_state(), tmp_path / "model.safetensors")
    model = ModelTensors(tmp_path)
    monkeypatch.setattr(ModelTensors, "get", lambda self, name: pytest.fail("get() was called"))
    shapes = {name: model.shape(name) for name in model.names()}
    assert shapes == {"embed.weight": (10, 4), "layers.0.weight": (4, 4), "layers.0.bias": (4,), "positions": (7,)}
    assert model.dtype("layers.0.bias") is torch.float16 and model.nbytes("layers.0.bias") == 8
    model.close()


def test_sharded_reading_in_index_order(tmp_path):
    state = _state(1)
    weight_map = _write_sharded(tmp_path, state, [["positions", "embed.weight"], ["layers.0.weight", "layers.0.bias"]])
    (tmp_path / "stray.safetensors").write_bytes(b"ignored: the index is authoritative")
    with ModelTensors(tmp_path) as model:
        assert model.names() == list(weight_map)
        assert model.file_of("layers.0.bias").name == "model-00002-of-00002.safetensors"
        for name, tensor in state.items():
            _assert_same(model.get(name), tensor)


def test_loose_safetensors_files_and_duplicates(tmp_path):
    state = _state(2)
    save_file({"b": state["embed.weight"]}, tmp_path / "part-b.safetensors")
    save_file({"a": state["positions"]}, tmp_path / "part-a.safetensors")
    with ModelTensors(tmp_path) as model:
        assert model.names() == ["a", "b"]  # files sorted by name
        _assert_same(model.get("b"), state["embed.weight"])
    save_file({"a": state["positions"]}, tmp_path / "part-c.safetensors")
    with pytest.raises(ModelError, match=r"tensor 'a' is stored twice, in part-a.safetensors and part-c.safetensors"):
        ModelTensors(tmp_path)


def test_missing_directory_and_no_weights(tmp_path):
    with pytest.raises(ModelError, match=r"model directory .*missing.* does not exist"):
        ModelTensors(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"no weights found in .*files there: config.json"):
        ModelTensors(tmp_path)


def test_index_errors(tmp_path):
    state = _state()
    _write_sharded(tmp_path, state, [["embed.weight", "positions"], ["layers.0.weight", "layers.0.bias"]])
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())

    index["weight_map"]["extra.weight"] = "model-00002-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelError, match=r"index.json: tensor 'extra.weight' is listed in shard model-00002.*not in"):
        ModelTensors(tmp_path)

    del index["weight_map"]["extra.weight"]
    index["weight_map"]["positions"] = "model-00002-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelError, match=r"'positions' is listed in shard model-00002.* stored in model-00001"):
        ModelTensors(tmp_path)

    index["weight_map"]["positions"] = "model-00003-of-00003.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelError, match=r"shard model-00003-of-00003.safetensors \(holding e.g. 'positions'\) is"):
        ModelTensors(tmp_path)

    del index["weight_map"]["positions"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelError, match=r"1 tensor\(s\) stored in the shards are not in the index, e.g. \['positions"):
        ModelTensors(tmp_path)

    index_path.write_text('{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}')
    with pytest.raises(ModelError, match="tensor 'a' appears twice in the index"):
        ModelTensors(tmp_path)
    index_path.write_text("{not json")
    with pytest.raises(ModelError, match="cannot read the shard index"):
        ModelTensors(tmp_path)


def test_pickle_refused_unless_allowed(tmp_path):
    state = _state(3)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"pytorch_model.bin is a pickled .*execute arbitrary code.*allow_pickle: "
                                         r"true.*torch.load\(weights_only=True, mmap=True\)"):
        ModelTensors(tmp_path)
    with ModelTensors(tmp_path, allow_pickle=True) as model:
        assert model.names() == list(state) and model.metadata() == {}
        assert model.shape("embed.weight") == (10, 4) and model.dtype("layers.0.weight") is torch.bfloat16
        for name, tensor in state.items():
            _assert_same(model.get(name), tensor)


def test_sharded_pickle_index(tmp_path):
    state = _state(4)
    names = list(state)
    torch.save({n: state[n] for n in names[:2]}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({n: state[n] for n in names[2:]}, tmp_path / "pytorch_model-00002-of-00002.bin")
    weight_map = {n: f"pytorch_model-0000{1 + (i >= 2)}-of-00002.bin" for i, n in enumerate(names)}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ModelError, match="pytorch_model-00001-of-00002.bin is a pickled PyTorch checkpoint"):
        ModelTensors(tmp_path)
    with ModelTensors(tmp_path, allow_pickle=True) as model:
        assert model.names() == names
        _assert_same(model.get(names[3]), state[names[3]])


def test_pickle_with_code_is_rejected_even_when_allowed(tmp_path):
    torch.save({"weight": torch.zeros(2), "extra": Path("not a tensor")}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelError, match="cannot load as a tensors-only checkpoint"):
        ModelTensors(tmp_path, allow_pickle=True)


# -- writing ---------------------------------------------------------------------------------------


def _plan(state: dict[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(name, tuple(t.shape), t.dtype) for name, t in state.items()]


def _write_all(out: Path, state: dict[str, torch.Tensor], max_shard_bytes: int, **kwargs) -> SafetensorsShardWriter:
    with SafetensorsShardWriter(out, _plan(state), max_shard_bytes, **kwargs) as writer:
        for name, tensor in state.items():
            writer.write(name, tensor)
    return writer


def _all_dtypes_state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(3, 5, generator=gen) * 100
    state = {f"t.{dtype}": base.to(dtype) for dtype in SAFETENSORS_DTYPE_CODES}
    state["scalar"] = torch.tensor(2.5, dtype=torch.bfloat16)
    state["empty"] = torch.zeros(0, 3)
    state["odd.bf16"] = torch.randn(3, generator=gen).to(torch.bfloat16)  # leaves the next offset unaligned
    state["after.odd"] = torch.randn(2, 2, generator=gen)
    state["transposed"] = torch.randn(4, 6, generator=gen).to(torch.bfloat16).t()  # not contiguous
    return state


def test_single_shard_round_trip_all_dtypes(tmp_path):
    state = _all_dtypes_state()
    writer = _write_all(tmp_path, state, max_shard_bytes=10**9, metadata={"merged_by": "adaptlab"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    file = tmp_path / "model.safetensors"
    assert file.stat().st_size == 8 + struct.unpack("<Q", file.read_bytes()[:8])[0] + writer.total_size
    assert struct.unpack("<Q", file.read_bytes()[:8])[0] % 8 == 0
    loaded = load_file(file)
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        _assert_same(loaded[name], tensor)
    with safe_open(str(file), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "merged_by": "adaptlab"}
        assert handle.offset_keys() == list(state)  # written in plan order
        _assert_same(handle.get_tensor("t.torch.bfloat16"), state["t.torch.bfloat16"])
    with ModelTensors(tmp_path) as model:  # safe_open copes with the unaligned offsets after "odd.bf16"
        assert model.names() == list(state)
        for name, tensor in state.items():
            _assert_same(model.get(name), tensor)


def test_sharded_round_trip_and_oversized_tensor(tmp_path):
    state = {f"w{i}": torch.full((25,), float(i)) for i in range(5)}  # 100 bytes each
    state["big"] = torch.arange(100, dtype=torch.float32)  # 400 bytes > max
    state["tail"] = torch.ones(10, dtype=torch.bfloat16)
    plan = [PlannedTensor(n, tuple(t.shape), t.dtype) for n, t in state.items()]
    assert [[t.name for t in shard] for shard in assign_shards(plan, 250)] == [
        ["w0", "w1"], ["w2", "w3"], ["w4"], ["big"], ["tail"]]

    writer = _write_all(tmp_path, state, max_shard_bytes=250)
    files = [f"model-0000{i}-of-00005.safetensors" for i in range(1, 6)]
    assert writer.shard_files == files
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files + ["model.safetensors.index.json"])
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 5 * 100 + 400 + 20
    assert index["weight_map"]["big"] == files[3] and index["weight_map"]["w1"] == files[0]
    assert list(load_file(tmp_path / files[3])) == ["big"]
    with ModelTensors(tmp_path) as model:
        assert model.names() == list(state)
        for name, tensor in state.items():
            _assert_same(model.get(name), tensor)


def test_write_order_shape_and_dtype_are_checked(tmp_path):
    state = _state()
    writer = SafetensorsShardWriter(tmp_path, _plan(state), 10**6)
    with pytest.raises(ValueError, match=r"write\('positions'\) out of plan order: expected 'embed.weight' next"):
        writer.write("positions", state["positions"])
    with pytest.raises(ValueError, match=r"got \(10, 4\) torch.float16, planned \(10, 4\) torch.float32"):
        writer.write("embed.weight", state["embed.weight"].half())
    with pytest.raises(ValueError, match=r"got \(4, 10\)"):
        writer.write("embed.weight", state["embed.weight"].t())
    for name, tensor in state.items():
        writer.write(name, tensor)
    with pytest.raises(ValueError, match="every planned tensor has already been written"):
        writer.write("positions", state["positions"])
    writer.close()
    with pytest.raises(ValueError, match="after the writer was closed"):
        writer.write("positions", state["positions"])
    writer.abort()  # no-op after a successful close
    assert (tmp_path / "model.safetensors").is_file()


def test_bad_plans_are_bugs(tmp_path):
    with pytest.raises(ValueError, match="plan is empty"):
        SafetensorsShardWriter(tmp_path, [], 100)
    with pytest.raises(ValueError, match=r"planned twice: \['a'\]"):
        SafetensorsShardWriter(tmp_path, [("a", (1,), torch.float32), ("a", (2,), torch.float32)], 100)
    with pytest.raises(ValueError, match="without a safetensors code"):
        SafetensorsShardWriter(tmp_path, [("a", (1,), torch.complex64)], 100)
    with pytest.raises(ValueError, match="must be positive"):
        SafetensorsShardWriter(tmp_path, [("a", (1,), torch.float32)], 0)


def test_abort_on_exception_removes_partial_files(tmp_path):
    state = {f"w{i}": torch.full((25,), float(i)) for i in range(4)}
    (tmp_path / "keep.txt").write_text("not ours")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with SafetensorsShardWriter(tmp_path, _plan(state), 200) as writer:
            writer.write("w0", state["w0"])
            writer.write("w1", state["w1"])  # shard 1 complete and closed
            writer.write("w2", state["w2"])  # shard 2 open
            raise RuntimeError("disk on fire")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_close_detects_missing_tensor(tmp_path):
    state = {f"w{i}": torch.full((25,), float(i)) for i in range(3)}
    writer = SafetensorsShardWriter(tmp_path, _plan(state), 200)
    writer.write("w0", state["w0"])
    writer.write("w1", state["w1"])
    with pytest.raises(ValueError, match=r"1 planned tensor\(s\) unwritten, e.g. \['w2'\]"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_close_detects_wrong_file_size(tmp_path):
    state = {"w": torch.ones(4)}
    writer = SafetensorsShardWriter(tmp_path, _plan(state), 200)
    writer.write("w", state["w"])
    with open(tmp_path / "model.safetensors", "ab") as fh:
        fh.write(b"junk")
    with pytest.raises(OSError, match="bytes on disk, expected"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_writer_never_overwrites(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        _write_all(tmp_path, {"w": torch.ones(2)}, 100)
    assert (tmp_path / "model.safetensors").read_bytes() == b"precious"


def test_sharded_output_loads_in_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    source = {name: t.to(torch.bfloat16) for name, t in LlamaForCausalLM(config).state_dict().items()}
    total = sum(t.numel() * t.itemsize for t in source.values())
    plan = [PlannedTensor(n, tuple(t.shape), t.dtype) for n, t in source.items()]
    max_shard_bytes = next(size for size in range(total // 3, total) if len(assign_shards(plan, size)) == 3)

    out = tmp_path / "merged"
    _write_all(out, source, max_shard_bytes)
    config.save_pretrained(out)
    assert len(list(out.glob("model-*-of-00003.safetensors"))) == 3

    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).state_dict()
    assert set(loaded) == set(source)
    for name, tensor in source.items():
        _assert_same(loaded[name], tensor)
