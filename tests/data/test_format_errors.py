"""Unhappy paths: every malformed input raises DataError naming the file (and line or task)."""

from __future__ import annotations

import json
import logging

import pytest

from adaptlab.data.formats import conll, labelstudio, markers, spacy_jsonl
from adaptlab.data.io import load_records
from adaptlab.data.records import read_records
from adaptlab.errors import AdaptlabError, DataError

ALL_SUFFIXES = ["r.jsonl", "r.conll", "r.json", "r.csv", "r.txt", "r.tsv"]


@pytest.mark.parametrize("name", ALL_SUFFIXES)
def test_empty_file_is_reported(tmp_path, name):
    path = tmp_path / name
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="file is empty") as info:
        load_records(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, AdaptlabError)


@pytest.mark.parametrize("name, good_lines", [
    ("r.jsonl", ['{"text": "a", "spans": []}', '{"text": "b", "spans": []}']),
    ("r.conll", ["Frogs\tB-SPECIES", "live\tO"]),
    ("r.csv", ['"Sentence","Label"', '"[E1]a[/E1] live in [E2]b[/E2]","live_in"']),
    ("r.json", ["[", '{"data": {"text": "a"}, "annotations": [{"result": []}]}']),
])
def test_non_utf8_file_names_the_line(tmp_path, name, good_lines):
    path = tmp_path / name
    path.write_bytes(("\n".join(good_lines) + "\n").encode() + "caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8") as info:
        load_records(path)
    assert f"{path}:3:" in str(info.value)
    assert "iconv" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_records(tmp_path / "nope.conll")


def test_conll_three_columns_names_file_and_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("Frogs\tB-SPECIES\nlive in\tO\tX\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected 2 columns") as info:
        conll.read_conll(path)
    assert str(info.value).startswith(f"{path}:2:")


# --- canonical JSONL -------------------------------------------------------------------------

GOOD = '{"text": "Frogs live in ponds.", "spans": [[0, 5, "SPECIES"]]}'


