"""RE recipes (train, evaluate, predict) and the text-to-triples recipe."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from adaptlab.config import StrictModel
from adaptlab.data.formats.markers import record_from_marked
from adaptlab.data.io import load_records
from adaptlab.data.records import Record, write_records
from adaptlab.data.splits import MIN_DEV_RECORDS, dev_split
from adaptlab.errors import ConfigError, DataError
from adaptlab.ie.extract import extract
from adaptlab.ie.models import DEFAULT_STUDENT, resolve_student
from adaptlab.ie.ner import NERPredictor
from adaptlab.ie.pairs import derive_relations, triples_by_document
from adaptlab.ie.relations import RelationExample, REPredictor, relation_examples, train_re
from adaptlab.metrics.classification import classification_prf, triple_prf
from adaptlab.recipes.ner import run_notes_sections
from adaptlab.report.html import Section, Table
from adaptlab.runs import RunDir, atomic_write_jsonl, get_logger, open_run, refuse_existing
from adaptlab.synth.schema import Schema, resolve_schema
from adaptlab.tuning.encoder_fit import TRAINING_CHECK_ROWS, EncoderTrainerSettings, unlearnt_labels_warning
from adaptlab.tuning.stages import continued_run
from adaptlab.tuning.strategies import StrategyBlock
from adaptlab.tuning.tracking import log_final_metrics


def _schema_named(value: Any) -> Any:
    """``derive_relations`` names the schema it derives by; ``false`` is None and the old ``true`` is refused with
    the new form (a default schema would be one dataset's rules in every config)."""
    if value is True:
        raise ValueError("names the schema to derive by: derive_relations=biospecies (a preset) or "
                         "derive_relations=FILE (a YAML file with a schema: section)")
    return None if value is False else value


DeriveRelations = Annotated[str | None, BeforeValidator(_schema_named)]
DERIVE_HELP = ("records without relations get them from entity types by this schema: a preset name (biospecies) or "
               "a YAML file with a schema: section (a synth config); its subject heads each relation, and the "
               "argument's type gives the relation (HABITAT -> live_in)")


class RETrainerSettings(EncoderTrainerSettings):
    """``training:`` of ``re train``: the encoder defaults with the relation classifier's own rate, epochs and
    patience. A subclass, so that ``training.seed=3`` alone keeps them (a default *instance* would not)."""

    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate of the relation classifier")
    num_train_epochs: float = Field(
        5, gt=0, description="at most this many epochs; early stopping on dev usually ends sooner")
    early_stopping_patience: int | None = Field(2, ge=1, description="evaluations without a better dev metric")


class RETrainConfig(StrictModel):
    """Config of ``adaptlab re train`` (shipped example: ``adaptlab config show re``)."""

    name: str = Field("re", description="names the run directory runs/<time>-<name> when output is not given")
    model: str = Field(DEFAULT_STUDENT, description="HF name, local path, or 'minilm' (packaged default)")
    train: str | None = Field(
        None, description="records with relations (JSONL, ...) or an entity-marker CSV/TSV ([E1]head[/E1] ... "
        "[E2]tail[/E2])")
    dev: str | None = Field(None, description="dev data in the same form; without it dev_fraction of train is held out")
    dev_fraction: float = Field(
        0.1, ge=0, lt=1, description=f"held out from train when no dev file is given, if that makes at least "
        f"{MIN_DEV_RECORDS} records (else none: training runs training.min_steps steps on everything)")
    negatives: bool = Field(True, description="train on unrelated pairs as no_relation: a span of a type that "
                            "heads a relation with a span of another type")
    derive_relations: DeriveRelations = Field(None, description=DERIVE_HELP)
    output: str | None = Field(None, description="run directory to write (must not exist); default runs/<time>-<name>")
    max_length: int = Field(256, ge=8, description="subwords per marked sentence; longer ones are truncated")
    training: RETrainerSettings = Field(RETrainerSettings(), description="Trainer settings, in the HF Trainer's names")
    strategy: StrategyBlock = Field(
        StrategyBlock(), description="tuning strategies, by name (peft, layers, dynamic, distill, ...)")


class REEvalConfig(StrictModel):
    """Config of ``adaptlab re evaluate``."""

    model: str | None = Field(None, description="run directory or model directory")
    data: str | None = Field(None, description="records with relations, or marker CSV")
    negatives: bool = Field(True, description="also score unrelated candidate pairs as no_relation")
    output: str | None = Field(None, description="write a run directory with predictions and report")


def relation_records(path: str, derive_by: Schema | None = None) -> list[Record]:
    """The records of ``path``, relations derived from entity types by ``derive_by`` where a record has none; a
    DataError if none has any."""
    records = load_records(path)
    if derive_by is not None:
        records = [r if r.relations else derive_relations(r, derive_by) for r in records]
    if not any(r.relations for r in records):
        raise DataError("holds no relations; RE needs records with relations or marker rows with labels "
                        "(or derive_relations=SCHEMA to pair arguments with subjects by entity type)", path)
    return records


def _scores(predictor: REPredictor, examples: list[RelationExample]) -> tuple[dict, list[dict]]:
    """Classification scores of ``predictor`` on ``examples``, and one prediction row per example."""
    unknown = sorted({e.label for e in examples} - set(predictor.labels))
    if unknown:
        raise DataError(f"the evaluation data has relation labels {unknown} that the model does not know (it knows "
                        f"{', '.join(predictor.labels)}); its F1 on them would be 0. Evaluate a model trained on "
                        "these labels, or map the labels")
    predicted = predictor.predict([e.marked for e in examples])
    rows = [{"text": e.marked, "gold": e.label, "label": label, "score": round(score, 4)}
            for e, (label, score) in zip(examples, predicted)]
    return classification_prf([e.label for e in examples], [label for label, _ in predicted]), rows


def train(cfg: RETrainConfig) -> tuple[RunDir, dict]:
    """Train a relation classifier and evaluate it on dev; returns the run directory and its metrics."""
    if not cfg.train:
        raise ConfigError("no training data: pass --train FILE or set 'train' in the config")
    derive_by = resolve_schema(cfg.derive_relations) if cfg.derive_relations else None
    model_path = resolve_student(cfg.model)
    train_records = relation_records(cfg.train, derive_by)
    dev_records = relation_records(cfg.dev, derive_by) if cfg.dev else None
    train_records, dev_records, notes, warnings = dev_split(train_records, dev_records, cfg.dev_fraction,
                                                            cfg.training.seed, MIN_DEV_RECORDS)
    train_examples = relation_examples(train_records, cfg.negatives)
    dev_examples = relation_examples(dev_records, cfg.negatives) if dev_records else None
    with open_run(cfg.output, cfg.name, cfg, existing=continued_run(cfg.output, cfg)) as run:
        log = get_logger()
        log.info("training %s on %d relation examples (dev %d) in %s", cfg.model, len(train_examples),
                 len(dev_examples or []), run.path)
        for note in notes:
            log.info(note)
        result = train_re(train_examples, dev_examples, model_path, cfg.training, run.path, cfg.max_length,
                          cfg.strategy)
        predictor = REPredictor(result.model_dir)
        warnings += [w for w in [collapse_warning(predictor, train_examples)] if w]
        for warning in warnings:
            log.warning(warning)
        metrics: dict = {"train_examples": len(train_examples), "dev_examples": len(dev_examples or []),
                         "labels": result.labels, "train_seconds": round(result.train_seconds, 2),
                         "strategies": result.strategies, "training_plan": result.plan,
                         "notes": notes + result.notes, "warnings": warnings, "history": result.history}
        if dev_examples:
            metrics["dev"], _ = _scores(predictor, dev_examples)
            log_final_metrics(cfg.training, run.path, {"dev": metrics["dev"]}, result.plan.get("trained_steps", 0))
        run.finish(metrics, f"RE training: {cfg.name}", run_notes_sections(warnings, metrics["notes"])
                   + _classification_sections(metrics.get("dev"), "dev"))
    return run, metrics


def collapse_warning(predictor: REPredictor, train_examples: list[RelationExample]) -> str | None:
    """A warning when the classifier does not give (up to 256 of) its own training pairs their relations."""
    sample = train_examples[:TRAINING_CHECK_ROWS]
    predicted = [label for label, _ in predictor.predict([e.marked for e in sample])]
    return unlearnt_labels_warning([e.label for e in sample], predicted, "relation", len(sample))


def _classification_sections(scores: dict | None, data: str) -> list[Section]:
    if not scores:
        return []
    rows = [[label, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", str(v["support"])]
            for label, v in scores["per_class"].items()]
    rows.append(["weighted", "", "", f"{scores['weighted']['f1']:.4f}", ""])
    return [Section(f"Relation classification on {data}", [Table(["label", "P", "R", "F1", "support"], rows)])]


def evaluate(cfg: REEvalConfig) -> tuple[dict, RunDir | None]:
    """Score a relation classifier on gold relations; optionally write a run directory with the report."""
    if not cfg.model or not cfg.data:
        raise ConfigError("evaluation needs a model and data: pass --model DIR --data FILE")
    if cfg.output:
        refuse_existing(cfg.output, "run directory")
    predictor = REPredictor(cfg.model)
    examples = relation_examples(relation_records(cfg.data), cfg.negatives)
    with open_run(cfg.output, "re-eval", cfg) if cfg.output else nullcontext() as run:
        get_logger().info("evaluating %s on %s (%d relation examples)", cfg.model, cfg.data, len(examples))
        scores, predictions = _scores(predictor, examples)
        if run:
            atomic_write_jsonl(run.path / "predictions.jsonl",
                              predictions)
            run.finish({"model": cfg.model, "data": cfg.data, "examples": len(examples), **scores},
                       f"RE evaluation of {cfg.model} on {cfg.data}", _classification_sections(scores, cfg.data))
    return scores, run


def predict(model_dir: str, marked: list[str]) -> list[dict]:
    for line in marked:
        record_from_marked(line, None)  # validates the markers, with a clear error
    return [{"text": m, "label": label, "score": round(score, 4)}
            for m, (label, score) in zip(marked, REPredictor(model_dir).predict(marked))]


def extract_triples(ner_dir: str, re_dir: str | None, texts: list[str], output: str | None,
                    schema: Schema) -> list[Record]:
    if output:
        refuse_existing(output, "output file")
    records = extract(texts, NERPredictor(ner_dir), REPredictor(re_dir) if re_dir else None, schema)
    if output:
        write_records(records, output)
    return records


def score_triples(predicted: list[Record], gold: list[Record], schema: Schema) -> dict:
    """Triple F1 against gold relations (derived from entity types by ``schema`` where the gold has none)."""
    gold = [g if g.relations else derive_relations(g, schema) for g in gold]
    return triple_prf(triples_by_document(gold), triples_by_document(predicted))
