"""Fact-check sheets: stratified deterministic sampling, scoring with Wilson intervals, clear errors."""

from __future__ import annotations

import csv
import random

import pytest

from adaptlab.data.records import Record, Relation, Span
from adaptlab.errors import ConfigError, DataError, RunDirError
from adaptlab.synth.factcheck import (
    COLUMNS,
    collect_facts,
    export_factcheck,
    parse_verdict,
    score_factcheck,
    stratified_sample,
    wilson_interval,
)
from adaptlab.synth.schema import Schema

SCHEMA = Schema(
    subject="SPECIES",
    entities=[{"name": "SPECIES"}, {"name": "HABITAT"}, {"name": "FOOD"}],
    relations=[{"name": "live_in", "head": "SPECIES", "tail": "HABITAT"},
               {"name": "feed_on", "head": "SPECIES", "tail": "FOOD"}],
)


def fact_record(n: int, species: str, verb: str, tail: str, label: str, group: str | None) -> Record:
    text = f"{species} {verb} {tail}."
    tail_start = len(species) + len(verb) + 2
    tail_type = "HABITAT" if label == "live_in" else "FOOD"
    meta = {"id": f"synth-{n:03d}"} | ({"group": group} if group else {})
    return Record(text, [Span(0, len(species), "SPECIES"), Span(tail_start, tail_start + len(tail), tail_type)],
                  [Relation(0, 1, label)], meta)


def corpus() -> list[Record]:
    """live_in: 6 amphibian facts, 1 reptile fact, 1 duplicate; feed_on: 2 facts; one relation outside the schema."""
    records = [fact_record(k, f"Frog{k}", "lives in", f"pond{k}", "live_in", "amphibians") for k in range(6)]
    records.append(fact_record(6, "Gecko", "lives in", "deserts", "live_in", "reptiles"))
    records.append(fact_record(7, "frog0", "lives in", "POND0", "live_in", "amphibians"))  # same fact, other case
    records.append(fact_record(8, "Toad", "eats", "beetles", "feed_on", None))
    records.append(fact_record(9, "Newt", "eats", "worms", "feed_on", None))
    odd = fact_record(10, "Owl", "hunts", "mice", "feed_on", "birds")
    odd.relations = [Relation(0, 1, "hunts")]
    records.append(odd)
    return records


