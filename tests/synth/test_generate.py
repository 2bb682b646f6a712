"""Generation steps: subject parsing and de-duplication, sentence alignment, validation, accounting."""

from __future__ import annotations

import json

import pytest

from adaptlab.data.records import Relation, Span, read_records
from adaptlab.errors import AdaptlabError
from adaptlab.recipes import synth
from adaptlab.synth import generate as gen
from adaptlab.synth.config import SynthConfig
from adaptlab.synth.schema import Schema
from adaptlab.teacher.base import Message, TeacherRequest, TeacherResponse
from adaptlab.teacher.prompts import load_prompt
from adaptlab.teacher.replay import write_cassette
from adaptlab.teacher.runner import Outcome

SCHEMA = {
    "subject": "SPECIES",
    "entities": [{"name": "SPECIES", "description": "an animal"}, {"name": "HABITAT", "description": "where"},
                 {"name": "FEEDING", "description": "food"}],
    "relations": [{"name": "live_in", "head": "SPECIES", "tail": "HABITAT"},
                  {"name": "feed_on", "head": "SPECIES", "tail": "FEEDING"}],
}


def outcome(text: str | None, error: str | None = None) -> Outcome:
    request = TeacherRequest((Message("user", "q"),), tag="t")
    return Outcome(request, TeacherResponse(text) if text is not None else None, error)


def test_sentence_record_aligns_entities_and_maps_relations_to_sorted_spans():
    item = {"text": "Otters eat fish in cold rivers.",
            "entities": [{"text": "cold rivers", "type": "HABITAT"}, {"text": "Otters", "type": "SPECIES"},
                         {"text": "fish", "type": "FEEDING"}],
            "relations": [{"head": "otters", "type": "live_in", "tail": "cold rivers"},
                          {"head": "Otters", "type": "feed_on", "tail": "fish"}]}
    record, problem = gen.sentence_record(item, {"id": "x"})
    assert problem is None
    assert record.spans == [Span(0, 6, "SPECIES"), Span(11, 15, "FEEDING"), Span(19, 30, "HABITAT")]
    assert record.relations == [Relation(0, 1, "feed_on"), Relation(0, 2, "live_in")]


@pytest.mark.parametrize(("item", "reason"), [
    ({"text": "Otters eat fish.", "entities": [{"text": "crabs", "type": "FEEDING"}], "relations": []},
     "entity not aligned"),
    ({"text": "Otters eat fish.", "entities": [{"text": "fish", "type": "FEEDING"}],
      "relations": [{"head": "Otters", "type": "feed_on", "tail": "fish"}]}, "relation argument missing"),
    ({"text": "Otters eat fish.", "entities": [{"text": "fish"}], "relations": []}, "malformed sentence"),
    ({"sentence": "no text key"}, "malformed sentence"),
    ("just a string", "malformed sentence"),
])
def test_sentence_record_rejects_with_a_reason(item, reason):
    record, problem = gen.sentence_record(item, {})
    assert record is None and problem[0] == reason


def test_parse_answer_failures_become_answer_rejects():
    items, reject = gen.parse_answer(outcome(None, "HTTP 500 after 7 attempts"), "sentences")
    assert items is None and reject.reason == "request failed" and "500" in reject.detail
    items, reject = gen.parse_answer(outcome('{"sentences": [{"text": "a"'), "sentences")
    assert reject.reason == "unparseable answer" and "truncated" in reject.detail
    items, reject = gen.parse_answer(outcome('{"other": []}'), "sentences")
    assert reject.reason == "unparseable answer"
    items, reject = gen.parse_answer(outcome('Sure! ```json\n{"sentences": []}\n```'), "sentences")
    assert items == [] and reject is None


def test_subjects_are_parsed_and_deduplicated_by_common_or_scientific_name():
    answer = {"subjects": [{"name": "Axolotl", "scientific_name": "Ambystoma mexicanum"},
                           {"name": "Mexican walking fish", "scientific_name": "ambystoma  MEXICANUM"},
                           {"name": "axolotl"}, {"scientific_name": "no name"}, {"name": "Olm"}]}
    subjects, rejects = gen.parse_subjects(outcome(json.dumps(answer)), "amphibians")
    assert [r.reason for r in rejects] == ["malformed subject"]
    kept, duplicates = gen.dedupe_subjects(subjects)
    assert [s.display for s in kept] == ["Axolotl (Ambystoma mexicanum)", "Olm"]
    assert [r.reason for r in duplicates] == ["duplicate subject", "duplicate subject"]


