"""Models wired to behave, for the probe and evaluation tests: the greedy next token depends only on the current one."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def transition_model(tokenizer, transitions: dict[str, str], default: str) -> LlamaForCausalLM:
    """A Llama whose greedy next token depends only on the current token: ``transitions`` else ``default``.

    Attention and MLP outputs are zeroed, so the last hidden state is the current token's embedding;
    embeddings are one-hot directions (one per source token, one shared by all others) and the output
    layer maps each direction to its target token.
    """
    ids = {word: tokenizer.convert_tokens_to_ids(word) for word in [default, *transitions, *transitions.values()]}
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings, head = model.model.embed_tokens.weight, model.lm_head.weight
        embeddings.zero_()
        embeddings[:, 0] = 1.0
        head.zero_()
        head[ids[default], 0] = 10.0
        for direction, (source, target) in enumerate(transitions.items(), start=1):
            embeddings[ids[source]] = 0.0
            embeddings[ids[source], direction] = 1.0
            head[ids[target], direction] = 10.0
    return model
