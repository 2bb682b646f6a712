"""Helpers of the causal distillation tests: a tiny Llama teacher (larger than the tiny student of
``train_helpers``), saved with the student's tokenizer or with one that differs in one way."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from train_helpers import tiny_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


def save_teacher(path: Path, tokenizer: PreTrainedTokenizerFast | None = None, rows: int | None = None,
                 seed: int = 1) -> Path:
    """A seeded random Llama (hidden 48, 3 layers) with ``rows`` output rows (default: one per token)."""
    tokenizer = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=rows or len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def other_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """The student's tokenizer changed in one way: ``swapped`` (two words trade ids), ``extra`` (one more word),
    ``eos`` (another end-of-sequence token) or ``splitting`` (same vocabulary and specials, text split otherwise)."""
    vocab = dict(tiny_tokenizer(None).get_vocab())
    if kind == "swapped":
        vocab["bond"], vocab["yield"] = vocab["yield"], vocab["bond"]
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = (pre_tokenizers.WhitespaceSplit() if kind == "splitting" else pre_tokenizers.Whitespace())
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="." if kind == "eos" else "</s>")
    if kind == "extra":
        tokenizer.add_tokens(["glacier"])
    return tokenizer
