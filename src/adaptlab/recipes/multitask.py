"""``adaptlab multitask train``: one shared encoder trained on several tasks (NER, RE, classification) at once.

Read top to bottom: validate the config and the strategies -> read every task's data -> load the encoder and
encode each task -> build the model (a head per task) -> open the run -> train (batches drawn per task by
``sampling``) -> export each task as a plain HF model in ``tasks/<name>/`` -> score each export on its dev data
with adaptlab's own predictor -> finish the run (one metrics.json, one report.html with a section per task).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from adaptlab.config import StrictModel
from adaptlab.errors import ModelError, StrategyError
from adaptlab.ie.models import DEFAULT_STUDENT, resolve_student, sequence_limit
from adaptlab.ie.ner import NERPredictor
from adaptlab.ie.relations import REPredictor
from adaptlab.ie.text_classifier import load_classifier
from adaptlab.metrics.classification import text_classification_report
from adaptlab.recipes import cls, ner, relations
from adaptlab.recipes.multitask_data import TaskConfig, TaskInput, check_tasks, read_task
from adaptlab.report import plots
from adaptlab.report.html import Image, Paragraph, Section, Table, cls_report_sections, ner_report_sections
from adaptlab.runs import RunDir, get_logger, open_run, seed_everything
from adaptlab.tuning.encoder_fit import EncoderTrainerSettings
from adaptlab.tuning.multitask.fit import SELECTION_METRIC, fit_multitask
from adaptlab.tuning.multitask.model import SHARED_ENCODER, MultitaskModel, export_task, load_encoder
from adaptlab.tuning.multitask.sampling import Sampling
from adaptlab.tuning.multitask.tasks import EncodedTask, cls_task, ner_task, re_task
from adaptlab.tuning.strategies import StrategyBlock, prepare
from adaptlab.tuning.tracking import log_final_metrics

SHARED_ENCODER_STRATEGIES = ("layers", "dynamic")
REFUSED_STRATEGIES = {
    "peft": "a PEFT adapter wraps one task model, and this model is one encoder under several task heads; train "
            "the encoder in full, or freeze part of it with strategy.layers",
    "fewshot": "it trains one text classifier on its own (contrastive pairs, then a head); use it with 'cls train'",
    "distill": "a teacher is a model of one task; distil each task with its own trainer (ner train, cls train)",
}


class MultitaskTrainerSettings(EncoderTrainerSettings):
    """``training:`` of ``multitask train``: the encoder students' defaults; batches come from the task sampler."""

    group_by_length: bool = Field(False, description="not available: every batch is drawn from one task (sampling)")

    @field_validator("group_by_length")
    @classmethod
    def _batches_come_from_the_sampler(cls, value: bool) -> bool:
        if value:
            raise ValueError("multitask batches are drawn one task at a time by `sampling`, so they cannot be "
                             "grouped by length; set it false")
        return value


class MultitaskConfig(StrictModel):
    """Config of ``adaptlab multitask train`` (shipped example: ``adaptlab config show multitask``)."""

    name: str = Field("multitask", description="names the run directory runs/<time>-<name>")
    model: str = Field(DEFAULT_STUDENT, description="the shared encoder: HF name, local path, or 'minilm' (packaged)")
    tasks: dict[str, TaskConfig] = Field(
        default_factory=dict, validate_default=True,
        description="task name -> {type: ner|re|cls, train, dev, ...}; the name names tasks/<name>/ and its metrics")
    sampling: Sampling = Field("proportional", description="which task each batch comes from: proportional "
                                                           "(p ~ n), equal, or temperature (p ~ n^(1/T))")
    temperature: float = Field(2.0, gt=0, description="T of sampling: temperature (1 is proportional)")
    dev_fraction: float = Field(0.1, ge=0, lt=1, description="held out from a task's train when it has no dev file, "
                                "if that makes >= 20 records (cls: 10 per label); else none")
    max_length: int = Field(256, ge=8, description="subwords per sequence; longer ones are cut and counted")
    output: str | None = Field(None, description="run directory (must not exist); default runs/<time>-<name>")
    training: MultitaskTrainerSettings = Field(
        MultitaskTrainerSettings(), description="Trainer settings, in the HF Trainer's names, for the shared encoder "
        "and every head")
    strategy: StrategyBlock = Field(
        StrategyBlock(), description="tuning strategies acting on the shared encoder (layers, dynamic); peft, "
        "fewshot and distill are refused")

    _check_tasks = field_validator("tasks")(check_tasks)

    @model_validator(mode="after")
    def _temperature_needs_its_sampling(self) -> MultitaskConfig:
        if "temperature" in self.model_fields_set and self.sampling != "temperature":
            raise ValueError(f"temperature applies to sampling: temperature only, not {self.sampling}")
        return self


