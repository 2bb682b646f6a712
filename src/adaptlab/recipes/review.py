"""Human verification of teacher data: Label Studio export/import and the fact-check sheet.

``export`` turns a generation run into a Label Studio project (teacher spans as predictions);
``import_`` reads the reviewed export back into a run directory with ``records.jsonl`` (verified
flag, reviewers' edits, rejected items removed), ``removed.jsonl``, ``metrics.json`` (counts and
teacher-vs-reviewer span F1 per type), ``report.html``, ``config.yaml`` (what was imported, from
where) and ``log.txt``. The schema comes from the generation
config (a YAML file with a ``schema:`` section, or a run directory holding ``config.yaml``).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from adaptlab.config import StrictModel
from adaptlab.data.records import read_records, write_records
from adaptlab.report.html import KeyValues, Paragraph, Section, Table
from adaptlab.runs import RunDir, atomic_write_text, get_logger, open_run
from adaptlab.synth import factcheck, review
from adaptlab.synth.schema import load_schema


def generated_records(source: str | Path):
    """Records of a generation run directory (its records.jsonl) or of a records file."""
    path = Path(source)
    return read_records(path / "records.jsonl" if path.is_dir() else path)


def export(records_source: str, schema_source: str, out_dir: str, model_version: str | None = None) -> dict:
    return review.export_review(generated_records(records_source), out_dir, load_schema(schema_source),
                                model_version)


class ReviewImportConfig(StrictModel):
    """What ``synth review import`` read: its run's ``config.yaml``."""

    export: str = Field(description="Label Studio JSON export of the review project")
    schema_from: str = Field(description="generation config or run directory whose schema the review used")
    verified_only: bool = Field(False, description="drop tasks nobody reviewed")
    output: str | None = None


def import_(export_path: str, schema_source: str, output: str | None = None,
            verified_only: bool = False) -> tuple[RunDir, review.ReviewResult]:
    cfg = ReviewImportConfig(export=export_path, schema_from=schema_source, verified_only=verified_only,
                             output=output)
    result = review.import_review(export_path, load_schema(schema_source), verified_only)
    with open_run(output, "review", cfg) as run:
        write_records(result.records, run.path / "records.jsonl")
        atomic_write_text(run.path / "removed.jsonl", "".join(
            json.dumps({"id": item_id, "reason": reason}, ensure_ascii=False) + "\n"
            for item_id, reason in result.removed))
        get_logger().info("imported %d tasks from %s: %s", result.counts["tasks"], export_path, result.counts)
        run.finish({"source": export_path, "counts": result.counts, "agreement": result.agreement},
                   f"Review import: {export_path}", report_sections(result))
    return run, result


def report_sections(result: review.ReviewResult) -> list[Section]:
    rows = review.agreement_rows(result.agreement) if result.agreement.get("tasks") else []
    columns = ["kind", "type", "support", "strict_precision", "strict_recall", "strict_f1", "overlap_f1"]
    return [
        Section("Review", [KeyValues(result.counts)]),
        Section("Teacher vs reviewers", [
            Paragraph(f"Over {result.agreement.get('tasks', 0)} verified tasks, the reviewers' annotation is "
                      "the reference and the teacher's is scored against it."),
            Table(columns, [[row[c] if row[c] is not None else "" for c in columns] for row in rows]),
        ]),
    ]


def factcheck_export(records_source: str, schema_source: str, out_csv: str, per_aspect: int, seed: int) -> dict:
    return factcheck.export_factcheck(generated_records(records_source), out_csv, load_schema(schema_source),
                                      per_aspect, seed)


def factcheck_score(sheet: str) -> dict:
    return factcheck.score_factcheck(sheet)
