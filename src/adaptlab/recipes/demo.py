"""``make demo``: the main job on its embedded, offline default.

Trains the packaged MiniLM student on the shipped example set (resources/demo), evaluates it on
the held-out demo test set (entity F1 and triple F1 through the type rules), and writes a run
directory with ``report.html``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from adaptlab.data.records import read_records
from adaptlab.ie.ner import NERPredictor
from adaptlab.ie.pairs import derive_relations
from adaptlab.recipes import ner
from adaptlab.recipes.relations import score_triples
from adaptlab.report.html import ner_report_sections
from adaptlab.runs import RunDir
from adaptlab.synth.schema import preset_schema
from adaptlab.tuning.encoder_fit import EncoderTrainerSettings


def demo_data() -> tuple[Path, Path]:
    root = files("adaptlab") / "resources" / "demo"
    return Path(str(root / "train.jsonl")), Path(str(root / "test.jsonl"))


def demo_student_training(epochs: float) -> EncoderTrainerSettings:
    """The demo students' training (``adaptlab demo`` and ``adaptlab distill demo``): MiniLM wants 2e-4."""
    return EncoderTrainerSettings(num_train_epochs=epochs, learning_rate=2e-4, per_device_train_batch_size=16,
                                  early_stopping_patience=4)


def score_on_demo_test(run_dir: RunDir, metrics: dict, title: str) -> dict:
    """Score the student of a finished NER run on the held-out demo test set (entity F1, and triple F1 through the
    biospecies type rules), then finish the run again with those scores beside its own, so that its
    ``metrics.json``, report and model card carry them. Returns the run's metrics with them."""
    gold = read_records(demo_data()[1])
    report, predicted = ner.evaluate_records(NERPredictor(run_dir.model), gold)
    schema = preset_schema("biospecies")  # the shipped demo data's schema: triples by its type rules
    metrics = {**metrics, "test": report,
               "test_triples": score_triples([derive_relations(p, schema) for p in predicted], gold, schema)}
    run_dir.finish(metrics, title, ner.run_notes_sections(metrics["warnings"], metrics["notes"])
                   + ner_report_sections(report, metrics["history"]))
    return metrics


def run(output: str | None = None, epochs: float = 12) -> tuple[Path, dict]:
    train_path, _ = demo_data()
    cfg = ner.NERTrainConfig(name="demo", train=str(train_path), output=output,
                             training=demo_student_training(epochs))
    run_dir, metrics = ner.train(cfg)
    metrics = score_on_demo_test(run_dir, metrics, "adaptlab demo: NER student on the shipped example set")
    return run_dir.path, metrics