def check_strategies(block: StrategyBlock) -> None:
    """The shared encoder takes ``strategy.layers`` and ``strategy.dynamic``; any other is refused before step 0."""
    for name in block.model_dump():
        if name not in SHARED_ENCODER_STRATEGIES:
            reason = REFUSED_STRATEGIES.get(name, "it is made for one task's trainer")
            raise StrategyError(name, f"multitask train does not apply it: {reason} (it takes "
                                f"{', '.join(f'strategy.{n}' for n in SHARED_ENCODER_STRATEGIES)})")


def encode_tasks(inputs: list[TaskInput], model_path: str, max_length: int) -> tuple[Any, dict[str, Any],
                                                                                      list[EncodedTask]]:
    """The shared encoder, each task's tokenizer (RE's has the entity markers) and each task encoded."""
    from transformers import AutoTokenizer

    from adaptlab.ie.relations import load_marker_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ner = [task.name for task in inputs if task.type == "ner"]
    if ner and not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"model: {model_path} has no fast tokenizer, and the ner task {ner[0]!r} needs one to "
                         "align words with subwords")
    markers = load_marker_tokenizer(model_path) if any(task.type == "re" for task in inputs) else None
    encoder = load_encoder(model_path, len(markers) if markers is not None else None)
    tokenizers = {task.name: markers if task.type == "re" else tokenizer for task in inputs}
    limit = sequence_limit(encoder, tokenizer, max_length)
    encoded = []
    for task in inputs:
        if task.type == "ner":
            encoded.append(ner_task(task.name, task.labels, task.train, task.dev, tokenizer, limit))
        elif task.type == "re":
            encoded.append(re_task(task.name, task.labels, task.train, task.dev, markers, limit))
        else:
            encoded.append(cls_task(task.name, task.labels, task.train, task.dev, task.multi_label, tokenizer,
                                    limit))
    return encoder, tokenizers, encoded


def train(cfg: MultitaskConfig) -> tuple[RunDir, dict]:
    """Train the shared encoder and its heads, export and score every task; returns the run and its metrics."""
    check_strategies(cfg.strategy)
    model_path = resolve_student(cfg.model)
    inputs = [read_task(name, task, cfg.dev_fraction, cfg.training.seed) for name, task in cfg.tasks.items()]
    encoder, tokenizers, encoded = encode_tasks(inputs, model_path, cfg.max_length)
    seed_everything(cfg.training.seed)  # the heads' initial weights
    model, strategies = prepare(cfg.strategy, SHARED_ENCODER, MultitaskModel(encoder, [t.spec for t in encoded]))
    log = get_logger()
    with open_run(cfg.output, cfg.name, cfg) as run:
        log.info("training %s on %d tasks in %s: %s", cfg.model, len(inputs), run.path, "; ".join(
            f"{t.name} ({t.type}, {len(t.train)} train, {len(t.dev)} dev)" for t in inputs))
        notes = [note for task in inputs for note in task.notes]
        warnings = [warning for task in inputs for warning in task.warnings]
        warnings += [f"task {task.spec.name}: {task.truncated} sequences are longer than {cfg.max_length} subwords "
                     "and were cut" for task in encoded if task.truncated]
        for note in notes:
            log.info(note)
        for warning in warnings:
            log.warning(warning)
        fit = fit_multitask(model, encoded, tokenizers[inputs[0].name], cfg.training, cfg.sampling, cfg.temperature,
                            run.path, strategies)
        tasks: dict[str, dict] = {}
        for task, done in zip(inputs, encoded):
            directory = export_task(fit.model, task.name, tokenizers[task.name], run.path / "tasks" / task.name)
            tasks[task.name] = {"type": task.type, "train_examples": len(task.train), "dev_examples": len(task.dev),
                                "labels": task.labels, "truncated": done.truncated, "export": f"tasks/{task.name}"}
            predictor = task_predictor(task, directory)
            if task.dev:
                tasks[task.name].update(score_task(task, predictor, cfg.training.per_device_eval_batch_size))
            collapse = task_collapse_warning(task, predictor)
            if collapse:
                warnings.append(f"task {task.name}: {collapse}")
                log.warning(warnings[-1])
        scored = {name: {key: task[key] for key in ("dev_f1", "dev")} for name, task in tasks.items() if "dev" in task}
        log_final_metrics(cfg.training, run.path, scored, fit.history[-1]["step"] if fit.history else 0)
        metrics = {"model": cfg.model, "tasks": tasks, "sampling": fit.sampling,
                   "train_seconds": round(fit.seconds, 2), "best_mean_dev_f1": fit.best_mean_dev_f1,
                   "strategies": fit.strategies, "training_plan": fit.plan, "notes": notes + fit.notes,
                   "warnings": warnings, "history": fit.history}
        run.finish(metrics, f"Multi-task training: {cfg.name}",
                   ner.run_notes_sections(warnings, metrics["notes"]) + report_sections(metrics))
    return run, metrics


