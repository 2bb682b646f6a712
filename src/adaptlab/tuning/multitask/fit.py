"""Training the multi-task model on the HF Trainer, through the training layer.

:class:`MultitaskTrainer` is :class:`~adaptlab.tuning.trainer.StrategyTrainer` (so ``training:`` and the
``strategy:`` hooks work as for every other student) with three changes:

* **batches**: the training loader draws its batches with :class:`~adaptlab.tuning.multitask.sampling.TaskBatchSampler`
  (one task per batch; proportional, equal or temperature sampling; a seeded order that changes every epoch), and
  :class:`TaskCollator` pads each batch with its task's collator. The loss of a batch is its task's own loss, so
  one optimizer step over ``k`` accumulated batches follows the sampled mixture of tasks.
* **evaluation**: every task with dev data is scored by its own metric (``eval_<task>_macro_f1``,
  ``eval_<task>_loss``); their mean ``eval_mean_f1`` picks the best epoch and drives early stopping.
* **logging**: each logged training loss comes with the mean loss of each task's batches since the last log
  (``loss_<task>``; this process's batches), so the report can show every task's curve.

Checkpoints hold the plain state dict (encoder and heads once each); training keeps the best epoch by
``eval_mean_f1``, as the single-task students keep theirs by dev F1. With several processes accelerate deals the
batches out (each still of one task), and the Trainer wraps this model (not a ``PreTrainedModel``) in DDP with
``find_unused_parameters``, which the heads of the tasks absent from a batch need. Not tried in multi-process runs.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptlab.runs import get_logger
from adaptlab.tuning.encoder_fit import (
    EncoderTrainerSettings,
    early_stopping,
    encoder_training_arguments,
    finish_checkpoints,
    plan_training,
    steps_trained,
    world_size,
)
from adaptlab.tuning.multitask.model import MultitaskModel
from adaptlab.tuning.multitask.sampling import Sampling, TaskBatchSampler, epoch_batches
from adaptlab.tuning.multitask.tasks import EncodedTask
from adaptlab.tuning.strategies.base import Strategy
from adaptlab.tuning.tracking import attach_trackers
from adaptlab.tuning.trainer import StrategyTrainer, finalize, summaries

SELECTION_METRIC = "mean_f1"
HISTORY_METRICS = ("loss", "macro_f1", "micro_f1", "accuracy")


class TaskCollator:
    """Pads a batch of one task with that task's collator and adds ``task`` (the task's index, one per row)."""

    def __init__(self, collators: Sequence[Any]):
        self.collators = list(collators)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        tasks = {int(feature["task"]) for feature in features}
        if len(tasks) != 1:
            raise ValueError(f"a multi-task batch must hold rows of one task, got tasks {sorted(tasks)}")
        task = tasks.pop()
        batch = self.collators[task]([{k: v for k, v in feature.items() if k != "task"} for feature in features])
        batch["task"] = torch.full((len(features),), task, dtype=torch.long)
        return batch


class MultitaskTrainer(StrategyTrainer):
    """The strategy-aware Trainer with task batches, per-task evaluation and per-task losses (module docstring)."""

    def __init__(self, *args: Any, task_names: Sequence[str], task_metrics: dict[str, Any], sampling: Sampling,
                 temperature: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.task_names = list(task_names)
        self.task_metrics = task_metrics
        self.sampling = sampling
        self.temperature = temperature
        self.batch_sampler: TaskBatchSampler | None = None
        self._task_losses: dict[int, list[torch.Tensor]] = defaultdict(list)

    def get_train_dataloader(self) -> Any:
        from torch.utils.data import DataLoader

        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        self.batch_sampler = TaskBatchSampler([len(rows) for rows in self.train_dataset.datasets],
                                              self._train_batch_size, self.sampling, self.temperature, seed)
        epoch = self.batch_sampler.summary(self.task_names)
        get_logger().info("one epoch = %d batches of up to %d examples, each from one task (%s sampling): %s",
                          epoch["batches_per_epoch"], epoch["batch_size"], self.sampling, "; ".join(
                              f"{name}: {t['train_examples']} examples, p={t['probability']:.3f}, "
                              f"{t['batches_per_epoch']} batches" for name, t in epoch["tasks"].items()))
        loader = DataLoader(self.train_dataset, batch_sampler=self.batch_sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            loss = result[0] if return_outputs else result
            self._task_losses[int(inputs["task"].reshape(-1)[0])].append(loss.detach().float())
        return result

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._task_losses:
            for index, losses in sorted(self._task_losses.items()):
                logs[f"loss_{self.task_names[index]}"] = round(float(torch.stack(losses).mean()), 4)
            self._task_losses.clear()
        super().log(logs, start_time)

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """Each task's dev rows (``eval_dataset`` or the trainer's: name -> rows) with its own metric, then the mean
        of their macro F1 as ``<prefix>_mean_f1``; logged and passed to the callbacks once."""
        datasets = eval_dataset if eval_dataset is not None else self.eval_dataset
        metrics: dict[str, float] = {}
        for name in datasets:
            self.compute_metrics = self.task_metrics[name]
            loader = self.get_eval_dataloader(name if eval_dataset is None else datasets[name])
            output = self.evaluation_loop(loader, "Evaluation", ignore_keys=ignore_keys,
                                          metric_key_prefix=f"{metric_key_prefix}_{name}")
            metrics.update(output.metrics)
        metrics[f"{metric_key_prefix}_{SELECTION_METRIC}"] = float(np.mean(
            [metrics[f"{metric_key_prefix}_{name}_macro_f1"] for name in datasets]))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def multitask_history(log_history: list[dict], task_names: Sequence[str]) -> list[dict]:
    """The training-loss and evaluation entries of ``trainer.state.log_history`` for ``metrics.json`` and curves."""
    keep = {"loss", "learning_rate", f"eval_{SELECTION_METRIC}"}
    keep |= {f"loss_{name}" for name in task_names}
    keep |= {f"eval_{name}_{metric}" for name in task_names for metric in HISTORY_METRICS}
    history = []
    for entry in log_history:
        row = {key: entry[key] for key in ("epoch", "step") if key in entry}
        row.update({key: value for key, value in entry.items() if key in keep})
        if len(row) > 2:
            history.append(row)
    return history


@dataclass
class MultitaskFit:
    model: MultitaskModel
    history: list[dict]
    seconds: float
    sampling: dict[str, Any]
    best_mean_dev_f1: float | None
    strategies: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)  # steps, evaluation interval, ... (encoder_fit.plan_training)
    notes: list[str] = field(default_factory=list)


def fit_multitask(model: MultitaskModel, tasks: Sequence[EncodedTask], tokenizer: Any,
                  settings: EncoderTrainerSettings, sampling: Sampling, temperature: float, output_dir: Path,
                  strategies: list[Strategy] | None = None) -> MultitaskFit:
    """Train ``model`` on ``tasks`` (in the order of its heads), keep the best evaluation by mean dev macro F1.

    The step budget, evaluation interval and early-stopping floor scale with the data as for the single-task
    students (``encoder_fit.plan_training``, an epoch being the sampler's batches): at least ``min_steps`` steps.
    ``model`` is already prepared by the strategies; they are finalised after training. Checkpoints go to
    ``output_dir/checkpoints`` and are removed at the end unless ``keep_checkpoints``.
    """
    from torch.utils.data import ConcatDataset

    strategies = strategies or []
    names = [task.spec.name for task in tasks]
    train = ConcatDataset([task.train.add_column("task", [i] * len(task.train)) for i, task in enumerate(tasks)])
    dev = {task.spec.name: task.dev.add_column("task", [i] * len(task.dev))
           for i, task in enumerate(tasks) if task.dev is not None and len(task.dev)}
    checkpoints = output_dir / "checkpoints"
    sizes = [len(task.train) for task in tasks]
    plan = plan_training(settings, sum(sizes), bool(dev), world_size(),
                         epoch_batches(sizes, settings.per_device_train_batch_size))
    for note in plan.notes:
        get_logger().info(note)
    trainer = MultitaskTrainer(
        model=model,
        args=encoder_training_arguments(settings, checkpoints, has_eval=bool(dev), metric=SELECTION_METRIC,
                                        plan=plan),
        train_dataset=train,
        eval_dataset=dev or None,
        processing_class=tokenizer,
        data_collator=TaskCollator([task.collator for task in tasks]),
        callbacks=early_stopping(plan),
        strategies=strategies,
        task_names=names,
        task_metrics={task.spec.name: task.compute_metrics for task in tasks},
        sampling=sampling,
        temperature=temperature,
    )
    attach_trackers(trainer, output_dir)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=settings.resume_from_checkpoint)
    seconds = time.perf_counter() - started
    final = finalize(strategies, trainer.accelerator.unwrap_model(trainer.model))
    finish_checkpoints(settings, checkpoints)
    epoch = {"mode": sampling, **({"temperature": temperature} if sampling == "temperature" else {}),
             **trainer.batch_sampler.summary(names)}
    return MultitaskFit(final, multitask_history(trainer.state.log_history, names), seconds, epoch,
                        trainer.state.best_metric, summaries(strategies),
                        {**plan.to_json(), **steps_trained(trainer.state)}, plan.notes)
