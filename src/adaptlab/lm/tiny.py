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


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000, adds_bos: bool = False, has_bos: bool = True):
    """A byte-level BPE tokenizer (``PreTrainedTokenizerFast``) trained on ``texts``, with the chat template.

    ``adds_bos``: encoding prepends BOS, as Llama's tokenizer does; ``has_bos=False``: no BOS token at
    all, as Qwen2's (EOS is then the usual document separator). Both shapes matter to log-likelihood
    scoring, which follows the tokenizer's own special tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    if adds_bos:
        bos = ("<|bos|>", tokenizer.token_to_id("<|bos|>"))
        tokenizer.post_processor = processors.TemplateProcessing(single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B",
                                                                 special_tokens=[bos])
    template = CHAT_TEMPLATE if has_bos else CHAT_TEMPLATE.replace("{{ bos_token }}", "")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<|pad|>",
                                   bos_token="<|bos|>" if has_bos else None, eos_token="<|eos|>",
                                   chat_template=template)


def save_random_causal_lm(tokenizer, output: str | Path, hidden: int = 64, layers: int = 2, heads: int = 4,
                           max_positions: int = 512, seed: int = 0, family: str = "llama",
                           initializer_range: float = 0.02) -> Path:
    """A randomly initialised causal LM over ``tokenizer``, saved with it as an HF model folder.

    ``family`` "llama" (the default) or "qwen2" (Qwen2's architecture: biased q/k/v projections). A
    larger ``initializer_range`` than the usual 0.02 gives sharp, context-dependent predictions, which
    tests of scoring need (near-uniform ones hide mistakes).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    families = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    config_class, model_class = families[family]
    output = refuse_existing(output, "model directory")
    torch.manual_seed(seed)
    config = config_class(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=3 * hidden,
                          num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                          max_position_embeddings=max_positions, tie_word_embeddings=True,
                          initializer_range=initializer_range,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    model = model_class(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output


SCORING_MODEL_SHAPES = {  # name -> (family, tokenizer adds BOS, tokenizer has a BOS token)
    "llama-bos": ("llama", True, True),
    "qwen2-no-bos": ("qwen2", False, False),
}


def save_scoring_models(texts: list[str], root: str | Path, vocab_size: int = 400) -> dict[str, Path]:
    """Two tiny sharp random LMs whose tokenizers differ where log-likelihood conventions differ.

    ``llama-bos``: a Llama whose tokenizer prepends BOS; ``qwen2-no-bos``: a Qwen2 whose tokenizer has
    no BOS token (EOS is the prefix). The lm-evaluation-harness parity test and benchmark score both.
    """
    root = Path(root)
    models = {}
    for name, (family, adds_bos, has_bos) in SCORING_MODEL_SHAPES.items():
        tokenizer = train_tokenizer(texts, vocab_size=vocab_size, adds_bos=adds_bos, has_bos=has_bos)
        models[name] = save_random_causal_lm(tokenizer, root / name, hidden=32, layers=2, heads=4, max_positions=256,
                                             family=family, initializer_range=0.3)
    return models
