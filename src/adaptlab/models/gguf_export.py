"""An HF causal LM (Llama or Qwen2 family) as a GGUF file for llama.cpp and Ollama.

Why: a merged or fine-tuned model is most often run next with llama.cpp or Ollama, which read GGUF.
The file holds three things, all under llama.cpp's names:

* metadata: ``general.architecture`` (``llama`` / ``qwen2``) and its hyper-parameters (context length,
  embedding length, block count, feed-forward length, head counts, RoPE dimension, base and scaling,
  RMS-norm epsilon, vocabulary size, file type);
* the tokenizer (:mod:`adaptlab.models.gguf_vocab`), chat template included;
* the tensors, renamed with the ``gguf`` package's own HF -> GGUF name table (the one transformers reads
  these files back with): ``token_embd``, ``blk.N.attn_q/k/v/output``, ``blk.N.ffn_gate/up/down``,
  ``blk.N.attn_norm/ffn_norm``, ``output_norm``, ``output`` (absent when the embeddings are tied); Qwen2's
  q/k/v biases keep their ``.bias``. Matrices are stored in the requested f32/f16/bf16, 1-D tensors (norms,
  biases) in f32 as llama.cpp keeps them.

Llama's Q/K rows are permuted. HF's rotary embedding rotates the pair (i, i + d/2) of each head of width d
(``rotate_half``); llama.cpp's ``llama`` RoPE rotates the adjacent pair (2i, 2i + 1). Row j*d/2 + i of a head
(half j, index i) therefore moves to row 2i + j: per head, reshape the rows to (2, d/2), transpose, flatten.
K uses its own (key-value) head count. Qwen2 runs with NeoX-style RoPE in llama.cpp, so its rows stay.
Llama 3's frequency-dependent RoPE scaling becomes llama.cpp's ``rope_freqs`` tensor (:func:`llama3_rope_factors`).

Tensors are streamed: every tensor's name, shape and type is declared first, then each is read from the
safetensors, converted and appended, one at a time, so memory holds one tensor, never a second copy of the
model. The file is written under a temporary name beside the output and renamed when complete.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.errors import ConfigError, ModelError
from adaptlab.models.gguf import GGUF_SUFFIX, _gguf_module
from adaptlab.models.gguf_vocab import build_vocab, write_vocab
from adaptlab.runs import atomic_write_text, current_umask, get_logger, refuse_existing

ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2"}  # HF model_type -> GGUF general.architecture
DTYPES = ("f16", "bf16", "f32")
PERMUTED_ROWS = {"llama"}  # architectures whose Q/K rows llama.cpp expects interleaved
SKIPPED_TENSORS = (".rotary_emb.inv_freq",)  # buffers some older checkpoints saved; recomputed at load


@dataclass
class PlannedTensor:
    """One output tensor: where it comes from, its GGUF name, shape and GGML type, and its Q/K head count."""

    source: str | None
    name: str
    shape: tuple[int, ...]
    qtype: Any
    heads: int | None = None
    data: Any = None  # a tensor computed here (rope_freqs) rather than read from the model


@dataclass
class ExportResult:
    path: Path
    architecture: str
    dtype: str
    tensors: int
    size_bytes: int
    tied_embeddings: bool
    modelfile: Path | None
    chat_template: str | None  # the Ollama translation's shape name; None when not translated


def export_gguf(model: str | os.PathLike, output: str | os.PathLike, dtype: str = "f16",
                modelfile: str | os.PathLike | None = None) -> ExportResult:
    """Write ``model`` (an HF directory or an adaptlab run directory with ``model/``) as the GGUF ``output``,
    and an Ollama Modelfile at ``modelfile`` unless it is None (see :mod:`adaptlab.models.ollama`)."""
    from transformers import AutoTokenizer

    from adaptlab.merge.tensors_io import ModelTensors
    from adaptlab.models.ollama import modelfile_text, translate_chat_template

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype: {dtype!r} is not a GGUF export type; use one of {', '.join(DTYPES)}")
    output = Path(output)
    if not output.name.lower().endswith(GGUF_SUFFIX):
        raise ConfigError(f"--output: {output} must end in {GGUF_SUFFIX}")
    refuse_existing(output, "output")
    if modelfile is not None:
        modelfile = refuse_existing(modelfile, "Modelfile")
    directory, config = causal_model_dir(model)
    gguf = _gguf_module()
    architecture = ARCHITECTURES[config.model_type]
    tokenizer = AutoTokenizer.from_pretrained(directory)
    vocab = build_vocab(tokenizer, config.vocab_size, str(directory))
    translation = translate_chat_template(tokenizer)
    log = get_logger()
    with ModelTensors(directory) as tensors:
        plan = plan_tensors(tensors, config, architecture, dtype, gguf)
        writer = gguf.GGUFWriter(None, architecture)
        write_hyperparameters(writer, config, directory, dtype, gguf)
        write_vocab(writer, vocab)
        log.info("exporting %s (%s, %d tensors) to %s as %s", directory, architecture, len(plan), output, dtype)
        _write_atomically(writer, plan, tensors, output)
    if modelfile is not None:
        if translation is None:
            log.warning("the chat template of %s has no known Ollama translation; %s says so and has no TEMPLATE",
                        directory, modelfile)
        try:
            atomic_write_text(modelfile, modelfile_text(output, modelfile, translation))
        except BaseException:
            output.unlink(missing_ok=True)  # the pair is one result: no GGUF without its Modelfile
            raise
    return ExportResult(path=output, architecture=architecture, dtype=dtype, tensors=len(plan),
                        size_bytes=output.stat().st_size, tied_embeddings=bool(config.tie_word_embeddings),
                        modelfile=modelfile, chat_template=translation.shape.name if translation else None)


def causal_model_dir(model: str | os.PathLike) -> tuple[Path, Any]:
    """The checked model directory (``model/`` of a run directory) and its config; a ModelError names the
    architecture when it is not one GGUF export supports."""
    from transformers import AutoConfig

    from adaptlab.ie.models import saved_model_dir
    from adaptlab.models.checks import check_head, read_config

    directory = saved_model_dir(model, None)
    raw = read_config(directory)
    model_type = raw["model_type"]
    if model_type not in ARCHITECTURES:
        names = ", ".join(raw.get("architectures") or []) or model_type
        raise ModelError(f"model: {directory} is a {model_type} model ({names}); GGUF export supports the "
                         f"architectures {', '.join(ARCHITECTURES)} (Llama and Qwen2 families)")
    check_head(raw, "causal_lm", directory)
    config = AutoConfig.from_pretrained(directory)
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ModelError(f"model: {directory} uses hidden_act {config.hidden_act!r}; llama.cpp's {model_type} "
                         "runs SiLU (SwiGLU) only")
    return directory, config


def head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def write_hyperparameters(writer: Any, config: Any, directory: Path, dtype: str, gguf: Any) -> None:
    """``general.*`` and ``{arch}.*`` keys: the shapes llama.cpp builds its graph from."""
    width = head_dim(config)
    writer.add_name(directory.name if directory.name != "model" else directory.parent.name)
    writer.add_type("model")
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "bf16": gguf.LlamaFileType.MOSTLY_BF16}[dtype])
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_rope_dimension_count(width)
    if width != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(width)
        writer.add_value_length(width)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    rope = rope_parameters(config)
    writer.add_rope_freq_base(rope.get("rope_theta", 10000.0))
    kind = rope.get("rope_type", "default")
    if kind in ("linear", "yarn"):
        writer.add_rope_scaling_type(gguf.RopeScalingType(kind))
        writer.add_rope_scaling_factor(rope["factor"])
        if kind == "yarn":
            writer.add_rope_scaling_orig_ctx_len(rope.get("original_max_position_embeddings")
                                                 or config.max_position_embeddings)


def rope_parameters(config: Any) -> dict:
    """transformers 5 keeps ``rope_theta`` and the scaling in ``config.rope_parameters``."""
    rope = dict(getattr(config, "rope_parameters", None) or {})
    kind = rope.get("rope_type", "default")
    if kind not in ("default", "linear", "yarn", "llama3"):
        raise ModelError(f"model: RoPE scaling {kind!r} has no GGUF form llama.cpp reads; supported: default, "
                         "linear, yarn, llama3")
    return rope


def llama3_rope_factors(config: Any) -> Any:
    """Llama 3.1's per-frequency divisors of the RoPE frequencies (llama.cpp's ``rope_freqs``).

    For the base frequency f_i = theta^(-2i/d) with wavelength w_i = 2π / f_i, the original context L, the
    scaling factor s and the low/high frequency factors a < b: w_i < L/b keeps f_i (divisor 1); w_i > L/a
    divides it by s; in between, with t = (L/w_i - a) / (b - a), the divisor is 1 / ((1 - t)/s + t).
    """
    import torch

    rope = rope_parameters(config)
    width = head_dim(config)
    factor, low, high = rope["factor"], rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    context = rope.get("original_max_position_embeddings") or config.max_position_embeddings
    frequencies = rope.get("rope_theta", 10000.0) ** -(torch.arange(0, width, 2, dtype=torch.float64) / width)
    wavelengths = 2 * math.pi / frequencies
    smooth = (context / wavelengths - low) / (high - low)
    divisors = 1 / ((1 - smooth) / factor + smooth)
    divisors = torch.where(wavelengths < context / high, torch.ones_like(divisors), divisors)
    divisors = torch.where(wavelengths > context / low, torch.full_like(divisors, factor), divisors)
    return divisors.to(torch.float32)


def plan_tensors(tensors: Any, config: Any, architecture: str, dtype: str, gguf: Any) -> list[PlannedTensor]:
    """Every output tensor, in the model's order; refuses a tensor llama.cpp has no name for."""
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == architecture)
    names = gguf.get_tensor_name_map(arch_id, config.num_hidden_layers)
    matrix_type = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
                   "bf16": gguf.GGMLQuantizationType.BF16}[dtype]
    heads = {"q_proj": config.num_attention_heads,
             "k_proj": config.num_key_value_heads or config.num_attention_heads}
    tied = bool(config.tie_word_embeddings)
    plan = []
    for source in tensors.names():
        if source.endswith(SKIPPED_TENSORS) or (tied and source == "lm_head.weight"):
            continue
        stem, _, suffix = source.rpartition(".")
        target = names.get_name(stem)
        if target is None or suffix not in ("weight", "bias"):
            raise ModelError(f"model: tensor {source!r} has no llama.cpp name for {architecture}; this model is not a "
                             f"plain {architecture} (a custom or adapter layer?); merge adapters before export")
        shape = tuple(tensors.shape(source))
        qtype = matrix_type if len(shape) > 1 else gguf.GGMLQuantizationType.F32
        rotated = heads.get(stem.rsplit(".", 1)[-1]) if architecture in PERMUTED_ROWS else None
        plan.append(PlannedTensor(source, f"{target}.{suffix}", shape, qtype, rotated))
    if not tied and "lm_head.weight" not in tensors:
        raise ModelError("model: the config says the output layer is not tied to the embeddings, but the weights "
                         "hold no lm_head.weight")
    if rope_parameters(config).get("rope_type") == "llama3":
        factors = llama3_rope_factors(config)
        plan.append(PlannedTensor(None, "rope_freqs.weight", tuple(factors.shape), gguf.GGMLQuantizationType.F32,
                                  data=factors))
    return plan


