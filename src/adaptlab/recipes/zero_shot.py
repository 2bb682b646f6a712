"""``adaptlab teacher zero-shot-ner``: tag gold data with a teacher LLM, score it like a student.

Read top to bottom: load gold -> build prompts -> ask the teacher (cached, rate limited) -> map
strings to spans -> score -> optionally score a student on the same texts -> run directory with
``predictions.jsonl``, ``metrics.json`` and ``report.html`` (teacher and student side by side).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from adaptlab.config import StrictModel
from adaptlab.data.io import load_records
from adaptlab.data.records import Record, write_records
from adaptlab.errors import ConfigError
from adaptlab.ie import zero_shot as zs
from adaptlab.report.html import KeyValues, Paragraph, Section, Table
from adaptlab.runs import RunDir, get_logger, open_run
from adaptlab.synth.generate import sampling_of
from adaptlab.synth.schema import EntityType
from adaptlab.teacher.config import SamplingConfig, TeacherConfig
from adaptlab.teacher.prompts import load_prompt
from adaptlab.teacher.registry import build_teacher, open_cache, prepare_schemas
from adaptlab.teacher.runner import TeacherRunner, require_an_answer

MODES = ("strict", "overlap", "string")


class ZeroShotConfig(StrictModel):
    name: str = Field(
        "zero-shot-ner", description="names the run directory runs/<time>-<name> when output is not given")
    teacher: TeacherConfig = Field(
        TeacherConfig(sampling=SamplingConfig(temperature=0.0, max_tokens=512)), description="the teacher LLM; here "
        "greedy (temperature 0) with 512 answer tokens by default")
    data: str | None = Field(None, description="gold records to tag and score (JSONL, CoNLL, ...)")
    prompt: Literal["universalner", "json_spans"] = Field(
        "universalner", description="universalner: one question per entity type (UniversalNER); json_spans: one "
        "request per text for every entity as JSON")
    entities: list[EntityType] = Field([], description="types with descriptions; default: the labels in data")
    queries: dict[str, str] = Field({}, description="label -> phrase in 'What describes ... in the text?'")
    student: str | None = Field(None, description="NER run or model directory to score on the same texts")
    limit: int | None = Field(None, ge=1, description="tag only the first N records")
    prompts_dir: str | None = Field(
        None, description="folder with edited prompt templates (<name>.yaml); default: the packaged ones")
    output: str | None = Field(None, description="run directory to write (must not exist); default runs/<time>-<name>")
    progress: bool = Field(True, description="progress bars on the console")


def run(cfg: ZeroShotConfig) -> tuple[RunDir, dict]:
    if not cfg.data:
        raise ConfigError("no data to tag: pass --data FILE or set 'data' in the config")
    gold = load_records(cfg.data)[: cfg.limit]
    labels = [e.name for e in cfg.entities] or sorted({s.label for r in gold for s in r.spans})
    unknown = set(cfg.queries) - set(labels)
    if unknown:
        raise ConfigError(f"queries: {sorted(unknown)} are not entity labels ({', '.join(labels)})")
    template = load_prompt(cfg.prompt, "adaptlab.ie", cfg.prompts_dir)
    teacher = build_teacher(cfg.teacher)
    answer_schema = zs.UNIVERSALNER_SCHEMA if cfg.prompt == "universalner" else zs.json_spans_schema(labels)
    prepare_schemas(teacher, [(answer_schema, f"the {cfg.prompt} answers (config key 'prompt')")])
    cache = open_cache(cfg.teacher)
    with open_run(cfg.output, cfg.name, cfg) as run_dir:
        get_logger().info("zero-shot tagging %d records with %s (%s prompt)", len(gold), teacher.model, cfg.prompt)
        try:
            tagged, stats = asyncio.run(_tag(cfg, teacher, cache, template, [r.text for r in gold], labels))
        finally:
            if cache is not None:
                cache.close()

        metrics = {"teacher": zs.zero_shot_scores(gold, [t.spans for t in tagged], [t.strings for t in tagged],
                                                  labels),
                   "teacher_backend": teacher.describe(),
                   "prompt": {"name": template.name, "version": template.version},
                   "records": len(gold), "labels": labels, "runner": stats.to_json(),
                   "answers": {k: sum(getattr(t, k) for t in tagged) for k in ("unaligned", "unparseable", "failed")}}
        if cfg.student:
            metrics["student"] = _score_student(cfg.student, gold, labels)
        write_records([Record(t.text, t.spans, meta={**g.meta, "strings": t.strings}) for t, g in zip(tagged, gold)],
                      run_dir.path / "predictions.jsonl")
        run_dir.finish(metrics, f"Zero-shot NER: {teacher.model} on {cfg.data}", report_sections(metrics))
    return run_dir, metrics


async def _tag(cfg: ZeroShotConfig, teacher, cache, template, texts: list[str], labels: list[str]):
    runner = TeacherRunner(teacher, cfg.teacher, cache, progress=cfg.progress)
    sampling = sampling_of(cfg.teacher.sampling)
    try:
        if cfg.prompt == "universalner":
            queries = {label: cfg.queries.get(label, label.lower().replace("_", " ")) for label in labels}
            outcomes = await runner.run(zs.universalner_requests(template, texts, queries, sampling), "zero-shot")
            require_an_answer(outcomes, teacher, "zero-shot")
            return zs.tag_universalner(texts, labels, outcomes), runner.stats
        descriptions = {e.name: e.description for e in cfg.entities} or dict.fromkeys(labels, "")
        outcomes = await runner.run(zs.json_span_requests(template, texts, descriptions, sampling), "zero-shot")
        require_an_answer(outcomes, teacher, "zero-shot")
        return zs.tag_json_spans(texts, labels, outcomes), runner.stats
    finally:
        await teacher.aclose()


def _score_student(model_dir: str, gold: list[Record], labels: list[str]) -> dict:
    from adaptlab.ie.ner import NERPredictor

    predicted = NERPredictor(model_dir).predict([r.text for r in gold])
    strings = [[(s.label, p.span_text(s)) for s in p.spans] for p in predicted]
    return zs.zero_shot_scores(gold, [p.spans for p in predicted], strings, labels)


def report_sections(metrics: dict) -> list[Section]:
    systems = [name for name in ("teacher", "student") if name in metrics]
    header = ["metric"] + [f"{name} {avg} F1" for name in systems for avg in ("micro", "macro")]
    rows = [[mode] + [metrics[name][mode][avg]["f1"] for name in systems for avg in ("micro", "macro")]
            for mode in MODES]
    per_type = [[label] + [metrics[name][mode]["per_type"].get(label, {}).get("f1", float("nan"))
                           for name in systems for mode in ("strict", "string")]
                for label in metrics["labels"]]
    return [
        Section("Teacher and student", [
            Paragraph("strict: exact character spans; overlap: any shared character, same type; string: "
                      "UniversalNER's match of normalised (type, string) sets per text."),
            Table(header, rows),
            Table(["type"] + [f"{name} {mode} F1" for name in systems for mode in ("strict", "string")], per_type,
                  caption="per type"),
        ]),
        Section("Teacher answers", [KeyValues({**metrics["answers"], **metrics["runner"]})]),
    ]
