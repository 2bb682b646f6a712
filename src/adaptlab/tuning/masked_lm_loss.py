"""The masked-LM loss of ``strategy.domain``, with the head run on the masked positions only.

A masked-LM head scores every position against the whole vocabulary, although the loss reads only the masked
ones (about 15 %). For a small encoder that head is as costly as the encoder itself (all-MiniLM-L6-v2: about 11.7M
multiply-adds a position for its 30,522-word decoder, 10.6M for its six layers), so most of a step goes into
logits nobody reads. :class:`MaskedLMTrainer` calls the model as usual (so DDP and accelerate wrappers see a
normal forward), but a forward pre-hook on the head module hands the head the hidden states of the masked
positions only. Heads in transformers are position-wise (dense, activation, layer norm, decoder), so these logits,
the loss and its gradients equal the full computation's (a test checks them against the model's own loss).

The head is found by the attribute names transformers uses (:data:`HEAD_NAMES`); a model without one of them, or
whose logits come back for every position anyway, gets the same loss from the full logits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from adaptlab.tuning.families import unwrap
from adaptlab.tuning.strategies.base import Strategy
from adaptlab.tuning.trainer import IGNORE_INDEX, StrategyTrainer

# The first module a masked-LM model applies to the encoder's output: BERT, DeBERTa, RoFormer ... (cls), RoBERTa,
# XLM-R, MPNet ... (lm_head), ALBERT (predictions), DeBERTa legacy (lm_predictions), DistilBERT (vocab_transform).
HEAD_NAMES = ("cls", "lm_head", "predictions", "lm_predictions", "vocab_transform")


def masked_lm_head(model: Any) -> torch.nn.Module | None:
    """The module of ``model`` that maps the encoder's hidden states to the vocabulary, or None."""
    model = unwrap(model)
    base = getattr(model, "base_model", None)
    for name in HEAD_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module) and head is not base:
            return head
    return None


class MaskedPositions:
    """A forward pre-hook that keeps, of the hidden states a head receives, the positions in ``selected``."""

    def __init__(self, head: torch.nn.Module):
        self.selected: torch.Tensor | None = None
        head.register_forward_pre_hook(self)

    def __call__(self, module: torch.nn.Module, args: tuple) -> tuple | None:
        if self.selected is None or not args or args[0].dim() != 3:
            return None
        return (args[0][self.selected], *args[1:])


class MaskedLMTrainer(StrategyTrainer):
    """:class:`StrategyTrainer` whose masked-LM loss scores only the masked positions (module docstring). The
    strategies' input transforms, task-loss weights and loss terms apply as in every trainer; when a strategy adds
    loss terms (which read the model's full outputs), the head scores every position."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        head = masked_lm_head(self.model)
        reads_outputs = any(type(strategy).loss_terms is not Strategy.loss_terms for strategy in self.strategies)
        self.masked_positions = MaskedPositions(head) if head is not None and not reads_outputs else None

    def _task_loss(self, model: Any, model_inputs: dict[str, Any], num_items_in_batch: Any) -> tuple[Any, Any]:
        if self.masked_positions is None or "labels" not in model_inputs:
            return super()._task_loss(model, model_inputs, num_items_in_batch)
        labels = model_inputs["labels"]
        selected = labels != IGNORE_INDEX
        self.masked_positions.selected = selected
        try:
            outputs = model(**{key: value for key, value in model_inputs.items() if key != "labels"})
        finally:
            self.masked_positions.selected = None
        logits = outputs.logits
        if logits.dim() == 3:  # the head was not called on the hidden states: select from the full logits
            logits = logits[selected]
        total = F.cross_entropy(logits.float(), labels[selected], reduction="sum")
        # the Trainer's own rule: a sum over the step's masked tokens, not divided again by accumulation
        count = selected.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return self._scaled_for_accumulation(total / count, num_items_in_batch), outputs
