"""adaptlab export gguf: tiny Llama and Qwen2 models written as GGUF and read back by transformers' GGUF loader."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_SPLIT

from adaptlab.models import gguf_export
from adaptlab.models.gguf_export import check_logits, export_gguf, llama3_rope_factors
from adaptlab.models.ollama import modelfile_text, translate_chat_template
from gguf_files import CHAT_TEMPLATE, MERGES, SPECIAL, tokens

TOLERANCE = {"f32": 1e-5, "f16": 1e-2, "bf16": 5e-2}  # bf16 keeps 8 significant bits to f16's 11
TEXTS = ["the cat sat on the mat 123", "<|im_start|>user\nhi there<|im_end|>\n"]
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_level_tokenizer(split: str | None = None) -> PreTrainedTokenizerFast:
    """The byte-level BPE of tests/gguf_files.py (specials, 256 bytes, 8 merges) with a ChatML template;
    GPT-2's built-in split (as SmolLM2 after import) or a ``Split`` regex (as Qwen2)."""
    vocab, _ = tokens()
    backend = Tokenizer(models.BPE({t: i for i, t in enumerate(vocab)}, [tuple(m.split(" ")) for m in MERGES]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False) if split is None else \
        pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=SPECIAL[1], eos_token=SPECIAL[2],
                                   pad_token=SPECIAL[0], chat_template=CHAT_TEMPLATE)


def save_model(path: Path, family: str) -> Path:
    """Llama: grouped-query attention (4 query, 2 key-value heads), its own output layer, three embedding rows no
    token uses. Qwen2: tied embeddings and non-zero q/k/v biases. Weights at std 0.1 give logits of order 1."""
    tokenizer = byte_level_tokenizer(None if family == "llama" else QWEN2_SPLIT)
    torch.manual_seed(0)
    shape = dict(vocab_size=len(tokenizer) + 3, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.1)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False, rope_theta=50000.0))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=True))
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith("proj.bias"):
                    parameter.normal_(std=0.5)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {family: save_model(root / family, family) for family in ("llama", "qwen2")}