def task_predictor(task: TaskInput, directory: Any) -> Any:
    """adaptlab's predictor of the task's type over its export: ``NERPredictor``, ``REPredictor`` or a classifier."""
    if task.type == "ner":
        return NERPredictor(directory)
    return REPredictor(directory) if task.type == "re" else load_classifier(directory)


def task_collapse_warning(task: TaskInput, predictor: Any) -> str | None:
    """The task's own single-task check of its export on (up to 256 of) its training rows: a warning when the head
    has collapsed or never predicts a label it was shown, else None."""
    check = {"ner": ner.collapse_warning, "re": relations.collapse_warning, "cls": cls.collapse_warning}[task.type]
    return check(predictor, task.train)


def score_task(task: TaskInput, predictor: Any, batch_size: int) -> dict[str, Any]:
    """The exported task on its dev data, through adaptlab's predictor of that task (:func:`task_predictor`): ``dev``
    (the full report) and ``dev_f1`` (strict entity macro F1 for ner, macro F1 for re and cls)."""
    if task.type == "ner":
        report, _ = ner.evaluate_records(predictor, task.dev, batch_size)
        return {"dev_f1": report["strict"]["macro"]["f1"], "dev": report}
    if task.type == "re":
        predicted = predictor.predict([example.marked for example in task.dev], batch_size)
        report = text_classification_report([[example.label] for example in task.dev],
                                            [[label] for label, _ in predicted], predictor.labels, False)
    else:
        report, _ = cls.evaluate_examples(predictor, task.dev, batch_size)
    return {"dev_f1": report["macro_f1"], "dev": report}


def report_sections(metrics: dict) -> list[Section]:
    """Tasks and sampling first, the training curves, then each task's own sections (as its single-task report)."""
    tasks, sampling = metrics["tasks"], metrics["sampling"]
    rows = [[name, t["type"], t["train_examples"], t["dev_examples"], len(t["labels"]), t.get("dev_f1"), t["export"]]
            for name, t in tasks.items()]
    epoch = [[name, t["train_examples"], t["probability"], t["batches_per_epoch"], t["examples_per_epoch"]]
             for name, t in sampling["tasks"].items()]
    sections = [
        Section("Tasks", [
            Table(["task", "type", "train", "dev", "labels", "dev F1", "export (HF model directory)"], rows),
            Paragraph("dev F1: strict entity macro F1 for ner, macro F1 for re and cls, measured on each exported "
                      "model with adaptlab's predictor. Each export loads in transformers.pipeline()."),
        ]),
        Section("Sampling", [
            Paragraph(f"{sampling['mode']} sampling: one epoch is {sampling['batches_per_epoch']} batches of up to "
                      f"{sampling['batch_size']} examples, each from one task, in a seeded order that changes every "
                      "epoch."),
            Table(["task", "train examples", "probability", "batches per epoch", "examples per epoch"], epoch),
        ]),
    ]
    curves = {"epoch", "step", "loss", f"eval_{SELECTION_METRIC}", *(f"eval_{name}_macro_f1" for name in tasks)}
    overall = [{k: v for k, v in row.items() if k in curves} for row in metrics["history"]]
    if any(len(row) > 2 for row in overall):
        sections.append(Section("Training", [
            Image(plots.learning_curve(overall), alt="training loss and dev macro F1 per task",
                  caption="training loss (all tasks' batches), each task's dev macro F1 and their mean, which picks "
                          "the best epoch; metrics.json has each task's own training loss (history: loss_<task>)"),
        ]))
    for name, task in tasks.items():
        own = (ner_report_sections(task.get("dev") or {}) if task["type"] == "ner"
               else cls_report_sections(task.get("dev")))
        sections += [Section(f"{name} ({task['type']}): {section.heading}", section.blocks) for section in own]
    return sections
