"""NER recipes: train, evaluate and predict, each leaving a run directory or an output file.

Read top to bottom: validate config -> load data -> open the run -> call building blocks -> finish the run.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from pydantic import Field

from adaptlab.config import StrictModel
from adaptlab.data.io import load_records
from adaptlab.data.records import Record, write_records
from adaptlab.data.splits import MIN_DEV_RECORDS, dev_split
from adaptlab.errors import ConfigError
from adaptlab.ie.models import DEFAULT_STUDENT, resolve_student
from adaptlab.ie.ner import NERPredictor, check_labels, train_ner
from adaptlab.metrics.spans import ner_report
from adaptlab.report.html import Paragraph, Section, ner_report_sections
from adaptlab.runs import RunDir, get_logger, open_run, refuse_existing
from adaptlab.tuning.encoder_fit import TRAINING_CHECK_ROWS, EncoderTrainerSettings, unlearnt_labels_warning
from adaptlab.tuning.stages import continued_run
from adaptlab.tuning.strategies import StrategyBlock
from adaptlab.tuning.tracking import log_final_metrics


class NERTrainConfig(StrictModel):
    """Config of ``adaptlab ner train`` (shipped example: ``adaptlab config show ner``)."""

    name: str = Field("ner", description="names the run directory runs/<time>-<name> when output is not given")
    model: str = Field(DEFAULT_STUDENT, description="HF name, local path, or 'minilm' (packaged default)")
    train: str | None = Field(
        None, description="training records: canonical JSONL, CoNLL/BIO, Label Studio JSON, spaCy JSONL, ... (by "
        "suffix)")
    dev: str | None = Field(
        None, description="records for model choice and early stopping; without it dev_fraction of train is held out")
    dev_fraction: float = Field(
        0.1, ge=0, lt=1, description=f"held out from train when no dev file is given, if that makes at least "
        f"{MIN_DEV_RECORDS} records (else none: training runs training.min_steps steps on everything)")
    output: str | None = Field(None, description="run directory to write (must not exist); default runs/<time>-<name>")
    max_length: int = Field(256, ge=8, description="subwords per record; longer records are truncated and counted")
    training: EncoderTrainerSettings = Field(
        EncoderTrainerSettings(), description="Trainer settings, in the HF Trainer's names")
    strategy: StrategyBlock = Field(
        StrategyBlock(), description="tuning strategies, by name (peft, layers, dynamic, distill, ...)")


class NEREvalConfig(StrictModel):
    """Config of ``adaptlab ner evaluate``."""

    model: str | None = Field(None, description="run directory or model directory")
    data: str | None = Field(None, description="gold records (JSONL, CoNLL, ...)")
    output: str | None = Field(None, description="write a run directory with predictions and report")
    batch_size: int = Field(32, ge=1, description="texts per forward pass")
    constrained_decoding: bool = Field(True, description="IOB2-valid Viterbi decoding instead of argmax")


def evaluate_records(predictor: NERPredictor, gold: list[Record], batch_size: int = 32) -> tuple[dict, list]:
    check_labels(gold, predictor.types, "the evaluation data")
    predicted = predictor.predict([r.text for r in gold], batch_size=batch_size)
    return ner_report(gold, predicted, labels=predictor.types), predicted


def train(cfg: NERTrainConfig) -> tuple[RunDir, dict]:
    """Train a NER student and evaluate it on dev; returns the run directory and its metrics."""
    if not cfg.train:
        raise ConfigError("no training data: pass --train FILE or set 'train' in the config")
    model_path = resolve_student(cfg.model)
    train_records = load_records(cfg.train)
    dev_records = load_records(cfg.dev) if cfg.dev else None
    train_records, dev_records, notes, warnings = dev_split(train_records, dev_records, cfg.dev_fraction,
                                                            cfg.training.seed, MIN_DEV_RECORDS)
    with open_run(cfg.output, cfg.name, cfg, existing=continued_run(cfg.output, cfg)) as run:
        log = get_logger()
        log.info("training %s on %d records (dev %d) in %s", cfg.model, len(train_records), len(dev_records),
                 run.path)
        for note in notes:
            log.info(note)
        result = train_ner(train_records, dev_records or None, model_path, cfg.training, run.path,
                           cfg.max_length, cfg.strategy)
        predictor = NERPredictor(result.model_dir)
        warnings += [w for w in [collapse_warning(predictor, train_records)] if w]
        for warning in warnings:
            log.warning(warning)
        metrics: dict = {"train_records": len(train_records), "dev_records": len(dev_records),
                         "labels": result.labels, "train_seconds": round(result.train_seconds, 2),
                         "truncated_records": result.truncated_records, "strategies": result.strategies,
                         "training_plan": result.plan, "notes": notes + result.notes,
                         "warnings": warnings, "history": result.history}
        if dev_records:
            metrics["dev"], _ = evaluate_records(predictor, dev_records)
            log_final_metrics(cfg.training, run.path, {"dev": metrics["dev"]}, result.plan.get("trained_steps", 0))
        run.finish(metrics, f"NER training: {cfg.name}",
                   run_notes_sections(warnings, metrics["notes"])
                   + ner_report_sections(metrics.get("dev", {}), result.history))
    return run, metrics


def collapse_warning(predictor: NERPredictor, train_records: list[Record]) -> str | None:
    """A warning when the student does not find the entity types of (up to 256 of) its own training records."""
    sample = train_records[:TRAINING_CHECK_ROWS]
    predicted = predictor.predict([r.text for r in sample])
    return unlearnt_labels_warning([s.label for r in sample for s in r.spans],
                                   [s.label for r in predicted for s in r.spans], "entity", len(sample))


def run_notes_sections(warnings: list[str], notes: list[str]) -> list[Section]:
    """The report's "Warnings" and "Training notes" sections (what went wrong; what was decided from the data)."""
    return ([Section("Warnings", [Paragraph(w) for w in warnings])] if warnings else []) + (
        [Section("Training notes", [Paragraph(n) for n in notes])] if notes else [])


def evaluate(cfg: NEREvalConfig) -> tuple[dict, RunDir | None]:
    """Score a saved student on gold records; optionally write a run directory with the report."""
    if not cfg.model or not cfg.data:
        raise ConfigError("evaluation needs a model and data: pass --model DIR --data FILE")
    if cfg.output:
        refuse_existing(cfg.output, "run directory")
    predictor = NERPredictor(cfg.model, constrained=cfg.constrained_decoding)
    gold = load_records(cfg.data)
    with open_run(cfg.output, "ner-eval", cfg) if cfg.output else nullcontext() as run:
        get_logger().info("evaluating %s on %s (%d records)", cfg.model, cfg.data, len(gold))
        report, predicted = evaluate_records(predictor, gold, cfg.batch_size)
        if run:
            write_records(predicted, run.path / "predictions.jsonl")
            run.finish({"model": cfg.model, "data": cfg.data, **report},
                       f"NER evaluation of {cfg.model} on {cfg.data}", ner_report_sections(report, None))
    return report, run


def predict(model_dir: str, texts: list[str], output: str | None = None) -> list[Record]:
    """Tag raw texts; writes canonical JSONL when ``output`` is given (never over an existing file)."""
    if output:
        refuse_existing(output, "output file")
    records = NERPredictor(model_dir).predict(texts)
    if output:
        write_records(records, Path(output))
    return records
