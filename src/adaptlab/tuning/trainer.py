"""``StrategyTrainer``: the HF Trainer with the strategy hooks, and the weighted causal-LM loss.

Every trainer in adaptlab (NER, RE, classification, causal CPT/SFT, FRACTAL's weighted SFT) is this class; the
task decides only the model, data, collator and metrics. What it adds to ``transformers.Trainer``:

* **Optimizer groups.** The learning rate of a parameter is ``learning_rate * prod(strategy factors)``
  (:meth:`Strategy.lr_scale`); parameters are grouped by (factor, weight decay or not), and the scheduler
  scales every group alike, so the ratios hold through warm-up and decay.
* **Weighted causal-LM loss.** When a batch carries ``weights`` (per token, aligned with ``labels``) or a strategy
  gives a per-token factor (DFT), the loss of an optimizer step is

      L = sum_t f_t w_t CE_t / sum_t w_t

  over the target tokens t (``labels != -100``, shifted as in HF causal LMs) of the *whole accumulated batch*
  (all micro-batches of the step, all processes): the denominator is computed once per step in
  :meth:`_get_num_items_in_batch`, so gradient accumulation 4 x batch 2 gives the same update as batch 8. With
  all weights 1 and no factor it equals the model's own token-averaged loss. ``f_t`` (DFT's detached
  probability) scales the numerator only, as in TRL's ``loss_type="dft"``.
* **Extra loss terms** from :meth:`Strategy.loss_terms` (means over the micro-batch) are added to the loss, divided
  by the accumulation steps when the task loss is already normalised over the whole step (so both have the same
  per-step scale with gradient accumulation); the task's own loss is scaled by
  every strategy's :meth:`Strategy.task_loss_weight` and is 0 for a batch with no gold label at all (rows that
  only a teacher labels), where the model's own mean over no targets would be NaN. Strategies' ``extra_columns``
  are kept in the batches for ``loss_terms`` and removed before the model's ``forward``; their ``collator``
  wraps the task's, and ``transform_inputs`` may replace a training batch. **Callbacks** are appended.
* **Console.** transformers' printed log dicts and tqdm bars give way to one :class:`TrainingProgress` bar named
  by the stage (``stage=``, else :func:`stage_name`); the log records go to the run's ``log.txt``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from transformers.trainer import DEFAULT_PROGRESS_CALLBACK

from adaptlab.runs import progress_enabled
from adaptlab.tuning.families import unwrap
from adaptlab.tuning.progress import TrainingProgress
from adaptlab.tuning.strategies.base import Strategy

IGNORE_INDEX = -100


def per_token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(CE, labels)`` per shifted position (position t-1 predicts token t), CE in float32, 0 where ignored."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    ce = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                         ignore_index=IGNORE_INDEX, reduction="none")
    return ce.view_as(shift_labels), shift_labels


def weighted_causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None,
                            factor: torch.Tensor | None = None, normaliser: torch.Tensor | float | None = None
                            ) -> torch.Tensor:
    """``sum f_t w_t CE_t / normaliser`` over target tokens; ``normaliser`` defaults to this batch's ``sum w_t``.

    ``weights`` (batch, seq) are aligned with ``labels`` and shifted here; ``factor`` is already per shifted
    position (batch, seq - 1). A batch whose weights are all 0 gives a loss of 0 that still has a gradient graph.
    """
    ce, shift_labels = per_token_cross_entropy(logits, labels)
    active = (shift_labels != IGNORE_INDEX).to(ce.dtype)
    if weights is not None:
        active = active * weights[:, 1:].to(ce.dtype)
    numerator = ce * active
    if factor is not None:
        numerator = numerator * factor.to(ce.dtype)
    total = active.sum() if normaliser is None else torch.as_tensor(normaliser, dtype=ce.dtype, device=ce.device)
    return torch.where(total > 0, numerator.sum() / total.clamp_min(1e-12), numerator.sum() * 0.0)


class StrategyTrainer(transformers.Trainer):
    """``transformers.Trainer`` + strategy hooks (module docstring). ``causal`` selects the weighted LM loss."""

    def __init__(self, *args: Any, strategies: list[Strategy] | None = None, causal: bool = False,
                 stage: str | None = None, **kwargs: Any):
        self.strategies = list(strategies or [])
        self.causal = causal
        callbacks = list(kwargs.pop("callbacks", None) or [])
        for strategy in self.strategies:
            callbacks.extend(strategy.callbacks())
            if kwargs.get("data_collator") is not None:
                kwargs["data_collator"] = strategy.collator(kwargs["data_collator"])
        self.extra_columns = [column for strategy in self.strategies for column in strategy.extra_columns]
        super().__init__(*args, callbacks=callbacks, **kwargs)
        for printed in (transformers.PrinterCallback, transformers.ProgressCallback, DEFAULT_PROGRESS_CALLBACK):
            self.remove_callback(printed)
        # training.progress arrives as the Trainer's own disable_tqdm (settings.training_arguments); -q wins over it
        self.progress = TrainingProgress(stage or stage_name(self.model, causal),
                                         enabled=progress_enabled(not self.args.disable_tqdm))
        self.add_callback(self.progress)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().train(*args, **kwargs)
        finally:
            self.progress.close()  # a failed or interrupted run must not leave a live bar (and no cursor) behind

    # ----------------------------------------------------------------------------------------- optimizer

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        opt_model = self.model if model is None else model
        scales: dict[int, float] = defaultdict(lambda: 1.0)
        for strategy in self.strategies:
            for key, factor in strategy.lr_scale(opt_model).items():
                scales[key] *= factor
        if self.optimizer is not None or not scales or all(f == 1.0 for f in scales.values()):
            return super().create_optimizer(model)
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = defaultdict(list)
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                groups[(scales[id(param)], name in decay)].append(param)
        param_groups = [{"params": params, "lr": self.args.learning_rate * factor,
                         "weight_decay": self.args.weight_decay if decays else 0.0}
                        for (factor, decays), params in sorted(groups.items(), key=lambda item: item[0])]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer

    # ---------------------------------------------------------------------------------------------- loss

    def _set_signature_columns_if_needed(self) -> None:
        """Keep the ``weights`` column (the causal loss reads it) and the strategies' ``extra_columns``."""
        super()._set_signature_columns_if_needed()
        for column in (["weights"] if self.causal else []) + self.extra_columns:
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    def _token_factor(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        factor = None
        for strategy in self.strategies:
            extra = strategy.token_loss_factor(logits, labels)
            if extra is not None:
                factor = extra if factor is None else factor * extra
        return factor

    def _weighted(self, inputs: dict[str, Any]) -> bool:
        return self.causal and ("weights" in inputs or any(s.reweights_tokens for s in self.strategies))

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> Any:
        """For weighted causal batches, ``sum w_t`` over the target tokens of every micro-batch of the step."""
        if not batch_samples or not self._weighted(batch_samples[0]) or "weights" not in batch_samples[0]:
            return super()._get_num_items_in_batch(batch_samples, device)
        total = sum(((batch["labels"][:, 1:] != IGNORE_INDEX) * batch["weights"][:, 1:]).sum().float()
                    for batch in batch_samples)
        total = torch.as_tensor(total, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total).sum()
        return total

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if model.training:
            for strategy in self.strategies:
                inputs = strategy.transform_inputs(model, inputs)
        model_inputs = {key: value for key, value in inputs.items() if key not in self.extra_columns}
        loss, outputs = self._task_loss(model, model_inputs, num_items_in_batch)
        for strategy in self.strategies:
            loss = loss * strategy.task_loss_weight()
        share = self._term_share(model, num_items_in_batch)
        for strategy in self.strategies:
            for term in strategy.loss_terms(model, inputs, outputs).values():
                loss = loss + term * share
        return (loss, outputs) if return_outputs else loss

    def _task_loss(self, model: Any, model_inputs: dict[str, Any], num_items_in_batch: Any) -> tuple[Any, Any]:
        """``(loss, outputs)`` of the task's own labels, before the strategies' weights and terms."""
        if self._weighted(model_inputs):
            labels = model_inputs.pop("labels")
            weights = model_inputs.pop("weights", None)
            outputs = model(**model_inputs)
            factor = self._token_factor(outputs.logits, labels)
            loss = weighted_causal_lm_loss(outputs.logits, labels, weights, factor, num_items_in_batch)
            return self._scaled_for_accumulation(loss, num_items_in_batch), outputs
        self.loss_is_scaled_for_ga = None
        if "labels" in model_inputs and not _has_gold(model_inputs["labels"]):
            outputs = model(**{key: value for key, value in model_inputs.items() if key != "labels"})
            return outputs.logits.sum() * 0.0, outputs  # no gold label in this batch: only strategies' terms teach
        return super().compute_loss(model, model_inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)

    def _scaled_for_accumulation(self, loss: torch.Tensor, num_items_in_batch: Any) -> torch.Tensor:
        """A loss this trainer divided by ``num_items_in_batch`` itself (or, when None, by its micro-batch's count):
        marked so the Trainer does not divide it again by the accumulation steps, and multiplied back by the
        processes when tokens are averaged across devices (DDP averages gradients over processes)."""
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes
        return loss

    def _term_share(self, model: Any, num_items_in_batch: Any) -> float:
        """The factor on the strategies' terms (each a mean over this micro-batch) that puts them on the task
        loss's scale: ``1 / accumulation steps`` when the task loss is already divided for gradient accumulation
        (normalised by ``num_items_in_batch``, so the Trainer will not divide it again), else 1."""
        scaled = self.loss_is_scaled_for_ga
        if scaled is None:  # the Trainer's own rule (transformers.Trainer.training_step)
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) \
                or self.compute_loss_func is not None
        steps = getattr(self, "current_gradient_accumulation_steps", 1)
        return 1.0 / steps if model.training and scaled and steps > 1 else 1.0


