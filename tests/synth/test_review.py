"""Label Studio review round trip: export a project, simulate a reviewer, import the verdicts."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET

import pytest

from adaptlab.data.records import Record, Relation, Span
from adaptlab.errors import DataError, RunDirError
from adaptlab.synth.review import (
    REASON_EMPTY,
    REASON_NOT_REVIEWED,
    REASON_REJECTED,
    REASON_SKIPPED,
    agreement_rows,
    export_review,
    import_review,
    labeling_config,
)
from adaptlab.synth.schema import Schema

SCHEMA = Schema(
    subject="SPECIES",
    entities=[
        {"name": "SPECIES", "description": "an animal species"},
        {"name": "HABITAT", "description": 'where it lives, e.g. "pond" & <river>'},
        {"name": "FOOD"},
    ],
    relations=[
        {"name": "live_in", "head": "SPECIES", "tail": "HABITAT", "description": "lives there"},
        {"name": "feed_on", "head": "SPECIES", "tail": "FOOD"},
    ],
)


def make_record(n: int, text: str, spans: list[tuple[str, str]], relations: list[tuple[int, int, str]]) -> Record:
    """Spans given as (surface text, label), located by their first occurrence in ``text``."""
    located = [Span(text.index(s), text.index(s) + len(s), label) for s, label in spans]
    return Record(text, located, [Relation(*r) for r in relations],
                  {"id": f"synth-{n:06d}", "subject": "x", "group": "amphibians", "teacher": "gpt-4o"})


RECORDS = [
    make_record(0, "Axolotls live in lakes.", [("Axolotls", "SPECIES"), ("lakes", "HABITAT")], [(0, 1, "live_in")]),
    make_record(1, "Frogs eat flies and live in ponds.",
                [("Frogs", "SPECIES"), ("flies", "FOOD"), ("in ponds", "HABITAT")],
                [(0, 1, "feed_on"), (0, 2, "live_in")]),
    make_record(2, "Newts eat worms in streams.",
                [("Newts", "SPECIES"), ("worms", "FOOD"), ("streams", "HABITAT")],
                [(0, 1, "feed_on"), (0, 2, "live_in")]),
    make_record(3, "Toads fly over mountains.", [("Toads", "SPECIES"), ("mountains", "HABITAT")], [(0, 1, "live_in")]),
    make_record(4, "Salamanders like rain.", [("Salamanders", "SPECIES")], []),
    make_record(5, "Caecilians live in soil.", [("Caecilians", "SPECIES"), ("soil", "HABITAT")], [(0, 1, "live_in")]),
]


def verdict(choice: str) -> dict:
    return {"id": "v1", "from_name": "verdict", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}


def annotation(result: list, updated_at: str = "2024-05-01T10:00:00Z", cancelled: bool = False) -> dict:
    return {"id": 1, "completed_by": 7, "result": result, "was_cancelled": cancelled, "updated_at": updated_at}


@pytest.fixture
def exported(tmp_path):
    out = tmp_path / "review"
    counts = export_review(RECORDS, out, SCHEMA)
    return out, counts


def simulate_review(tasks: list[dict]) -> list[dict]:
    """Tasks as Label Studio exports them after one reviewer went through the project."""
    tasks = copy.deepcopy(tasks)
    for k, task in enumerate(tasks):
        task["id"] = 101 + k
    predicted = [t["predictions"][0]["result"] for t in tasks]

    # 0: accepted unchanged (latest annotation); an older edited annotation must be ignored.
    older = [r for r in copy.deepcopy(predicted[0]) if r["type"] != "relation"]
    tasks[0]["annotations"] = [annotation(predicted[0] + [verdict("accept")]),
                               annotation(older + [verdict("reject")], updated_at="2024-04-01T00:00:00Z")]
    # 1: span boundary edited "in ponds" -> "ponds"; its relation still points at the region.
    edited = copy.deepcopy(predicted[1])
    habitat = next(r for r in edited if r["type"] == "labels" and r["value"]["labels"] == ["HABITAT"])
    habitat["value"].update(start=habitat["value"]["start"] + 3, text="ponds")
    tasks[1]["annotations"] = [annotation(edited + [verdict("accept")])]
    # 2: the live_in relation removed; a free-text comment result rides along.
    kept = [r for r in predicted[2] if not (r["type"] == "relation" and r["labels"] == ["live_in"])]
    comment = {"id": "c1", "from_name": "note", "to_name": "text", "type": "textarea", "value": {"text": ["ok"]}}
    tasks[2]["annotations"] = [annotation(kept + [comment, verdict("accept")])]
    # 3: rejected by verdict; 4: skipped; 5: nobody looked at it.
    tasks[3]["annotations"] = [annotation(predicted[3] + [verdict("reject")])]
    tasks[4]["annotations"] = [annotation([], cancelled=True)]
    tasks[5]["annotations"] = []
    return tasks


def write_export(tmp_path, tasks: list[dict]):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")
    return path


def reviewed_export(tmp_path, exported_dir):
    tasks = json.loads((exported_dir / "tasks.json").read_text(encoding="utf-8"))
    return write_export(tmp_path, simulate_review(tasks))


def test_labeling_config_is_valid_xml_with_every_label_escaped():
    root = ET.fromstring(labeling_config(SCHEMA))
    assert root.tag == "View"
    assert root.find("Text").attrib == {"name": "text", "value": "$text"}
    labels = root.find("Labels")
    assert labels.attrib == {"name": "label", "toName": "text"}
    assert [label.get("value") for label in labels] == ["SPECIES", "HABITAT", "FOOD"]
    assert labels[1].get("hint") == 'where it lives, e.g. "pond" & <river>'
    assert "hint" not in labels[2].attrib
    assert [r.get("value") for r in root.find("Relations")] == ["live_in", "feed_on"]
    assert root.find("Relations")[0].get("hint") == "SPECIES -> HABITAT: lives there"
    choices = root.find("Choices")
    assert (choices.get("name"), choices.get("toName"), choices.get("choice")) == ("verdict", "text", "single")
    assert [c.get("value") for c in choices] == ["accept", "reject"]


def test_export_writes_tasks_with_predictions_config_and_instructions(exported):
    out, counts = exported
    assert counts["tasks"] == 6 and counts["spans"] == 13 and counts["relations"] == 7
    assert sorted(p.name for p in out.iterdir()) == ["instructions.txt", "labeling_config.xml", "tasks.json"]
    tasks = json.loads((out / "tasks.json").read_text(encoding="utf-8"))
    first = tasks[0]
    assert first["data"] == {"text": "Axolotls live in lakes.", "id": "synth-000000", "subject": "x",
                             "group": "amphibians", "teacher": "gpt-4o"}
    assert "annotations" not in first
    prediction = first["predictions"][0]
    assert prediction["model_version"] == "gpt-4o"
    assert [r["type"] for r in prediction["result"]] == ["labels", "labels", "relation"]
    assert {r.get("from_name") for r in prediction["result"][:2]} == {"label"}
    ET.fromstring((out / "labeling_config.xml").read_text(encoding="utf-8"))
    assert "adaptlab synth review import" in (out / "instructions.txt").read_text(encoding="utf-8")


def test_export_refuses_to_overwrite_and_rejects_labels_outside_schema(exported, tmp_path):
    out, _ = exported
    with pytest.raises(RunDirError, match="tasks.json already exists"):
        export_review(RECORDS, out, SCHEMA)
    bad = Record("Owls eat mice.", [Span(0, 4, "BIRD")], meta={"id": "synth-9"})
    with pytest.raises(DataError, match=r"record 0 \(id synth-9\): span label 'BIRD'"):
        export_review([bad], tmp_path / "other", SCHEMA)
    assert not (tmp_path / "other" / "tasks.json").exists()


def test_import_applies_reviewer_decisions(exported, tmp_path):
    out, _ = exported
    result = import_review(reviewed_export(tmp_path, out), SCHEMA)
    assert result.counts == {"tasks": 6, "verified": 3, "unverified": 1, "edited": 2, "rejected": 1,
                             "skipped": 1, "kept": 4, "removed": 2}
    assert result.removed == [("synth-000003", REASON_REJECTED), ("synth-000004", REASON_SKIPPED)]
    by_id = {r.meta["id"]: r for r in result.records}
    assert list(by_id) == ["synth-000000", "synth-000001", "synth-000002", "synth-000005"]

    unchanged = by_id["synth-000000"]
    assert unchanged.spans == RECORDS[0].spans and unchanged.relations == RECORDS[0].relations
    assert unchanged.meta["verified"] is True
    assert unchanged.meta["review"] == {"verdict": "accept", "edited": False, "reviewer": 7,
                                        "updated_at": "2024-05-01T10:00:00Z"}
    assert "labelstudio" not in unchanged.meta  # the verdict does not linger as an "other result"
    assert unchanged.meta["task_id"] == 101 and unchanged.meta["group"] == "amphibians"

    boundary = by_id["synth-000001"]
    assert [boundary.span_text(s) for s in boundary.spans] == ["Frogs", "flies", "ponds"]
    assert [(r.head, r.tail, r.label) for r in boundary.relations] == [(0, 1, "feed_on"), (0, 2, "live_in")]
    assert boundary.meta["review"]["edited"] is True

    relation_removed = by_id["synth-000002"]
    assert [r.label for r in relation_removed.relations] == ["feed_on"]
    assert relation_removed.meta["review"]["edited"] is True
    assert relation_removed.meta["labelstudio"]["other_results"][0]["from_name"] == "note"

    unreviewed = by_id["synth-000005"]
    assert unreviewed.spans == RECORDS[5].spans and unreviewed.meta["verified"] is False
    assert unreviewed.meta["review"] == {"verdict": None, "edited": False}


def test_agreement_counts_the_simulated_edits_exactly(exported, tmp_path):
    out, _ = exported
    agreement = import_review(reviewed_export(tmp_path, out), SCHEMA).agreement
    assert agreement["tasks"] == 3
    strict = agreement["spans"]["strict"]["per_type"]
    assert strict["SPECIES"]["f1"] == 1.0 and strict["FOOD"]["f1"] == 1.0
    assert strict["HABITAT"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert agreement["spans"]["strict"]["micro"]["f1"] == pytest.approx(7 / 8)
    assert agreement["spans"]["overlap"]["per_type"]["HABITAT"]["f1"] == 1.0
    relations = agreement["relations"]["per_type"]
    # live_in: teacher 3 (one with the wrong tail boundary, one removed), reviewer 2, agreed 1.
    assert relations["live_in"] == pytest.approx({"precision": 1 / 3, "recall": 1 / 2, "f1": 0.4, "support": 2})
    assert relations["feed_on"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2})
    rows = agreement_rows(agreement)
    assert [(r["kind"], r["type"]) for r in rows] == [("entity", "SPECIES"), ("entity", "HABITAT"),
                                                      ("entity", "FOOD"), ("relation", "live_in"),
                                                      ("relation", "feed_on")]
    assert rows[1]["overlap_f1"] == 1.0 and rows[3]["strict_f1"] == pytest.approx(0.4)


def test_verified_only_removes_unreviewed(exported, tmp_path):
    out, _ = exported
    result = import_review(reviewed_export(tmp_path, out), SCHEMA, verified_only=True)
    assert [r.meta["id"] for r in result.records] == ["synth-000000", "synth-000001", "synth-000002"]
    assert result.removed[-1] == ("synth-000005", REASON_NOT_REVIEWED)
    assert result.counts["removed"] == 3 and result.counts["unverified"] == 0


def test_unreviewed_export_imports_as_the_teacher_wrote_it(exported):
    out, _ = exported
    result = import_review(out / "tasks.json", SCHEMA)
    assert result.counts["unverified"] == 6 and result.agreement["tasks"] == 0
    for back, original in zip(result.records, RECORDS, strict=True):
        assert (back.text, back.spans, back.relations) == (original.text, original.spans, original.relations)


def test_task_without_annotation_or_prediction_is_removed(tmp_path):
    path = write_export(tmp_path, [{"id": 9, "data": {"text": "Bats hang."}}])
    result = import_review(path, SCHEMA)
    assert result.records == [] and result.removed == [("task 9", REASON_EMPTY)]


def test_unknown_label_in_annotation_names_file_and_task(exported, tmp_path):
    out, _ = exported
    tasks = simulate_review(json.loads((out / "tasks.json").read_text(encoding="utf-8")))
    tasks[1]["annotations"][0]["result"][0]["value"]["labels"] = ["PLANT"]
    path = write_export(tmp_path, tasks)
    with pytest.raises(DataError, match=r"export\.json: task 1 \(id 102\): span label 'PLANT'"):
        import_review(path, SCHEMA)


@pytest.mark.parametrize("change, message", [
    (lambda result: result[-1]["value"].update(choices=["maybe"]), "verdict must be exactly one of"),
    (lambda result: next(r for r in result if r["type"] == "relation").update(labels=[]), "a relation has no label"),
    (lambda result: next(r for r in result if r["type"] == "relation").update(labels=["eats"]),
     "relation label 'eats' is not a relation type"),
])
def test_bad_annotations_are_explained(exported, tmp_path, change, message):
    out, _ = exported
    tasks = simulate_review(json.loads((out / "tasks.json").read_text(encoding="utf-8")))
    change(tasks[2]["annotations"][0]["result"])
    with pytest.raises(DataError, match=r"task 2 \(id 103\): " + message):
        import_review(write_export(tmp_path, tasks), SCHEMA)


def test_malformed_export_is_a_data_error(tmp_path):
    path = tmp_path / "export.json"
    path.write_text('{"not": "a list"}', encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON array of tasks"):
        import_review(path, SCHEMA)
