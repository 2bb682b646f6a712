"""Text-classification recipes: train, evaluate and predict, each leaving a run directory or an output file.

Read top to bottom: validate config -> read examples -> fit a student (encoder fine-tuning, or
``strategy.fewshot``) -> score it on dev -> finish the run directory (metrics.json, report.html).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from adaptlab.config import StrictModel
from adaptlab.data.classification import Example, check_known_labels, label_set, read_examples
from adaptlab.data.splits import DEV_EXAMPLES_PER_LABEL, dev_split
from adaptlab.errors import ConfigError, DataError
from adaptlab.ie.models import DEFAULT_STUDENT, resolve_student
from adaptlab.ie.text_classifier import decide, load_classifier, train_classifier
from adaptlab.metrics.classification import text_classification_report
from adaptlab.recipes.ner import run_notes_sections
from adaptlab.report.html import cls_report_sections
from adaptlab.runs import RunDir, atomic_write_jsonl, get_logger, open_run, refuse_existing
from adaptlab.tuning.encoder_fit import TRAINING_CHECK_ROWS, EncoderTrainerSettings, FitResult, unlearnt_labels_warning
from adaptlab.tuning.stages import continued_run
from adaptlab.tuning.strategies import StrategyBlock
from adaptlab.tuning.tracking import log_final_metrics, log_history

DataFormat = Literal["auto", "jsonl", "csv", "tsv", "label-text"]


class ClsTrainerSettings(EncoderTrainerSettings):
    """``training:`` of ``adaptlab cls train``: the encoder defaults (1e-4 suits MiniLM-size models; BERT-base
    wants 2e-5..5e-5; at least ``min_steps`` optimizer steps), but one label per text is learnt in fewer epochs
    than NER's per-word tags, so at most 10, stopping after 3 evaluations without a better dev macro F1. With
    tens of examples no dev set is held out (``data.splits.hold_out_dev``); ``strategy.fewshot`` is the other
    way."""

    num_train_epochs: float = Field(
        10, gt=0, description="at most this many epochs; early stopping on dev macro F1 usually ends sooner")
    early_stopping_patience: int | None = Field(3, ge=1, description="evaluations without a better dev macro F1")


class ClsTrainConfig(StrictModel):
    """Config of ``adaptlab cls train`` (shipped example: ``adaptlab config show cls``)."""

    name: str = Field("cls", description="names the run directory runs/<time>-<name> when output is not given")
    model: str = Field(DEFAULT_STUDENT, description="HF name, local path, or 'minilm' (packaged default)")
    train: str | None = Field(
        None, description="labelled texts: JSONL {text, label}, CSV/TSV with a header, or LABEL TEXT lines (see "
        "format)")
    dev: str | None = Field(
        None, description="labelled texts for model choice and early stopping; without it dev_fraction of train is "
        "held out")
    dev_fraction: float = Field(
        0.1, ge=0, lt=1, description=f"held out from train (per label) when no dev file, if that makes at least "
        f"{DEV_EXAMPLES_PER_LABEL} per label (else none: training runs training.min_steps steps on everything)")
    output: str | None = Field(None, description="run directory to write (must not exist); default runs/<time>-<name>")
    format: DataFormat = Field("auto", description="auto: by suffix (.jsonl/.json, .csv, .tsv, else LABEL TEXT)")
    text_column: str = Field("text", description="JSONL key or CSV/TSV column of the text")
    label_column: str = Field(
        "label", description="JSONL key or CSV/TSV column of the label (a list of labels with multi_label)")
    multi_label: bool = Field(False, description="several labels per text: sigmoid per label, threshold 0.5")
    max_length: int = Field(256, ge=8, description="subwords read per text; longer texts are cut and counted")
    training: ClsTrainerSettings = Field(
        ClsTrainerSettings(), description="Trainer settings, in the HF Trainer's names")
    strategy: StrategyBlock = Field(
        StrategyBlock(), description="tuning strategies, by name (peft, layers, dynamic, fewshot, distill, ...)")


class ClsEvalConfig(StrictModel):
    """Config of ``adaptlab cls evaluate``."""

    model: str | None = Field(None, description="run directory or model directory")
    data: str | None = Field(None, description="labelled examples (JSONL, CSV, TSV, LABEL TEXT lines)")
    output: str | None = Field(None, description="write a run directory with predictions and report")
    batch_size: int = Field(64, ge=1, description="texts per forward pass")
    format: DataFormat = Field("auto", description="auto: by suffix (.jsonl/.json, .csv, .tsv, else LABEL TEXT)")
    text_column: str = Field("text", description="JSONL key or CSV/TSV column of the text")
    label_column: str = Field("label", description="JSONL key or CSV/TSV column of the label")


def prediction_rows(texts: list[str], probabilities, labels: list[str], multi_label: bool) -> list[dict[str, Any]]:
    """``{"text", "label" (or "labels"), "scores": {label: p}}`` per text."""
    rows = []
    for text, row, chosen in zip(texts, probabilities, decide(probabilities, labels, multi_label)):
        decision = {"labels": chosen} if multi_label else {"label": chosen[0]}
        rows.append({"text": text, **decision, "scores": {label: round(float(p), 4) for label, p in zip(labels, row)}})
    return rows


def evaluate_examples(classifier, examples: list[Example], batch_size: int = 64) -> tuple[dict, list[dict]]:
    """The report of :func:`text_classification_report` and the prediction rows (with ``gold``)."""
    check_known_labels(examples, classifier.labels, "the evaluation data")
    texts = [example.text for example in examples]
    rows = prediction_rows(texts, classifier.predict_proba(texts, batch_size), classifier.labels,
                           classifier.multi_label)
    predicted = [row["labels"] if classifier.multi_label else [row["label"]] for row in rows]
    report = text_classification_report([e.labels for e in examples], predicted, classifier.labels,
                                        classifier.multi_label)
    for row, example in zip(rows, examples):
        row["gold"] = example.labels if classifier.multi_label else example.labels[0]
    return report, rows


def fit_student(cfg: ClsTrainConfig, train_set: list[Example], dev_set: list[Example], labels: list[str],
                model_path: str, output_dir: Path) -> tuple[FitResult, int | None]:
    """Few-shot training when ``strategy.fewshot`` is set (contrastive sentence-transformers body + head), else
    fine-tuning of a sequence classifier; returns the fit and the count of truncated examples (if known)."""
    fewshot = getattr(cfg.strategy, "fewshot", None)
    if fewshot is not None:
        from adaptlab.tuning.families import ENCODER_SEQUENCE
        from adaptlab.tuning.strategies.fewshot import Fewshot, train_fewshot

        others = dict.fromkeys(name for name in cfg.strategy.model_dump() if name != "fewshot")
        Fewshot(fewshot, ENCODER_SEQUENCE).check(None, others)  # it trains alone: others would silently not apply
        fewshot = fewshot.model_copy(update={"progress": fewshot.progress and cfg.training.progress})
        result = train_fewshot([e.text for e in train_set], [e.labels for e in train_set], labels, cfg.multi_label,
                               model_path, fewshot, cfg.training.seed, output_dir)
        log_history(cfg.training, output_dir, result.history, "step")  # its own loop: no Trainer to report it
        return result, None
    return train_classifier(train_set, dev_set or None, labels, cfg.multi_label, model_path, cfg.training,
                            cfg.strategy, cfg.max_length, output_dir)


def train(cfg: ClsTrainConfig) -> tuple[RunDir, dict]:
    """Train a text classifier and evaluate it on dev; returns the run directory and its metrics."""
    if not cfg.train:
        raise ConfigError("no training data: pass --train FILE or set 'train' in the config")
    model_path = resolve_student(cfg.model)
    columns = {"format": cfg.format, "text_column": cfg.text_column, "label_column": cfg.label_column,
               "multi_label": cfg.multi_label}
    train_set = read_examples(cfg.train, **columns)
    labels = label_set(train_set)
    if len(labels) < (1 if cfg.multi_label else 2):
        raise DataError(f"has the labels {labels}; a single-label classifier needs at least two "
                        "(set multi_label: true for one yes/no label)", cfg.train)
    dev_set = None
    if cfg.dev:
        dev_set = read_examples(cfg.dev, **columns)
        check_known_labels(dev_set, labels, f"the dev data {cfg.dev}")
    train_set, dev_set, notes, warnings = dev_split(train_set, dev_set, cfg.dev_fraction, cfg.training.seed,
                                                    DEV_EXAMPLES_PER_LABEL * len(labels), "examples",
                                                    stratum=lambda e: tuple(e.labels))

    with open_run(cfg.output, cfg.name, cfg, existing=continued_run(cfg.output, cfg)) as run:
        log = get_logger()
        log.info("training %s on %d examples (dev %d, labels %s) in %s", cfg.model, len(train_set),
                 len(dev_set), labels, run.path)
        for note in notes:
            log.info(note)
        result, truncated = fit_student(cfg, train_set, dev_set, labels, model_path, run.path)
        classifier = load_classifier(result.model_dir)
        warnings += [w for w in [collapse_warning(classifier, train_set)] if w]
        for warning in warnings:
            log.warning(warning)
        metrics: dict = {"train_examples": len(train_set), "dev_examples": len(dev_set), "labels": labels,
                         "multi_label": cfg.multi_label, "train_seconds": round(result.seconds, 2),
                         "truncated_examples": truncated, "strategies": result.strategies,
                         "training_plan": result.plan, "notes": notes + result.notes, "warnings": warnings,
                         "history": result.history}
        if dev_set:
            metrics["dev"], _ = evaluate_examples(classifier, dev_set, cfg.training.per_device_eval_batch_size)
            last_step = result.plan.get("trained_steps", result.history[-1]["step"] if result.history else 0)
            log_final_metrics(cfg.training, run.path, {"dev": metrics["dev"]}, last_step)
        run.finish(metrics, f"Text classification training: {cfg.name}",
                   run_notes_sections(warnings, metrics["notes"])
                   + cls_report_sections(metrics.get("dev"), result.history))
    return run, metrics


def collapse_warning(classifier, train_set: list[Example]) -> str | None:
    """A warning when the classifier does not give (up to 256 of) its own training examples their labels."""
    sample = train_set[:TRAINING_CHECK_ROWS]
    _, rows = evaluate_examples(classifier, sample)
    predicted = [label for row in rows for label in (row["labels"] if classifier.multi_label else [row["label"]])]
    return unlearnt_labels_warning([label for e in sample for label in e.labels], predicted, "label", len(sample))


def evaluate(cfg: ClsEvalConfig) -> tuple[dict, RunDir | None]:
    """Score a saved classifier on labelled examples; optionally write a run directory with the report."""
    if not cfg.model or not cfg.data:
        raise ConfigError("evaluation needs a model and data: pass --model DIR --data FILE")
    if cfg.output:
        refuse_existing(cfg.output, "run directory")
    classifier = load_classifier(cfg.model)
    examples = read_examples(cfg.data, cfg.format, cfg.text_column, cfg.label_column, classifier.multi_label)
    report, rows = evaluate_examples(classifier, examples, cfg.batch_size)
    if not cfg.output:
        return report, None
    with open_run(cfg.output, "cls-eval", cfg) as run:
        write_jsonl(rows, run.path / "predictions.jsonl")
        run.finish({"model": cfg.model, "data": cfg.data, **report},
                   f"Text classification: {cfg.model} on {cfg.data}", cls_report_sections(report, None))
    return report, run


def predict(model_dir: str, texts: list[str], output: str | None = None) -> list[dict]:
    """Classify raw texts; writes JSONL when ``output`` is given (never over an existing file)."""
    if output:
        refuse_existing(output, "output file")
    classifier = load_classifier(model_dir)
    rows = prediction_rows(texts, classifier.predict_proba(texts), classifier.labels, classifier.multi_label)
    if output:
        write_jsonl(rows, Path(output))
    return rows


def write_jsonl(rows: list[dict], path: Path) -> None:
    atomic_write_jsonl(path, rows)