@pytest.fixture(scope="module")
def exported(sources, tmp_path_factory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("gguf")
    return {(family, dtype): export_gguf(sources[family], root / f"{family}-{dtype}.gguf", dtype).path
            for family in sources for dtype in ("f32", "f16", "bf16")}


def metadata(path: Path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    return fields, {t.name: t for t in reader.tensors}


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_transformers_reads_the_file_back_to_the_same_logits(sources, exported, family, dtype):
    check = check_logits(sources[family], exported[family, dtype], dtype, TEXTS[0])
    assert check.source < TOLERANCE[dtype]
    assert check.rounded_source < 1e-5  # all of the difference is the rounding to the chosen type
    if dtype != "f32":
        assert check.source > 0  # and that rounding is really there


def test_llama_file_has_llama_cpp_names_metadata_and_types(exported):
    fields, tensors = metadata(exported["llama", "f16"])
    assert fields["general.architecture"] == "llama" and fields["general.file_type"] == 1
    expected = {"llama.context_length": 128, "llama.embedding_length": 32, "llama.block_count": 2,
                "llama.feed_forward_length": 64, "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
                "llama.rope.dimension_count": 8, "llama.vocab_size": 270}
    assert {key: fields[key] for key in expected} == expected
    assert fields["llama.rope.freq_base"] == 50000.0
    assert fields["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    per_block = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    assert set(tensors) == {"token_embd.weight", "output_norm.weight", "output.weight",
                            *(f"blk.{i}.{part}.weight" for i in range(2) for part in per_block)}
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == "F16"
    assert tensors["blk.0.attn_norm.weight"].tensor_type.name == "F32"
    assert list(tensors["blk.0.attn_k.weight"].shape) == [32, 16]  # GGUF lists dimensions innermost first


def test_qwen2_file_keeps_biases_and_ties_the_output_layer(exported):
    fields, tensors = metadata(exported["qwen2", "bf16"])
    assert fields["general.architecture"] == "qwen2" and fields["general.file_type"] == 32
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    assert {f"blk.1.attn_{p}.bias" for p in "qkv"} <= set(tensors)
    assert tensors["blk.1.attn_q.bias"].tensor_type.name == "F32"
    assert tensors["token_embd.weight"].tensor_type.name == "BF16"
    assert fields["tokenizer.ggml.pre"] == "qwen2"


def test_llama_query_and_key_rows_are_interleaved_per_head(sources, exported):
    """Row j*d/2 + i of a head (half j, index i) is row 2i + j in the file; Qwen2's rows stay as they are."""
    source = LlamaForCausalLM.from_pretrained(sources["llama"]).model.layers[0].self_attn
    _, tensors = metadata(exported["llama", "f32"])
    for part, heads in (("q", 4), ("k", 2)):
        original = getattr(source, f"{part}_proj").weight.detach()
        written = torch.from_numpy(tensors[f"blk.0.attn_{part}.weight"].data.copy())
        width = original.shape[0] // heads
        for head in range(heads):
            for i in range(width // 2):
                for j in range(2):
                    assert torch.equal(written[head * width + 2 * i + j], original[head * width + j * width // 2 + i])
    qwen = Qwen2ForCausalLM.from_pretrained(sources["qwen2"]).model.layers[0].self_attn
    _, qwen_tensors = metadata(exported["qwen2", "f32"])
    assert torch.equal(torch.from_numpy(qwen_tensors["blk.0.attn_q.weight"].data.copy()), qwen.q_proj.weight.detach())


def test_the_tokenizer_travels_in_the_file(sources, exported):
    for family in ("llama", "qwen2"):
        path = exported[family, "f32"]
        original = AutoTokenizer.from_pretrained(sources[family])
        back = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        for text in TEXTS:
            assert back(text)["input_ids"] == original(text)["input_ids"]
        assert back.chat_template == CHAT_TEMPLATE
    fields, _ = metadata(exported["llama", "f32"])
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["tokenizer.ggml.merges"] == MERGES
    assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.ggml.token_type"][:4] == [3, 3, 3, 1]  # control specials, then normal tokens
    assert fields["tokenizer.ggml.tokens"][-3:] == ["[PAD267]", "[PAD268]", "[PAD269]"]  # rows no token uses
    assert fields["tokenizer.ggml.token_type"][-3:] == [5, 5, 5]


def test_a_sentencepiece_style_tokenizer_is_written_with_scores_and_byte_tokens(tmp_path):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece in ["▁", "t", "h", "e", "a", "c", "m", "▁t", "he", "▁the", "▁c", "at", "▁cat", "▁m", "▁mat"]:
        vocab.setdefault(piece, len(vocab))
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("▁", "c"), ("a", "t"), ("▁c", "at"), ("▁", "m"), ("▁m", "at")]
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=64)).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    path = export_gguf(tmp_path / "m", tmp_path / "spm.gguf", "f32").path
    fields, _ = metadata(path)
    assert fields["tokenizer.ggml.model"] == "llama" and fields["tokenizer.ggml.add_space_prefix"] is True
    types = fields["tokenizer.ggml.token_type"]
    assert types[:3] == [2, 3, 3] and set(types[3:259]) == {6}  # unknown, control, control, 256 bytes
    scores = dict(zip(fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.scores"]))
    assert (scores["▁t"], scores["he"], scores["▁mat"], scores["a"]) == (0.0, -1.0, -7.0, 0.0)  # -(merge rank)
    back = AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
    for text in ("the cat sat on the mat", " mat\nthe"):  # "s", "o", "n" and "\n" fall back to byte tokens
        assert back(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_llama3_rope_scaling_becomes_transformers_frequency_divisors():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = LlamaConfig(hidden_size=256, num_attention_heads=2, max_position_embeddings=131072,
                         rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 8192})
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    plain = 500000.0 ** -(torch.arange(0, 128, 2, dtype=torch.float32) / 128)
    factors = llama3_rope_factors(config)
    assert factors.shape == (64,) and factors[0] == 1 and factors[-1] == 8
    assert 1 < factors[32] < 8  # the smoothed band
    assert torch.allclose(factors, plain / scaled, rtol=1e-5)


def test_modelfile_translates_a_chatml_template(sources, tmp_path):
    translation = translate_chat_template(AutoTokenizer.from_pretrained(sources["qwen2"]))
    text = modelfile_text(tmp_path / "model.gguf", tmp_path / "Modelfile", translation)
    assert text == (
        "# Ollama Modelfile written by adaptlab export gguf\n"
        "FROM ./model.gguf\n\n"
        "# chat template: ChatML\n"
        'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
        '<|im_start|>assistant\n"""\n\n'
        'PARAMETER stop "<|im_start|>"\n'
        'PARAMETER stop "<|im_end|>"\n'
    )


def test_modelfile_takes_the_default_system_prompt_and_notes_an_unknown_template(tmp_path):
    tokenizer = byte_level_tokenizer()
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    text = modelfile_text(tmp_path / "a" / "m.gguf", tmp_path / "Modelfile", translate_chat_template(tokenizer))
    assert f"FROM {tmp_path / 'a' / 'm.gguf'}\n" in text  # not beside the Modelfile: an absolute path
    assert text.endswith('\nSYSTEM """You are a helpful AI assistant"""\n')
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    assert translate_chat_template(tokenizer) is None
    unknown = modelfile_text(tmp_path / "m.gguf", tmp_path / "Modelfile", None)
    assert "TEMPLATE \"" not in unknown and "# TEMPLATE: this model's chat template has no known Ollama" in unknown


def test_cli_exports_a_run_directory_with_its_modelfile(sources, tmp_path, run_cli):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    for file in sources["qwen2"].iterdir():
        (run / "model" / file.name).write_bytes(file.read_bytes())
    code, out, err = run_cli("export", "gguf", run, "--output", tmp_path / "out" / "qwen.gguf", "--dtype", "f32",
                             "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["architecture"] == "qwen2" and result["chat_template"] == "ChatML" and result["tensors"] == 26
    assert (tmp_path / "out" / "Modelfile").read_text().startswith(
        "# Ollama Modelfile written by adaptlab export gguf\nFROM ./qwen.gguf\n")


def test_cli_refuses_an_unsupported_architecture_and_leaves_nothing(tmp_path, run_cli):
    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=270, n_embd=16, n_layer=1, n_head=2, n_positions=32)).save_pretrained(gpt2)
    byte_level_tokenizer().save_pretrained(gpt2)
    out = tmp_path / "out"
    code, _, err = run_cli("export", "gguf", gpt2, "--output", out / "g.gguf")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: model: ")  # one line (saving the model printed above)
    assert "is a gpt2 model (GPT2LMHeadModel)" in err and "supports the architectures llama, qwen2" in err
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_refuses_an_existing_output_and_a_missing_model(sources, tmp_path, run_cli):
    taken = tmp_path / "taken.gguf"
    taken.write_bytes(b"mine")
    code, _, err = run_cli("export", "gguf", sources["llama"], "--output", taken)
    assert code == 2 and "already exists" in err and taken.read_bytes() == b"mine"
    code, _, err = run_cli("export", "gguf", tmp_path / "nowhere", "--output", tmp_path / "x.gguf")
    assert code == 2 and "nowhere does not exist" in err and not (tmp_path / "x.gguf").exists()
    (tmp_path / "Modelfile").write_text("mine")
    code, _, err = run_cli("export", "gguf", sources["llama"], "--output", tmp_path / "y.gguf")
    assert code == 2 and "Modelfile" in err and not (tmp_path / "y.gguf").exists()


def test_an_interrupted_export_leaves_no_partial_file(sources, tmp_path, monkeypatch):
    written = []

    def interrupted(tensor, qtype, module):
        if written:
            raise KeyboardInterrupt
        written.append(tensor)
        return original(tensor, qtype, module)

    original = gguf_export.tensor_bytes
    monkeypatch.setattr(gguf_export, "tensor_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_gguf(sources["llama"], tmp_path / "m.gguf", "f16", tmp_path / "Modelfile")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.real_model
@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_smollm2_round_trip(smollm2_gguf, tmp_path, dtype):
    """SmolLM2-135M-Instruct, imported from its GGUF and exported again."""
    from adaptlab.models.gguf import resolve_model

    model = resolve_model(str(smollm2_gguf))
    result = export_gguf(model, tmp_path / "smollm2.gguf", dtype, tmp_path / "Modelfile")
    assert result.chat_template == "ChatML" and result.tied_embeddings
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in (tmp_path / "Modelfile").read_text()
    check = check_logits(model, result.path, dtype)
    # measured: f32 0 and 0; f16 0.038 (logits up to 37: f16 keeps 11 significant bits) and 0
    assert check.rounded_source < 1e-5 and check.source < (1e-5 if dtype == "f32" else 0.1)
