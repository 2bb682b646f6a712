"""``adaptlab distill demo``: the whole teacher-to-student recipe, offline.

1. generate: the replay teacher answers from the cassette shipped in the package (about 30
   species in six classes), through the real pipeline (subjects, sentences, alignment, validation);
2. review: import the shipped Label Studio export in which reviewers fixed, rejected and skipped
   some of the teacher's sentences;
3. train the default MiniLM NER student on the reviewed records;
4. evaluate it on the held-out demo test set (species it never saw) and write one report with
   the accounting, the teacher-vs-reviewer agreement and the student's scores.

Everything lands in one run directory with ``synth/``, ``review/`` and ``student/`` inside (each with its own
``config.yaml``; the top one records the shipped inputs and the student's training).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from adaptlab.config import StrictModel
from adaptlab.data.records import read_records
from adaptlab.errors import DataError
from adaptlab.recipes import ner, review, synth
from adaptlab.recipes.demo import demo_student_training, score_on_demo_test
from adaptlab.report.html import KeyValues, Section, Table, ner_report_sections
from adaptlab.runs import open_run
from adaptlab.synth.config import SynthConfig
from adaptlab.synth.schema import Schema, preset_schema
from adaptlab.teacher.config import TeacherConfig
from adaptlab.tuning.encoder_fit import EncoderTrainerSettings

DEMO_GROUPS = ["amphibians", "arthropods", "birds", "fishes", "reptiles", "mammals"]


class DistillDemoConfig(StrictModel):
    """The top ``config.yaml`` of the demo: what it replays and how the student trains."""

    output: str | None = None
    cassette: str
    review_export: str
    training: EncoderTrainerSettings


def demo_resources() -> Path:
    return Path(str(files("adaptlab") / "resources" / "distill"))


def demo_schema() -> Schema:
    """The demo's annotation schema: the ``biospecies`` preset (resources/schemas/biospecies.yaml)."""
    return preset_schema("biospecies")


def demo_synth_config(cassette: str | Path, output: str | None) -> SynthConfig:
    """The biospecies generation config with the replay teacher (schema: :func:`demo_schema`)."""
    schema = demo_schema()
    return SynthConfig.model_validate({
        "name": "distill-demo-synth", "schema": schema.model_dump(), "output": output, "progress": False,
        "teacher": TeacherConfig(backend="replay", model="demo-teacher", cassette=str(cassette)).model_dump(),
        "subjects": {"groups": DEMO_GROUPS, "per_group": 5},
        "sentences": {"per_request": 5},
    })


def run(output: str | None = None, epochs: float = 20,
        say: Callable[[str], None] = lambda message: None) -> tuple[Path, dict]:
    """Run the demo; ``say`` receives one short line as each of the four stages starts (the CLI prints them)."""
    resources = demo_resources()
    cfg = DistillDemoConfig(output=output, cassette=str(resources / "cassette.jsonl"),
                            review_export=str(resources / "reviewed.json"), training=demo_student_training(epochs))
    with open_run(cfg.output, "distill-demo", cfg) as root:
        say("[1/4] teacher: replaying the shipped answers through generation and validation")
        synth_run, generation = synth.generate(demo_synth_config(cfg.cassette, str(root.path / "synth")))

        say("[2/4] review: importing the reviewers' Label Studio export")
        review_run, reviewed = review.import_(cfg.review_export, str(synth_run.path), str(root.path / "review"))
        _check_same_sentences(read_records(synth_run.path / "records.jsonl"), reviewed.records)

        say(f"[3/4] student: training MiniLM on the {len(reviewed.records)} reviewed records")
        student_run, student = ner.train(ner.NERTrainConfig(
            name="distill-demo-student", train=str(review_run.path / "records.jsonl"),
            output=str(root.path / "student"), training=cfg.training))
        say("[4/4] test: scoring the student on the held-out demo test set")
        student = score_on_demo_test(student_run, student,
                                     "NER training: distill-demo-student, scored on the demo test set")

        metrics = {
            "generation": {stage: generation[stage] for stage in synth.STAGES},
            "review": {"counts": reviewed.counts, "agreement": reviewed.agreement},
            "student": {key: student[key] for key in ("train_records", "dev_records", "test", "test_triples")},
        }
        root.finish(metrics, "adaptlab distill demo: teacher -> review -> student",
                    _sections(metrics) + ner_report_sections(student["test"], student["history"]))
    return root.path, metrics


def _check_same_sentences(generated, reviewed) -> None:
    """The shipped review must belong to this generation; a changed prompt or cassette breaks that."""
    known = {r.meta.get("id") for r in generated}
    foreign = [r.meta.get("id") for r in reviewed if r.meta.get("id") not in known]
    if foreign:
        raise DataError(f"{len(foreign)} reviewed records (e.g. {foreign[0]!r}) are not in this generation run; "
                        "rebuild the demo resources with tools/build_distill_demo.py")


def _sections(metrics: dict) -> list[Section]:
    generation, review_counts = metrics["generation"], metrics["review"]["counts"]
    agreement = metrics["review"]["agreement"]["spans"]["strict"]
    return [
        Section("Generation (replay teacher)", [Table(
            ["stage", "proposed", "accepted", "rejected", "reasons"],
            [[stage, row["proposed"], row["accepted"], row["rejected"],
              ", ".join(f"{k}: {v}" for k, v in sorted(row["reasons"].items()))] for stage, row in generation.items()],
        )]),
        Section("Review", [KeyValues(review_counts), Table(
            ["type", "support", "teacher precision", "teacher recall", "teacher F1"],
            [[label, row["support"], row["precision"], row["recall"], row["f1"]]
             for label, row in agreement["per_type"].items()],
            caption="teacher vs reviewers, strict spans",
        )]),
        Section("Student on the demo test set", [KeyValues({
            "trained on (reviewed records)": metrics["student"]["train_records"],
            "strict micro F1": metrics["student"]["test"]["strict"]["micro"]["f1"],
            "strict macro F1": metrics["student"]["test"]["strict"]["macro"]["f1"],
            "token macro F1": metrics["student"]["test"]["token"]["macro"]["f1"],
            "triple micro F1 (NER + type rules)": metrics["student"]["test_triples"]["micro"]["f1"],
        })]),
    ]
