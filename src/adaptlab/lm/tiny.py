"""Tiny causal LMs built from scratch, for the offline domain-instruct demo and for tests.

A real recipe starts from a pretrained base and its instruct version; offline on 2 CPU cores the
demo builds both: a byte-level BPE tokenizer trained on the shipped text, and a small Llama-shaped
model with random weights that is then pretrained. The tokenizer gets a minimal chat template::

    <|bos|><|user|>question<|eos|><|assistant|>answer<|eos|>

so that a model ends each turn with its EOS token: stopping at EOS after an answer is exactly
what the instruction-following probe checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from adaptlab.runs import refuse_existing

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000):
    """A byte-level BPE tokenizer (``PreTrainedTokenizerFast``) trained on ``texts``, with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<|pad|>", bos_token="<|bos|>",
                                   eos_token="<|eos|>", chat_template=CHAT_TEMPLATE)


def save_random_llama(tokenizer, output: str | Path, hidden: int = 64, layers: int = 2, heads: int = 4,
                      max_positions: int = 512, seed: int = 0) -> Path:
    """A randomly initialised Llama-shaped causal LM over ``tokenizer``, saved with it as an HF model folder."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    output = refuse_existing(output, "model directory")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=3 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output
