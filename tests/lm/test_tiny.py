"""Tiny models from scratch for the demo: a BPE tokenizer with a chat template, a random Llama saved with it."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from adaptlab.errors import RunDirError
from adaptlab.lm.tiny import save_random_causal_lm, train_tokenizer

TEXTS = ["The snow leopard lives in the high mountains.", "Anna cooked soup for dinner on Monday."] * 20


def test_tokenizer_round_trips_text_and_ends_turns_with_eos(tmp_path):
    tokenizer = train_tokenizer(TEXTS, vocab_size=300)
    assert tokenizer.decode(tokenizer("Anna cooked soup.")["input_ids"]) == "Anna cooked soup."
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
                                         tokenize=False)
    assert chat == "<|bos|><|user|>Hi<|eos|><|assistant|>Yo<|eos|>"
    model_dir = save_random_causal_lm(tokenizer, tmp_path / "m", hidden=16, layers=1, heads=2, max_positions=32)
    model, loaded = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    assert model.config.vocab_size == len(loaded) and model.generation_config.eos_token_id == loaded.eos_token_id
    assert loaded.chat_template == tokenizer.chat_template
    with pytest.raises(RunDirError, match="already exists"):
        save_random_causal_lm(tokenizer, model_dir)
