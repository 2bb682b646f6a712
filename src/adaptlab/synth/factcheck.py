"""Fact-check the teacher: sample the facts it stated, let people mark them, score accuracy per aspect.

Why: correct annotations of a false sentence still teach a student false facts, and a teacher's
accuracy differs by kind of fact (the seed paper found GPT-4 right about 74% of the time, with
large differences between habitat, feeding and breeding facts). So people check a sample.

A *fact* is one relation of a record: subject = head span text, aspect = relation type, fact =
tail span text, with the sentence it came from. The same (subject, aspect, fact) stated in several
sentences is one fact (compared case-insensitively); the first sentence is shown and the
duplicates are counted.

Sampling, per aspect: facts are split by ``meta["group"]`` (one group when records have none),
each group is shuffled and the groups are visited round-robin in shuffled order, taking one fact
from each in turn until ``per_aspect`` facts are taken or all are used. Every group is therefore
represented before any group gets a second fact. The random generator of an aspect is seeded with
``"<seed>:<aspect>"``, so the sample is deterministic and one aspect's sample does not change when
another aspect gets more facts.

Scoring uses the Wilson score interval for a binomial proportion, which stays inside [0, 1] and
behaves for small samples and for accuracies near 0 or 1 (unlike the normal approximation)::

    p = k / n,   z = 1.959964 (95%)
    centre = (p + z^2 / (2n)) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
    CI     = [centre - half, centre + half]
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adaptlab.data.records import Record, read_text_lines
from adaptlab.errors import ConfigError, DataError
from adaptlab.runs import atomic_write_text, refuse_existing
from adaptlab.synth.schema import Schema

COLUMNS = ("fact_id", "record_id", "group", "subject", "aspect", "fact", "sentence", "correct", "note")
REQUIRED_COLUMNS = ("fact_id", "group", "aspect", "correct")
TRUE_VALUES = ("1", "y", "yes", "true")
FALSE_VALUES = ("0", "n", "no", "false")
NO_GROUP = "(no group)"
Z_95 = 1.959963984540054


def collect_facts(records: Sequence[Record], schema: Schema) -> tuple[dict[str, list[dict[str, str]]], dict[str, int]]:
    """Every distinct fact per aspect (schema relation type), in record order, and what was left out.

    Returns ``(facts_by_aspect, counts)`` with counts ``relations``, ``duplicates`` and
    ``outside_schema`` (relations whose label is not a relation type of the schema).
    """
    facts: dict[str, list[dict[str, str]]] = {r.name: [] for r in schema.relations}
    seen: set[tuple[str, str, str]] = set()
    counts = {"relations": 0, "duplicates": 0, "outside_schema": 0}
    for index, record in enumerate(records):
        for relation in record.relations:
            counts["relations"] += 1
            if relation.label not in facts:
                counts["outside_schema"] += 1
                continue
            subject = record.span_text(record.spans[relation.head])
            fact = record.span_text(record.spans[relation.tail])
            key = (subject.casefold(), relation.label, fact.casefold())
            if key in seen:
                counts["duplicates"] += 1
                continue
            seen.add(key)
            facts[relation.label].append({
                "record_id": str(record.meta.get("id", f"record-{index}")),
                "group": str(record.meta.get("group") or ""),
                "subject": subject, "aspect": relation.label, "fact": fact, "sentence": record.text,
            })
    return facts, counts


def stratified_sample(facts: Sequence[dict[str, str]], size: int, rng: random.Random) -> list[dict[str, str]]:
    """Up to ``size`` facts, round-robin over shuffled groups (see the module docstring)."""
    by_group: dict[str, list[dict[str, str]]] = defaultdict(list)
    for fact in facts:
        by_group[fact["group"]].append(fact)
    queues = []
    for group in sorted(by_group):
        members = list(by_group[group])
        rng.shuffle(members)
        queues.append(members)
    rng.shuffle(queues)
    sample: list[dict[str, str]] = []
    while len(sample) < size and any(queues):
        for queue in queues:
            if queue and len(sample) < size:
                sample.append(queue.pop(0))
    return sample


def export_factcheck(
    records: Sequence[Record], path_csv: str | Path, schema: Schema, per_aspect: int, seed: int
) -> dict[str, Any]:
    """Write a fact-check sheet (CSV, columns :data:`COLUMNS`) with ``correct`` left for people to fill.

    The file starts with a UTF-8 byte order mark so that spreadsheet programs read accents right.
    Returns per-aspect ``available``/``sampled`` counts plus the counts of :func:`collect_facts`.
    """
    if per_aspect < 1:
        raise ConfigError(f"per_aspect must be at least 1, got {per_aspect}")
    path_csv = refuse_existing(path_csv, "fact-check sheet")
    facts, counts = collect_facts(records, schema)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    per_aspect_counts = {}
    for aspect, available in facts.items():
        sample = stratified_sample(available, per_aspect, random.Random(f"{seed}:{aspect}"))
        for k, fact in enumerate(sample, start=1):
            writer.writerow({**fact, "fact_id": f"{aspect}-{k:04d}", "correct": "", "note": ""})
        per_aspect_counts[aspect] = {"available": len(available), "sampled": len(sample)}
    atomic_write_text(path_csv, "\ufeff" + buffer.getvalue())
    return {**counts, "sampled": sum(c["sampled"] for c in per_aspect_counts.values()),
            "per_aspect": per_aspect_counts, "path": str(path_csv)}


def wilson_interval(correct: int, checked: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for ``correct`` successes out of ``checked`` (formula in the module docstring)."""
    if checked <= 0:
        raise ValueError("the Wilson interval needs at least one checked fact")
    p = correct / checked
    denominator = 1 + z * z / checked
    centre = (p + z * z / (2 * checked)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / checked + z * z / (4 * checked * checked))
    return max(0.0, centre - half), min(1.0, centre + half)


