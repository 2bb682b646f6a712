"""The chat vector (Hirano & Imajo 2024; Huang et al. 2024) as a task-arithmetic merge.

With base B, its instruction-tuned version I and its domain-pretrained version D::

    θ_out = θ_D + λ·(θ_I − θ_B)
          = θ_B + 1·(θ_D − θ_B) + λ·(θ_I − θ_B)      (task arithmetic, weights 1 and λ)

The output keeps the domain model's config and tokenizer (its vocabulary is what the domain text
was trained with) and takes the instruct model's chat template, special tokens and generation
config, so it chats like the instruct model.
"""

from __future__ import annotations

from adaptlab.config import validate_config
from adaptlab.merge.config import MergeConfig


def chat_vector_config(base: str, instruct: str, domain: str, output: str, scale: float = 1.0,
                       dtype: str | None = None, vocab: str = "strict") -> MergeConfig:
    return validate_config(MergeConfig, {
        "name": "chat-vector", "method": "task_arithmetic", "base_model": base,
        "models": [{"model": domain, "weight": 1.0}, {"model": instruct, "weight": scale}],
        "parameters": {"normalize": False, "lambda": 1.0}, "dtype": dtype, "vocab": vocab,
        "tokenizer_from": domain, "config_from": domain, "chat_template_from": instruct, "output": output,
    })