def read_rows(path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def write_rows(path, rows: list[dict[str, str]], columns=COLUMNS) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def test_collect_facts_dedupes_and_counts_outside_schema():
    facts, counts = collect_facts(corpus(), SCHEMA)
    assert [len(facts["live_in"]), len(facts["feed_on"])] == [7, 2]
    assert counts == {"relations": 11, "duplicates": 1, "outside_schema": 1}
    assert facts["feed_on"][0] == {"record_id": "synth-008", "group": "", "subject": "Toad", "aspect": "feed_on",
                                   "fact": "beetles", "sentence": "Toad eats beetles."}


def test_round_robin_represents_every_group_before_repeating_one():
    facts, _ = collect_facts(corpus(), SCHEMA)
    for seed in range(20):
        sample = stratified_sample(facts["live_in"], 2, random.Random(seed))
        assert sorted(f["group"] for f in sample) == ["amphibians", "reptiles"]
    everything = stratified_sample(facts["live_in"], 100, random.Random(0))
    assert len(everything) == 7 and len({f["record_id"] for f in everything}) == 7


def test_export_is_deterministic_stratified_and_blank_for_people(tmp_path):
    summary = export_factcheck(corpus(), tmp_path / "a.csv", SCHEMA, per_aspect=3, seed=13)
    export_factcheck(corpus(), tmp_path / "b.csv", SCHEMA, per_aspect=3, seed=13)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes().startswith(b"\xef\xbb\xbf")  # BOM for spreadsheet programs
    assert summary["per_aspect"] == {"live_in": {"available": 7, "sampled": 3},
                                     "feed_on": {"available": 2, "sampled": 2}}
    assert summary["sampled"] == 5 and summary["duplicates"] == 1 and summary["outside_schema"] == 1
    rows = read_rows(tmp_path / "a.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert [r["fact_id"] for r in rows] == ["live_in-0001", "live_in-0002", "live_in-0003",
                                            "feed_on-0001", "feed_on-0002"]
    assert "reptiles" in {r["group"] for r in rows[:3]}
    assert all(r["correct"] == "" and r["note"] == "" for r in rows)
    gecko = next(r for r in rows if r["subject"] == "Gecko")
    assert (gecko["aspect"], gecko["fact"], gecko["sentence"], gecko["record_id"]) == (
        "live_in", "deserts", "Gecko lives in deserts.", "synth-006")


def test_export_refuses_to_overwrite_and_bad_sample_size(tmp_path):
    path = tmp_path / "facts.csv"
    path.write_text("keep me", encoding="utf-8")
    with pytest.raises(RunDirError, match="already exists"):
        export_factcheck(corpus(), path, SCHEMA, per_aspect=2, seed=0)
    assert path.read_text(encoding="utf-8") == "keep me"
    with pytest.raises(ConfigError, match="per_aspect must be at least 1"):
        export_factcheck(corpus(), tmp_path / "new.csv", SCHEMA, per_aspect=0, seed=0)


def test_wilson_interval_known_values():
    assert wilson_interval(7, 10) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    assert wilson_interval(5, 5)[0] == pytest.approx(0.5655, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


@pytest.mark.parametrize("value, expected", [
    ("1", True), ("Y", True), (" yes ", True), ("TRUE", True),
    ("0", False), ("n", False), ("No", False), ("false", False), ("", None), ("  ", None),
])
def test_parse_verdict_accepts_common_spellings(value, expected):
    assert parse_verdict(value) is expected


def test_score_with_blanks_per_aspect_group_and_overall(tmp_path):
    path = tmp_path / "facts.csv"
    export_factcheck(corpus(), path, SCHEMA, per_aspect=10, seed=1)
    rows = read_rows(path)
    assert len(rows) == 9
    marks = {"live_in": ["yes", "1", "Y", "true", "0", "n", ""], "feed_on": ["1", ""]}
    for row in rows:
        row["correct"] = marks[row["aspect"]].pop(0)
    rows.append(dict.fromkeys(COLUMNS, ""))  # an empty spreadsheet row
    write_rows(path, rows)
    scores = score_factcheck(path)
    live_in = scores["per_aspect"]["live_in"]
    assert (live_in["checked"], live_in["correct"], live_in["unscored"]) == (6, 4, 1)
    assert live_in["accuracy"] == pytest.approx(4 / 6)
    assert live_in["ci95"] == pytest.approx(list(wilson_interval(4, 6)))
    assert scores["per_aspect"]["feed_on"] == {"checked": 1, "correct": 1, "accuracy": 1.0,
                                               "ci95": pytest.approx(list(wilson_interval(1, 1))), "unscored": 1}
    overall = scores["overall"]
    assert (overall["checked"], overall["correct"], overall["unscored"]) == (7, 5, 2)
    assert scores["rows"] == 9 and scores["blank_rows"] == 1
    assert set(scores["per_group"]) == {"(no group)", "amphibians", "reptiles"}
    groups = scores["per_group"]
    assert sum(g["checked"] + g["unscored"] for g in groups.values()) == 9
    assert groups["(no group)"]["checked"] + groups["(no group)"]["unscored"] == 2


def test_score_without_any_checked_fact_has_no_accuracy(tmp_path):
    path = tmp_path / "facts.csv"
    export_factcheck(corpus(), path, SCHEMA, per_aspect=1, seed=0)
    overall = score_factcheck(path)["overall"]
    assert overall == {"checked": 0, "correct": 0, "accuracy": None, "ci95": None, "unscored": 2}


def test_invalid_value_names_file_line_and_accepted_values(tmp_path):
    path = tmp_path / "facts.csv"
    export_factcheck(corpus(), path, SCHEMA, per_aspect=10, seed=0)
    rows = read_rows(path)
    rows[0]["correct"] = "1"
    rows[2]["correct"] = "maybe"  # third data row = line 4 of the file
    write_rows(path, rows)
    with pytest.raises(DataError, match=r"facts\.csv:4: 'correct' is 'maybe'; write one of 1, y, yes, true, 0, n"):
        score_factcheck(path)


def test_multiline_sentence_keeps_line_numbers_right(tmp_path):
    path = tmp_path / "facts.csv"
    rows = [{"fact_id": "a", "group": "", "aspect": "live_in", "sentence": "two\nlines", "correct": "1"},
            {"fact_id": "b", "group": "", "aspect": "live_in", "sentence": "one", "correct": "?"}]
    write_rows(path, rows)
    with pytest.raises(DataError, match=r"facts\.csv:4:"):
        score_factcheck(path)


def test_missing_columns_and_duplicate_ids_are_errors(tmp_path):
    path = tmp_path / "facts.csv"
    write_rows(path, [{"fact_id": "a", "subject": "Frog", "fact": "pond"}], columns=("fact_id", "subject", "fact"))
    with pytest.raises(DataError, match=r"facts\.csv:1: missing column\(s\) group, aspect, correct"):
        score_factcheck(path)
    rows = [{"fact_id": "a", "group": "", "aspect": "live_in", "correct": "1"},
            {"fact_id": "a", "group": "", "aspect": "live_in", "correct": "0"}]
    write_rows(path, rows)
    with pytest.raises(DataError, match=r"facts\.csv:3: fact_id 'a' appears again \(first on line 2\)"):
        score_factcheck(path)
