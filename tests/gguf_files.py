"""Tiny GGUF files written with the ``gguf`` package: a random Llama with a byte-level BPE vocabulary.

The tensors follow llama.cpp's names (``token_embd``, ``blk.N.attn_q`` ...), and the tokenizer is
stored as llama.cpp stores it (tokens, token types, merges, special-token ids, chat template), so
transformers' own GGUF reader is what these files test against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HIDDEN, LAYERS, HEADS, FFN = 32, 2, 4, 64
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "Ġ a", "h e", "i n", "Ġt he", "e r", "o n", "Ġ s"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in byte order."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in visible:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tokens() -> tuple[list[str], list[int]]:
    """Vocabulary (specials, bytes, merged pairs) and llama.cpp token types (3 control, 1 normal)."""
    merged = [m.replace(" ", "") for m in MERGES]
    vocab = SPECIAL + byte_alphabet() + merged
    return vocab, [3] * len(SPECIAL) + [1] * (len(vocab) - len(SPECIAL))


def write_tiny_gguf(path: str | Path, architecture: str = "llama", tensor_type: str = "F32", seed: int = 0) -> Path:
    """A random 2-layer model as a GGUF; ``tensor_type`` names the matrices' GGML type (norms stay F32).

    A type the ``gguf`` package cannot quantise (Q8_1, say) is written as zero blocks of its size.
    """
    import gguf

    path = Path(path)
    rng = np.random.default_rng(seed)
    vocab, types = tokens()
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny test model")
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(vocab))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(vocab)
    writer.add_token_types(types)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    qtype = gguf.GGMLQuantizationType[tensor_type]

    def matrix(name: str, rows: int, cols: int) -> None:
        data = (rng.standard_normal((rows, cols)) * 0.1).astype(np.float32)
        try:
            packed = gguf.quants.quantize(data, qtype)
        except NotImplementedError:  # a type gguf-py cannot write: zero blocks of the right size
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            packed = np.zeros((rows, cols // block * size), dtype=np.uint8)
        writer.add_tensor(name, packed, raw_dtype=qtype)

    def vector(name: str, size: int) -> None:
        writer.add_tensor(name, np.ones(size, dtype=np.float32))

    matrix("token_embd.weight", len(vocab), HIDDEN)
    for layer in range(LAYERS):
        vector(f"blk.{layer}.attn_norm.weight", HIDDEN)
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            matrix(f"blk.{layer}.{part}.weight", HIDDEN, HIDDEN)
        vector(f"blk.{layer}.ffn_norm.weight", HIDDEN)
        matrix(f"blk.{layer}.ffn_gate.weight", FFN, HIDDEN)
        matrix(f"blk.{layer}.ffn_up.weight", FFN, HIDDEN)
        matrix(f"blk.{layer}.ffn_down.weight", HIDDEN, FFN)
    vector("output_norm.weight", HIDDEN)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
