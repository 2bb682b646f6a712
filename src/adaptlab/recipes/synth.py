"""``adaptlab synth generate``: a teacher LLM writes annotated sentences for a schema.

Read top to bottom: validate config -> (enumerate subjects) -> ask for sentences -> align ->
validate -> write the run directory::

    records.jsonl    accepted canonical records (meta: subject, prompt + version, teacher, request hash)
    rejects.jsonl    one line per rejected answer / subject / sentence, with a reason
    subjects.jsonl   the subjects sentences were asked for
    metrics.json     accounting (proposed = accepted + rejected at every stage), tokens, cost
    report.html, config.yaml, log.txt

Answers are cached (SQLite), so rerunning a finished or crashed job sends no repeated requests
and, with the same teacher answers, writes byte-identical ``records.jsonl``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import asdict

from adaptlab.data.records import Record, write_records
from adaptlab.report.html import KeyValues, Paragraph, Section, Table
from adaptlab.runs import RunDir, atomic_write_jsonl, get_logger, open_run
from adaptlab.synth import generate as gen
from adaptlab.synth.config import SynthConfig
from adaptlab.teacher.base import Sampling
from adaptlab.teacher.prompts import load_prompt
from adaptlab.teacher.registry import build_teacher, open_cache, prepare_schemas
from adaptlab.teacher.runner import TeacherRunner, require_an_answer

PROMPTS_PACKAGE = "adaptlab.synth"
STAGES = ("answers", "subjects", "sentences")


def generate(cfg: SynthConfig) -> tuple[RunDir, dict]:
    """Run the whole generation; returns the run directory and its metrics."""
    subjects_prompt = load_prompt("subjects", PROMPTS_PACKAGE, cfg.prompts_dir)
    sentences_prompt = load_prompt("sentences", PROMPTS_PACKAGE, cfg.prompts_dir)
    # Render both templates once so that a bad placeholder fails before anything is created.
    gen.subject_requests(subjects_prompt, cfg.schema_, ["example"], 1, Sampling())
    gen.sentence_requests(sentences_prompt, cfg.schema_, [gen.Subject("example")], 1, 1, Sampling())
    teacher = build_teacher(cfg.teacher)
    prepare_schemas(teacher, gen.answer_schemas(cfg.schema_, cfg.subjects.per_group, cfg.sentences.per_request))
    cache = open_cache(cfg.teacher)
    with open_run(cfg.output, cfg.name, cfg) as run:
        log = get_logger()
        log.info("generating with %s in %s", teacher.describe(), run.path)
        try:
            result = asyncio.run(_ask_teacher(cfg, teacher, cache, subjects_prompt, sentences_prompt))
        finally:
            if cache is not None:
                cache.close()
        subjects, candidates, rejects, proposed, runner_stats = result
        records, invalid = gen.filter_records(candidates, cfg.schema_, cfg.validation.near_duplicate_threshold)
        rejects += invalid

        write_records(records, run.path / "records.jsonl")
        atomic_write_jsonl(run.path / "rejects.jsonl",
                          (r.to_json() for r in rejects))
        atomic_write_jsonl(run.path / "subjects.jsonl",
                          (asdict(s) for s in subjects))
        metrics = accounting(records, rejects, proposed, len(subjects), runner_stats)
        if cfg.subjects.groups:
            asked = len(cfg.subjects.groups) * cfg.subjects.per_group
            metrics["subjects"]["asked_for"] = asked + len(cfg.subjects.given)
            if len(subjects) < asked:
                log.warning("asked for %d subjects per group, the teacher gave %d distinct ones in all (of %d)",
                            cfg.subjects.per_group, len(subjects), asked)
        metrics["teacher"] = teacher.describe()
        log.info("accepted %d of %d proposed sentences", len(records), proposed["sentences"])
        run.finish(metrics, f"Synthetic data: {cfg.name}", report_sections(metrics, records))
    return run, metrics


async def _ask_teacher(cfg: SynthConfig, teacher, cache, subjects_prompt, sentences_prompt):
    runner = TeacherRunner(teacher, cfg.teacher, cache, progress=cfg.progress)
    sampling = gen.sampling_of(cfg.teacher.sampling)
    rejects: list[gen.Reject] = []
    proposed = Counter()
    try:
        subjects = [gen.Subject(s.name, s.scientific_name, s.group) for s in cfg.subjects.given]
        if cfg.subjects.groups:
            requests = gen.subject_requests(subjects_prompt, cfg.schema_, cfg.subjects.groups,
                                            cfg.subjects.per_group, sampling)
            outcomes = await runner.run(requests, "subjects")
            require_an_answer(outcomes, teacher, "subjects")
            proposed["answers"] += len(outcomes)
            for group, outcome in zip(cfg.subjects.groups, outcomes, strict=True):
                found, bad = gen.parse_subjects(outcome, group)
                subjects += found
                rejects += bad
        proposed["subjects"] = len(subjects)
        subjects, duplicates = gen.dedupe_subjects(subjects)
        rejects += duplicates

        requests = gen.sentence_requests(sentences_prompt, cfg.schema_, subjects, cfg.sentences.per_request,
                                         cfg.sentences.requests_per_subject, sampling)
        base_meta = {"prompt": sentences_prompt.name, "prompt_version": sentences_prompt.version,
                     "teacher": teacher.model, "backend": teacher.backend}
        per_subject = cfg.sentences.requests_per_subject
        outcomes = await runner.run(requests, "sentences")
        require_an_answer(outcomes, teacher, "sentences")
        proposed["answers"] += len(outcomes)
        candidates: list[Record] = []
        for k, outcome in enumerate(outcomes):
            batch = gen.parse_sentences(outcome, subjects[k // per_subject], base_meta)
            candidates += batch.records
            rejects += batch.rejects
            proposed["sentences"] += batch.proposed
    finally:
        await teacher.aclose()
    return subjects, candidates, rejects, proposed, runner.stats


def accounting(records: list[Record], rejects: list[gen.Reject], proposed: Counter, n_subjects: int,
               stats) -> dict:
    """Counts per stage; each stage satisfies ``proposed = accepted + rejected``."""
    by_stage = {stage: Counter(r.reason for r in rejects if r.stage == stage)
                for stage in ("answer", "subject", "sentence")}
    accepted = {"answer": proposed["answers"] - sum(by_stage["answer"].values()),
                "subject": n_subjects, "sentence": len(records)}
    totals = {"answer": proposed["answers"],
              "subject": proposed["subjects"] + by_stage["subject"]["malformed subject"],
              "sentence": proposed["sentences"]}
    return {
        **{f"{stage}s": {"proposed": totals[stage], "accepted": accepted[stage],
                         "rejected": sum(by_stage[stage].values()), "reasons": dict(by_stage[stage])}
           for stage in by_stage},
        "records_per_label": dict(Counter(s.label for r in records for s in r.spans)),
        "relations_per_label": dict(Counter(rel.label for r in records for rel in r.relations)),
        "runner": stats.to_json(),
    }


def report_sections(metrics: dict, records: list[Record]) -> list[Section]:
    runner = metrics["runner"]
    sections = [
        Section("Accounting", [
            Paragraph("Every teacher answer, subject and sentence is either accepted or rejected with a "
                      "reason (see rejects.jsonl)."),
            Table(["stage", "proposed", "accepted", "rejected"],
                  [[stage, metrics[stage]["proposed"], metrics[stage]["accepted"], metrics[stage]["rejected"]]
                   for stage in STAGES]),
            Table(["stage", "reason", "count"],
                  [[stage, reason, count]
                   for stage in STAGES for reason, count in sorted(metrics[stage]["reasons"].items())],
                  caption="rejects by reason"),
        ]),
        Section("Teacher", [KeyValues({**metrics["teacher"], **runner})]),
        Section("Labels", [Table(["label", "spans"], sorted(metrics["records_per_label"].items())),
                           Table(["relation", "count"], sorted(metrics["relations_per_label"].items()))]),
    ]
    if records:
        sample = [[r.meta.get("subject", ""), r.text, ", ".join(f"{r.span_text(s)} [{s.label}]" for s in r.spans)]
                  for r in records[:20]]
        sections.append(Section("Sample", [Table(["subject", "sentence", "entities"], sample)]))
    return sections