def parse_verdict(value: str) -> bool | None:
    """``1/y/yes/true`` -> True, ``0/n/no/false`` -> False (any case), blank -> None; else ValueError."""
    cleaned = value.strip().casefold()
    if not cleaned:
        return None
    if cleaned in TRUE_VALUES:
        return True
    if cleaned in FALSE_VALUES:
        return False
    raise ValueError(f"'correct' is {value!r}; write one of {', '.join(TRUE_VALUES + FALSE_VALUES)} "
                     "(any case) or leave it blank for not checked")


def score_factcheck(path_csv: str | Path) -> dict[str, Any]:
    """Score a filled fact-check sheet: accuracy and 95% Wilson interval overall, per aspect, per group.

    Each bucket is ``{checked, correct, accuracy, ci95: [lo, hi], unscored}``; ``accuracy`` and
    ``ci95`` are ``None`` when nothing in it was checked. Blank ``correct`` cells are counted as
    ``unscored``; rows with every cell blank (spreadsheet leftovers) are counted as ``blank_rows``.
    """
    lines = read_text_lines(path_csv)
    reader = csv.DictReader(io.StringIO("\n".join(lines) + "\n"))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}; the sheet needs {', '.join(REQUIRED_COLUMNS)} "
                        f"(found {', '.join(reader.fieldnames or []) or 'none'})", path_csv, 1)
    tallies: dict[str, dict[str, list[int]]] = {"overall": {}, "per_aspect": {}, "per_group": {}}
    first_line_of: dict[str, int] = {}
    blank_rows = 0
    for row in reader:
        line = reader.line_num
        if all(not (value or "").strip() for key, value in row.items() if key is not None):
            blank_rows += 1
            continue
        fact_id = (row["fact_id"] or "").strip()
        if fact_id in first_line_of:
            raise DataError(f"fact_id {fact_id!r} appears again (first on line {first_line_of[fact_id]}); "
                            "each fact must be scored once", path_csv, line)
        first_line_of[fact_id] = line
        try:
            verdict = parse_verdict(row["correct"] or "")
        except ValueError as exc:
            raise DataError(str(exc), path_csv, line) from None
        aspect = (row["aspect"] or "").strip()
        group = (row["group"] or "").strip() or NO_GROUP
        for section, key in (("overall", "all"), ("per_aspect", aspect), ("per_group", group)):
            tally = tallies[section].setdefault(key, [0, 0, 0])  # checked, correct, unscored
            if verdict is None:
                tally[2] += 1
            else:
                tally[0] += 1
                tally[1] += int(verdict)
    overall = tallies["overall"].get("all", [0, 0, 0])
    return {
        "overall": _bucket(*overall),
        "per_aspect": {k: _bucket(*v) for k, v in tallies["per_aspect"].items()},
        "per_group": {k: _bucket(*v) for k, v in sorted(tallies["per_group"].items())},
        "rows": overall[0] + overall[2],
        "blank_rows": blank_rows,
    }


def _bucket(checked: int, correct: int, unscored: int) -> dict[str, Any]:
    accuracy = correct / checked if checked else None
    ci95 = list(wilson_interval(correct, checked)) if checked else None
    return {"checked": checked, "correct": correct, "accuracy": accuracy, "ci95": ci95, "unscored": unscored}