def test_filter_records_validates_against_the_schema_and_drops_near_duplicates():
    schema = Schema.model_validate(SCHEMA)
    good, _ = gen.sentence_record({"text": "Otters eat fish.", "entities": [
        {"text": "Otters", "type": "SPECIES"}, {"text": "fish", "type": "FEEDING"}],
        "relations": [{"head": "Otters", "type": "feed_on", "tail": "fish"}]}, {"id": "a"})
    repeat, _ = gen.sentence_record({"text": "Otters  eat fish!", "entities": [], "relations": []}, {"id": "b"})
    wrong, _ = gen.sentence_record({"text": "Otters swim.", "entities": [{"text": "swim", "type": "MOTION"}],
                                    "relations": []}, {"id": "c"})
    kept, rejects = gen.filter_records([good, repeat, wrong], schema, 0.8)
    assert kept == [good]
    assert sorted(r.reason for r in rejects) == ["near duplicate", "unknown entity label"]


def replay_config(tmp_path, cassette, **extra) -> SynthConfig:
    return SynthConfig.model_validate({
        "name": "t", "schema": SCHEMA, "output": str(tmp_path / "run"), "progress": False,
        "teacher": {"backend": "replay", "model": "m", "cassette": str(cassette)},
        "subjects": {"groups": ["mammals"], "per_group": 2}, "sentences": {"per_request": 2}, **extra,
    })


def build_cassette(tmp_path, sentences_answer) -> SynthConfig:
    cassette = tmp_path / "cassette.jsonl"
    cfg = replay_config(tmp_path, cassette)
    sampling = gen.sampling_of(cfg.teacher.sampling)
    schema = cfg.schema_
    subjects_request = gen.subject_requests(load_prompt("subjects", synth.PROMPTS_PACKAGE), schema,
                                            ["mammals"], 2, sampling)[0]
    subjects = [gen.Subject("Otter", "Lutra lutra", "mammals"), gen.Subject("Badger", None, "mammals")]
    requests = gen.sentence_requests(load_prompt("sentences", synth.PROMPTS_PACKAGE), schema, subjects, 2, 1,
                                     sampling)
    answers = [json.dumps({"subjects": [{"name": "Otter", "scientific_name": "Lutra lutra"}, {"name": "Badger"}]}),
               json.dumps(sentences_answer), "I cannot help with badgers."]
    write_cassette(zip([subjects_request, *requests], [TeacherResponse(a) for a in answers]), cassette)
    return cfg


def test_generate_with_replay_accounts_for_every_answer_and_sentence(tmp_path):
    cfg = build_cassette(tmp_path, {"sentences": [
        {"text": "Otters (Lutra lutra) live in rivers.", "entities": [
            {"text": "Otters (Lutra lutra)", "type": "SPECIES"}, {"text": "rivers", "type": "HABITAT"}],
         "relations": [{"head": "Otters (Lutra lutra)", "type": "live_in", "tail": "rivers"}]},
        {"text": "Otters eat crabs.", "entities": [{"text": "Otters", "type": "SPECIES"},
                                                  {"text": "crayfish", "type": "FEEDING"}], "relations": []},
    ]})
    run, metrics = synth.generate(cfg)
    for stage in synth.STAGES:
        row = metrics[stage]
        assert row["proposed"] == row["accepted"] + row["rejected"] == row["accepted"] + sum(row["reasons"].values())
    assert metrics["answers"] == {"proposed": 3, "accepted": 2, "rejected": 1, "reasons": {"unparseable answer": 1}}
    assert metrics["sentences"]["reasons"] == {"entity not aligned": 1}
    records = read_records(run.path / "records.jsonl")
    assert len(records) == 1
    meta = records[0].meta
    assert meta["subject"] == "Otter (Lutra lutra)" and meta["prompt"] == "sentences"
    assert meta["prompt_version"] == "1" and meta["teacher"] == "m" and len(meta["request_hash"]) == 64
    rejects = [json.loads(line) for line in (run.path / "rejects.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rejects} == {"unparseable answer", "entity not aligned"}
    assert all(r["detail"] for r in rejects)
    assert (run.path / "report.html").read_text().count("entity not aligned") >= 1


def test_replay_miss_names_the_request_and_keeps_no_partial_output(tmp_path):
    cfg = build_cassette(tmp_path, {"sentences": []})
    cfg = cfg.model_copy(update={"sentences": cfg.sentences.model_copy(update={"per_request": 3})})
    with pytest.raises(AdaptlabError, match="sentences:Otter"):
        synth.generate(cfg)
    assert not (tmp_path / "run" / "records.jsonl").exists()


def test_config_needs_subjects_and_a_consistent_schema():
    with pytest.raises(ValueError, match="subjects"):
        SynthConfig.model_validate({"schema": SCHEMA})
    bad = {**SCHEMA, "relations": [{"name": "eats", "head": "SPECIES", "tail": "FOOD"}]}
    with pytest.raises(ValueError, match="FOOD"):
        SynthConfig.model_validate({"schema": bad, "subjects": {"groups": ["x"]}})