def interleave_rotary_rows(weight: Any, heads: int) -> Any:
    """HF's half-split rotary rows -> llama.cpp's adjacent pairs, per head (module docstring)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def tensor_bytes(tensor: Any, qtype: Any, gguf: Any) -> Any:
    """A tensor as the numpy array whose bytes GGUF stores for ``qtype`` (bf16 as raw 16-bit words)."""
    import torch

    if qtype == gguf.GGMLQuantizationType.BF16:
        return tensor.to(torch.bfloat16).contiguous().view(torch.int16).numpy()
    dtype = torch.float16 if qtype == gguf.GGMLQuantizationType.F16 else torch.float32
    return tensor.to(dtype).contiguous().numpy()


def _write_atomically(writer: Any, plan: list[PlannedTensor], tensors: Any, output: Path) -> None:
    """Declare the tensors, write header, metadata and tensor table, then stream the data into a temp file."""
    import numpy as np
    import torch

    gguf = _gguf_module()
    for item in plan:
        width = 4 if item.qtype == gguf.GGMLQuantizationType.F32 else 2
        writer.add_tensor_info(item.name, item.shape, np.dtype(np.float32), math.prod(item.shape) * width,
                               raw_dtype=item.qtype)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{output.name}.partial-", dir=output.parent)
    os.close(fd)
    try:
        writer.write_header_to_file(Path(partial))
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for item in plan:
            tensor = item.data if item.source is None else tensors.get(item.source).to(torch.float32)
            if item.heads:
                tensor = interleave_rotary_rows(tensor, item.heads)
            writer.write_tensor_data(tensor_bytes(tensor, item.qtype, gguf))
        writer.flush()
        for handle in writer.fout:
            os.fsync(handle.fileno())
        writer.close()
        os.chmod(partial, 0o666 & ~current_umask())
        os.replace(partial, output)
    except BaseException:
        writer.close()
        Path(partial).unlink(missing_ok=True)
        raise


VERIFY_TEXT = "The quick brown fox jumps over the lazy dog. 12 + 30 = 42, said the model."


@dataclass
class LogitCheck:
    """max |Δ| of the file's logits (read back by transformers, float32) from the source model's, and from the
    source with its matrices rounded to the export type: the first is what a user sees, the second what the
    file adds beyond the chosen precision (0 when the export is exact)."""

    source: float
    rounded_source: float


def check_logits(model: str | os.PathLike, gguf_path: str | os.PathLike, dtype: str,
                 text: str = VERIFY_TEXT) -> LogitCheck:
    """Compare the logits on ``text`` (source tokenizer); one model is in memory at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, _ = causal_model_dir(model)
    gguf_path = Path(gguf_path)
    inputs = AutoTokenizer.from_pretrained(directory)(text, return_tensors="pt")

    def logits(loaded) -> torch.Tensor:
        with torch.no_grad():
            return loaded.eval()(**inputs).logits

    source = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    expected = logits(source)
    storage = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    with torch.no_grad():
        for parameter in source.parameters():
            if parameter.dim() > 1:  # as written: matrices in the export type, norms and biases in float32
                parameter.copy_(parameter.to(storage).to(torch.float32))
    rounded = logits(source)
    del source
    found = logits(AutoModelForCausalLM.from_pretrained(str(gguf_path.resolve().parent), gguf_file=gguf_path.name,
                                                        dtype=torch.float32))
    return LogitCheck(source=float((expected - found).abs().max()), rounded_source=float((rounded - found).abs().max()))
