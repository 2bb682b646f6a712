"""Helpers shared by the ``adaptlab lm train`` tests: a tiny Llama directory, a prepared corpus, SFT JSONL.

The model uses a word-level tokenizer of ~40 words (built here with ``tokenizers``, offline), so the output
layer is tiny and a training step takes milliseconds even on a busy 2-core machine.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from adaptlab.lm.packing import encode_document, pack_documents
from adaptlab.lm.prepared import tokenizer_fingerprint

WORDS = ("bond yield rate bank loan credit equity market price risk asset fund stock audit tax cash "
         "river mountain snow bird forest tree leaf rain wind cloud stone path light").split()
# "role : content </s>" per turn; </s> (EOS, a special token) ends every turn
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def tiny_tokenizer(chat_template: str | None = CHAT_TEMPLATE,
                   extra_words: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over WORDS, roles and punctuation (and ``extra_words`` after them), with <s>,
    </s>, <pad>, <unk>."""
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocab = {token: i for i, token in enumerate([*specials, ".", ":", "system", "user", "assistant", "be", "brief",
                                                 *WORDS, *extra_words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                        bos_token="<s>", eos_token="</s>")
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def save_tiny_llama(path: Path, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    """A seeded random Llama (hidden 32, 2 layers) over the tiny vocabulary, saved with its tokenizer."""
    tokenizer = tiny_tokenizer(chat_template)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def sentences(n: int, seed: int, words: int = 12) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(words // 2, words))) + "." for _ in range(n)]


def write_prepared_corpus(root: Path, model_dir: Path, block_size: int = 32, train_docs: int = 60,
                          general: bool = True) -> Path:
    """A prepared corpus in the layout of ``adaptlab lm prepare`` (data/, text/, data/manifest.json)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = {"train": sentences(train_docs, 1), "eval_domain": sentences(8, 2)}
    if general:
        texts["eval_general"] = sentences(8, 3)
    splits = {}
    for name, docs in texts.items():
        rows, _ = pack_documents([encode_document(tokenizer, t) for t in docs], block_size)
        datasets.Dataset.from_list(rows).save_to_disk(str(root / "data" / name))
        splits[name] = {"rows": len(rows), "tokens": sum(len(r["input_ids"]) for r in rows)}
        if name != "train":
            (root / "text").mkdir(parents=True, exist_ok=True)
            (root / "text" / f"{name}.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    manifest = {"tokenizer": str(Path(model_dir).resolve()), "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
                "block_size": block_size, "splits": splits}
    (root / "data" / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


def write_sft_jsonl(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` two- or three-turn conversations (some with a system message)."""
    rng = random.Random(seed)
    lines = []
    for i, question in enumerate(sentences(n, seed, words=6)):
        messages = [{"role": "system", "content": "be brief"}] if i % 3 == 0 else []
        messages += [{"role": "user", "content": question},
                     {"role": "assistant", "content": " ".join(rng.choice(WORDS) for _ in range(5))}]
        lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


TRAINING_KEYS = {"max_steps", "per_device_train_batch_size", "per_device_eval_batch_size", "learning_rate",
                 "warmup_steps", "logging_steps", "progress", "lr_scheduler_type", "min_lr_rate", "seed",
                 "gradient_accumulation_steps", "weight_decay", "trainer_args", "use_liger_kernel", "bf16",
                 "torch_compile", "num_train_epochs"}


def train_config(model: Path, data: Path, output: Path, **overrides) -> dict:
    """A fast CPU config: 8 steps, checkpoint every 2, evaluation every 4. Trainer keys in ``overrides`` (e.g.
    ``max_steps=4``) go under ``training:``, the others at the top."""
    training = {"max_steps": 8, "per_device_train_batch_size": 4, "learning_rate": 3e-3, "warmup_steps": 2,
                "logging_steps": 1, "progress": False}
    config = {"model": str(model), "data": str(data), "output": str(output), "save_steps": 2, "eval_steps": 4,
              "keep_checkpoints": 2, "training": training}
    for key, value in overrides.items():
        (training if key in TRAINING_KEYS else config)[key] = value
    return config