STAGE_NAMES = {"ForTokenClassification": "NER student", "ForSequenceClassification": "classifier student",
               "ForMaskedLM": "masked-LM", "ForCausalLM": "causal LM", "MultitaskModel": "multi-task student"}


def stage_name(model: Any, causal: bool = False) -> str:
    """The name of a training stage on its progress bar, from the model's head (:data:`STAGE_NAMES`: token
    classification is the NER student, sequence classification the relation or text classifier); else the model's
    class name."""
    name = type(unwrap(model)).__name__
    if causal:
        return "causal LM"
    return next((stage for suffix, stage in STAGE_NAMES.items() if name.endswith(suffix)), name)


def _has_gold(labels: torch.Tensor) -> bool:
    """Whether a batch has any gold target: integer labels other than ``-100`` (float multi-hot rows always do)."""
    return labels.is_floating_point() or bool((labels != IGNORE_INDEX).any())


def finalize(strategies: list[Strategy], model: Any) -> Any:
    """The model to save after training: each strategy's ``finalize`` in turn."""
    for strategy in strategies:
        model = strategy.finalize(model)
    return model


def summaries(strategies: list[Strategy]) -> dict[str, Any]:
    """``{strategy name: what it did}`` for ``metrics.json``."""
    return {strategy.name: strategy.summary() for strategy in strategies}
