"""Helpers for the ``strategy.layers`` and ``strategy.dynamic`` tests: tiny models of the three families, a batch of
random data for each, a ``StrategyTrainer`` built from a ``strategy:`` dict, and a record of which parts of the
model moved in each optimizer step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    LlamaConfig,
    LlamaForCausalLM,
    TrainerCallback,
)

from adaptlab.tuning.families import FAMILIES, Family
from adaptlab.tuning.settings import TrainerSettings, training_arguments
from adaptlab.tuning.strategies import StrategyBlock, prepare
from adaptlab.tuning.trainer import StrategyTrainer

TASKS = ("token_classification", "sequence_classification", "causal_lm")
LAYERS = 3
VOCAB = 64
LENGTH = 8
IGNORE = -100


def tiny_model(task: str, seed: int = 0) -> Any:
    """A seeded random BERT tagger, BERT classifier or Llama with ``LAYERS`` layers (hidden 32)."""
    torch.manual_seed(seed)
    if task == "causal_lm":
        return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=37,
                                            num_hidden_layers=LAYERS, num_attention_heads=2, num_key_value_heads=2,
                                            max_position_embeddings=32, pad_token_id=0))
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=32, num_labels=3)
    return (BertForTokenClassification if task == "token_classification" else BertForSequenceClassification)(config)


def tiny_data(task: str, rows: int = 16, seed: int = 1) -> datasets.Dataset:
    """Random rows for ``task``; causal rows are right-padded, with the first 3 tokens a prompt (label -100)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (rows, LENGTH), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    if task == "token_classification":
        labels = torch.randint(0, 3, (rows, LENGTH), generator=generator)
    elif task == "sequence_classification":
        labels = torch.randint(0, 3, (rows,), generator=generator)
    else:
        lengths = torch.randint(LENGTH - 3, LENGTH + 1, (rows,), generator=generator)
        attention_mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
        input_ids = input_ids * attention_mask
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE)
        labels[:, :3] = IGNORE
    return datasets.Dataset.from_dict({"input_ids": input_ids.tolist(), "attention_mask": attention_mask.tolist(),
                                       "labels": labels.tolist()})


def strategy_trainer(task: str, block: dict[str, Any], output_dir: Path, model: Any = None, **settings: Any
                     ) -> tuple[StrategyTrainer, list, Family]:
    """A ``StrategyTrainer`` on ``tiny_model(task)`` with the strategies of ``block`` (parsed by ``StrategyBlock``).

    Defaults: AdamW at a constant 1e-2 with weight decay 0.1 (so a parameter that the optimizer touches with a zero
    gradient would still move), batch 4, no checkpoints.
    """
    family = FAMILIES[task]
    model, strategies = prepare(StrategyBlock.model_validate(block), family,
                                tiny_model(task) if model is None else model)
    return build_trainer(task, model, strategies, output_dir, **settings), strategies, family


def build_trainer(task: str, model: Any, strategies: list, output_dir: Path, **settings: Any) -> StrategyTrainer:
    """``strategy_trainer`` for a model the strategies have already prepared."""
    options = {"learning_rate": 1e-2, "lr_scheduler_type": "constant", "weight_decay": 0.1,
               "per_device_train_batch_size": 4, "max_steps": 6, "logging_steps": 1, "progress": False,
               "report_to": "none", **settings}
    args = training_arguments(TrainerSettings(**options), output_dir, save_strategy="no")
    return StrategyTrainer(model=model, args=args, train_dataset=tiny_data(task), strategies=strategies,
                           causal=FAMILIES[task].kind == "causal_lm")


class MovedPerStep(TrainerCallback):
    """``moved[g]``: the positions (``"embeddings"``, a layer index, ``"head"``) with any parameter changed by
    optimizer step ``g``; a position absent from ``moved[g]`` is bit-identical before and after step ``g``."""

    def __init__(self, family: Family):
        self.family = family
        self.moved: list[set] = []
        self.before: list[tuple[Any, torch.Tensor]] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        positions = self.family.positions(model)
        self.params = [(positions[id(p)], p) for p in model.parameters()]
        self.before = [p.detach().clone() for _, p in self.params]

    def on_step_end(self, args, state, control, **kwargs):
        after = [p.detach().clone() for _, p in self.params]
        self.moved.append({position for (position, _), old, new in zip(self.params, self.before, after)
                           if not torch.equal(old, new)})
        self.before = after


def train_and_watch(trainer: StrategyTrainer, family: Family) -> list[set]:
    watcher = MovedPerStep(family)
    trainer.add_callback(watcher)
    trainer.train()
    return watcher.moved