@pytest.mark.parametrize("bad_line, message", [
    ('{"text": "Frogs", "spans": [[0, 9, "SPECIES"]]}', "outside the text"),
    ('{"text": "Frogs live", "spans": [[0, 5, "A"], [3, 10, "B"]]}', "overlap"),
    ('{"text": "Frogs", "spans": [[0, 5, "A"]], "relations": [[0, 3, "r"]]}', "does not name a span"),
    ('{"text": "Frogs", "spans": [[0, 5, "A"]', "invalid JSON"),
    ('{"text": "Frogs", "spanz": []}', "unknown keys"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{GOOD}\n\n{bad_line}\n", encoding="utf-8")
    for reader in (read_records, load_records):
        with pytest.raises(DataError, match=message) as info:
            reader(path)
        assert str(info.value).startswith(f"{path}:3:")


# --- spaCy / Prodigy JSONL -------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    ({"text": "Frogs", "spans": [{"start": 0, "end": 9, "label": "A"}]}, "outside the text"),
    ({"text": "Frogs", "spans": [{"start": 0, "end": 5}]}, "string label"),
    ({"text": "Frogs", "spans": [{"start": 0, "end": 5, "label": "A", "text": "Toads"}]}, "does not equal"),
    ({"text": "ab cd", "spans": [{"start": 0, "end": 2, "label": "A"}],
      "relations": [{"head": 0, "child": 1, "label": "r", "head_span": {"start": 0, "end": 2},
                     "child_span": {"start": 3, "end": 5}}]}, "is not one of the line's spans"),
])
def test_spacy_errors_name_file_and_line(tmp_path, bad, message):
    path = tmp_path / "bad.jsonl"
    good = '{"text": "ok", "spans": [{"start": 0, "end": 2, "label": "A"}]}'
    path.write_text(good + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        spacy_jsonl.read_spacy_jsonl(path)
    assert str(info.value).startswith(f"{path}:2:")


# --- Label Studio ----------------------------------------------------------------------------

def _span(rid, start, end, text, label="SPECIES"):
    return {"id": rid, "from_name": "label", "to_name": "text", "type": "labels",
            "value": {"start": start, "end": end, "text": text, "labels": [label]}}


def _write_tasks(tmp_path, tasks):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    return path


def test_labelstudio_text_mismatch_is_explained(tmp_path):
    ok = {"id": 10, "data": {"text": "Frogs"},
          "annotations": [{"result": [_span("a", 0, 5, "Frogs")]}]}
    bad = {"id": 11, "data": {"text": "Green frogs"},
           "annotations": [{"result": [_span("a", 0, 5, "frogs")]}]}
    path = _write_tasks(tmp_path, [ok, bad])
    with pytest.raises(DataError) as info:
        labelstudio.read_labelstudio(path)
    message = str(info.value)
    assert message.startswith(f"{path}: task 1 (id 11): ")
    assert "value.text 'frogs' does not equal the text slice [0:5] 'Green'" in message


def test_labelstudio_utf16_offsets_are_repaired_and_reported(tmp_path, caplog):
    text = "🐸 Frogs live in ponds"
    # Older Label Studio counted the emoji as two code units, so "Frogs" was at [3, 8].
    task = {"data": {"text": text}, "annotations": [{"result": [_span("a", 3, 8, "Frogs")]}]}
    path = _write_tasks(tmp_path, [task])
    with caplog.at_level(logging.WARNING, logger="adaptlab"):
        (record,) = labelstudio.read_labelstudio(path)
    assert record.span_text(record.spans[0]) == "Frogs"
    assert "converted 1 span(s) from UTF-16" in caplog.text


def test_labelstudio_chooses_latest_non_cancelled_annotation(tmp_path, caplog):
    annotations = [
        {"result": [_span("a", 0, 5, "Frogs", "OLD")], "updated_at": "2024-01-01T00:00:00Z"},
        {"result": [_span("a", 0, 5, "Frogs", "NEW")], "updated_at": "2024-03-01T00:00:00Z"},
        {"result": [_span("a", 0, 5, "Frogs", "CANCELLED")], "updated_at": "2024-05-01T00:00:00Z",
         "was_cancelled": True},
    ]
    tasks = [
        {"id": 1, "data": {"text": "Frogs", "url": "x"}, "annotations": annotations,
         "predictions": [{"result": [_span("p", 0, 5, "Frogs", "PRED")],
                          "score": 0.7, "model_version": "m"}]},
        {"id": 2, "data": {"text": "Toads"}, "annotations": [annotations[2]]},
    ]
    path = _write_tasks(tmp_path, tasks)
    with caplog.at_level(logging.WARNING, logger="adaptlab"):
        records = labelstudio.read_labelstudio(path)
    assert [r.spans[0].label for r in records] == ["NEW"]
    assert records[0].meta == {"url": "x", "task_id": 1}
    assert "skipped 1 task(s)" in caplog.text
    assert len(labelstudio.read_labelstudio(path, include_unlabelled=True)) == 2
    (predicted,) = labelstudio.read_labelstudio(path, source="predictions")
    assert predicted.spans[0].label == "PRED"
    assert predicted.meta["labelstudio"] == {"score": 0.7, "model_version": "m"}


@pytest.mark.parametrize("result, message", [
    ([_span("a", 0, 5, "Frogs"), {"type": "relation", "from_id": "a", "to_id": "zz", "labels": ["r"]}],
     "to_id 'zz' does not name a labelled region"),
    ([{"id": "a", "type": "labels", "value": {"start": 0, "end": 5, "labels": ["A", "B"]}}],
     "exactly one label"),
    ([{"id": "a", "type": "labels", "value": {"start": "0", "end": 5, "labels": ["A"]}}], "must be integers"),
    ([_span("a", 0, 5, "Frogs"), _span("a", 0, 5, "Frogs")], "used twice"),
    ([_span("a", 0, 9, "Frogs")], "outside the text"),
])
def test_labelstudio_bad_results(tmp_path, result, message):
    path = _write_tasks(tmp_path, [{"data": {"text": "Frogs"}, "annotations": [{"result": result}]}])
    with pytest.raises(DataError, match=message) as info:
        labelstudio.read_labelstudio(path)
    assert str(info.value).startswith(f"{path}: task 0: ")


def test_labelstudio_bad_shapes(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"data": {"text": "a"}},\n{"data": ', encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON") as info:
        labelstudio.read_labelstudio(path)
    assert f"{path}:3:" in str(info.value)
    path = _write_tasks(tmp_path, [{"text": "JSON-MIN style"}])
    with pytest.raises(DataError, match="task 0: no 'data' object"):
        labelstudio.read_labelstudio(path)
    path = _write_tasks(tmp_path, [{"data": {"body": "a"}}])
    with pytest.raises(DataError, match="text_key"):
        labelstudio.read_labelstudio(path)
    with pytest.raises(DataError, match="source must be"):
        labelstudio.read_labelstudio(path, source="drafts")


# --- markers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("line, message", [
    ('"[E1]Frogs[/E1] live in ponds","live_in"', r"marker \[E2\] is missing"),
    ('"[E1]Frogs[/E1] [E1]x[/E1] live in [E2]ponds[/E2]","live_in"', r"\[E1\] appears 2 times"),
    ('"[E1]Frogs [E2]live[/E2] in[/E1] ponds","live_in"', "nest or cross"),
    ('"[E1]Frogs [E2]live[/E1] in[/E2] ponds","live_in"', "nest or cross"),
    ('"[/E1]Frogs[E1] live in [E2]ponds[/E2]","live_in"', r"\[/E1\] comes before \[E1\]"),
    ('"[E1][/E1]Frogs live in [E2]ponds[/E2]","live_in"', "E1 is empty"),
    ('"[E1]Frogs[/E1] live in [E2]ponds[/E2]","Live-In"', "expected"),
    ('[E1]Frogs[/E1] live in [E2]ponds[/E2],live_in,extra', "expected"),
])
def test_marker_csv_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "re.csv"
    path.write_text('"Sentence","Label"\n"[E1]a[/E1] live in [E2]b[/E2]","live_in"\n' + line + "\n",
                    encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        markers.read_marked_csv(path)
    assert str(info.value).startswith(f"{path}:3:")


def test_marker_tail_label_mapping_must_cover_the_relation(tmp_path):
    path = tmp_path / "re.tsv"
    path.write_text("sentence\tlabel\n[E1]a[/E1] x [E2]b[/E2]\tfeed_on\n", encoding="utf-8")
    with pytest.raises(DataError, match="no tail entity label for relation 'feed_on'") as info:
        markers.read_marked_tsv(path, tail_label={"live_in": "HABITAT"})
    assert str(info.value).startswith(f"{path}:2:")


def test_marker_writer_refuses_what_it_cannot_read_back(tmp_path):
    from adaptlab.data.records import Record, Relation, Span

    no_relation = Record("a b", [Span(0, 1, "X"), Span(2, 3, "Y")])
    with pytest.raises(DataError, match="record 0 has no relation"):
        markers.write_marked_csv([no_relation], tmp_path / "o.csv")
    bad_label = Record("a b", [Span(0, 1, "X"), Span(2, 3, "Y")], [Relation(0, 1, "Lives-In")])
    with pytest.raises(DataError, match=r"must match \[a-z_\]\+"):
        markers.write_marked_csv([bad_label], tmp_path / "o.csv")
    overlapping = Record("abc", [Span(0, 2, "X"), Span(1, 3, "Y")], [Relation(0, 1, "r")])
    with pytest.raises(DataError, match="overlap"):
        markers.write_marked_csv([overlapping], tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


def test_inspect_caps_example_lengths(tmp_path, run_cli):
    """A 2 MB token line must not print megabytes: every example excerpt is cut with its full length noted."""
    path = tmp_path / "huge.txt"
    path.write_text("x" * 1_000_000 + "\tB-SPECIES\n" + "y" * 1_000_000 + " foo\n", encoding="utf-8")
    code, out, _ = run_cli("data", "inspect", path, "--json", "--preset", "biospecies", "--types",
                           "SPECIES,HABITAT,FEEDING,BREEDING")
    assert code == 0 and len(out) < 5000
    assert "characters)" in out  # the no_relation_verb excerpt (a check of the clause grammar)
    code, out, _ = run_cli("data", "inspect", path)
    assert code == 0 and len(out) < 10000
