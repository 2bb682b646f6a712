"""Tiny random models for merge tests: a base and models derived from it by small random changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

CHAT_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"


def llama_config(**extra) -> LlamaConfig:
    return LlamaConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, **extra)


def qwen2_config(**extra) -> Qwen2Config:
    return Qwen2Config(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                       tie_word_embeddings=True, **extra)


def bert_config() -> BertConfig:
    return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)


BUILDERS = {
    "llama": (llama_config, LlamaForCausalLM),
    "qwen2": (qwen2_config, Qwen2ForCausalLM),
    "bert": (bert_config, BertModel),
}


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a model directory (single or sharded safetensors)."""
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


@pytest.fixture
def state():
    return load_state


def derived(model: torch.nn.Module, seed: int, scale: float = 0.02) -> torch.nn.Module:
    """A copy of ``model`` whose floating-point parameters moved by seeded noise (a 'fine-tuned' model)."""
    import copy

    generator = torch.Generator().manual_seed(seed)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in clone.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return clone


def save(model, tokenizer, path: Path, chat_template: str | None = None, max_shard_size: str | None = None) -> Path:
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    if chat_template:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def model_family(tmp_path_factory, tokenizer_dir):
    """``family(arch, sharded=False)`` -> dict of base / domain / instruct model directories."""
    cache: dict = {}
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def build(arch: str = "llama", sharded: bool = False) -> dict[str, Path]:
        key = (arch, sharded)
        if key not in cache:
            config_fn, model_cls = BUILDERS[arch]
            torch.manual_seed(0)
            base = model_cls(config_fn()).eval()
            root = tmp_path_factory.mktemp(f"{arch}-{'sharded' if sharded else 'single'}")
            shard = "400KB" if sharded else None
            cache[key] = {
                "base": save(base, tokenizer, root / "base", max_shard_size=shard),
                "domain": save(derived(base, 1), tokenizer, root / "domain", max_shard_size=shard),
                "instruct": save(derived(base, 2), tokenizer, root / "instruct", CHAT_TEMPLATE, shard),
            }
        return cache[key]

    return build


@pytest.fixture(scope="session")
def derive():
    """``derive(model, seed)``: a seeded noisy copy of a model, as a fine-tuned version of it."""
    return derived


@pytest.fixture(scope="session")
def chat_template() -> str:
    return CHAT_TEMPLATE
