"""Entity markers in detail, the biospecies RE file, and format dispatch in adaptlab.data.io."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from adaptlab.data.formats import markers
from adaptlab.data.io import FORMATS, detect_format, load_records, resolve_format, save_records
from adaptlab.data.records import Record, Relation, Span
from adaptlab.errors import DataError

FROGS = Record("Frogs live in ponds.", [Span(0, 5, "SPECIES"), Span(14, 19, "HABITAT")],
               [Relation(0, 1, "live_in")], {"id": "demo-1"})


def test_record_from_marked_strips_markers_and_keeps_exact_spans():
    record = markers.record_from_marked("[E1]Frogs[/E1] live in [E2]ponds;[/E2]", "live_in")
    assert record.text == "Frogs live in ponds;"
    assert record.spans == [Span(0, 5, "HEAD"), Span(14, 20, "TAIL")]
    assert record.relations == [Relation(0, 1, "live_in")]


def test_tail_first_keeps_head_as_span_zero():
    record = markers.record_from_marked("[E2]Ponds[/E2] house [E1]frogs[/E1]", None, "SPECIES", "HABITAT")
    assert record.text == "Ponds house frogs"
    assert record.spans == [Span(12, 17, "SPECIES"), Span(0, 5, "HABITAT")]
    assert record.relations == []
    assert markers.marked_from_record(record, (0, 1)) == "[E2]Ponds[/E2] house [E1]frogs[/E1]"


def test_adjacent_entities_and_marking_by_relation_or_pair():
    record = markers.record_from_marked("[E1]ab[/E1][E2]cd[/E2]", "r")
    assert record.spans == [Span(0, 2, "HEAD"), Span(2, 4, "TAIL")]
    assert markers.marked_from_record(record) == "[E1]ab[/E1][E2]cd[/E2]"
    assert markers.marked_from_record(FROGS, 0) == "[E1]Frogs[/E1] live in [E2]ponds[/E2]."
    assert markers.marked_from_record(FROGS, (1, 0)) == "[E2]Frogs[/E2] live in [E1]ponds[/E1]."
    with pytest.raises(DataError, match="relation 3 does not exist"):
        markers.marked_from_record(FROGS, 3)


@pytest.mark.parametrize("name, content, shape", [
    ("a.txt", '"Sentence","Label"\n"[E1]a[/E1] [E2]b[/E2]","r"\n', "csv"),
    ("a.txt", '"[E1]a[/E1] [E2]b[/E2]","r"\n', "csv"),
    ("a.txt", "[E1]a[/E1] [E2]b[/E2]\tr\n", "tsv"),
    ("a.txt", "[E1]a[/E1] [E2]b[/E2]\n", "lines"),
    ("a.csv", "anything\n", "csv"),
    ("a.tsv", "anything\n", "tsv"),
])
def test_marker_file_shape(tmp_path, name, content, shape):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert markers.marker_file_shape(path) == shape


def test_plain_marked_lines(tmp_path):
    path = tmp_path / "marked.txt"
    path.write_text("[E1]Frogs[/E1] live in [E2]ponds[/E2].\n\n[E1]Toads[/E1] eat [E2]flies[/E2].\n",
                    encoding="utf-8")
    records = markers.read_marked_lines(path, relation_label="related")
    assert [r.text for r in records] == ["Frogs live in ponds.", "Toads eat flies."]
    assert records[1].meta == {"source": f"{path}:3"}
    assert all(r.relations == [Relation(0, 1, "related")] for r in records)
    assert load_records(path)[0].relations == []  # detected as markers, no label given


def test_biospecies_re_csv(shared_data):
    path = shared_data / "biospecies" / "RE_Biospecies_data.txt"
    tails = {"live_in": "HABITAT", "feed_on": "FEEDING", "breed_by": "BREEDING"}
    # CSV content in a .txt file: found by sniffing, with or without fmt=.
    assert detect_format(path) == "markers" and markers.marker_file_shape(path) == "csv"
    records = load_records(path, head_label="SPECIES", tail_label=tails)
    assert records == load_records(path, fmt="markers", head_label="SPECIES", tail_label=tails)
    assert len(records) == 1778
    counts = Counter(r.relations[0].label for r in records)
    assert counts == {"live_in": 626, "feed_on": 582, "breed_by": 570}
    for record in records:
        record.validate()
        head, tail = record.spans
        assert head.label == "SPECIES" and tail.label == tails[record.relations[0].label]
        assert "[E1]" not in record.text and "[/E2]" not in record.text
    # The two rows with unescaped quotes (file lines 130 and 1061) keep their quotes.
    by_line = {int(r.meta["source"].rsplit(":", 1)[1]): r for r in records}
    assert '"' in by_line[130].text and '"' in by_line[1061].text
    # Marking each record again reproduces the sentence of its line.
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno in (2, 130, 1061, 1779):
        marked = markers.CSV_ROW.match(lines[lineno - 1]).group(1)
        assert markers.marked_from_record(by_line[lineno]) == marked


# --- adaptlab.data.io ------------------------------------------------------------------------

def test_registry_and_unknown_format():
    assert set(FORMATS) == {"jsonl", "conll", "labelstudio", "spacy", "markers", "hf"}
    assert resolve_format("Prodigy") == "spacy" and resolve_format("bio") == "conll"
    with pytest.raises(DataError, match="unknown format 'xml'; known formats: jsonl, conll, labelstudio"):
        load_records("whatever.xml", fmt="xml")


@pytest.mark.parametrize("name, content, expected", [
    ("a.jsonl", '{"text": "a", "spans": [[0, 1, "X"]]}\n', "jsonl"),
    ("a.jsonl", '{"text": "a", "spans": []}\n', "jsonl"),
    ("a.jsonl", '{"text": "a", "spans": [{"start": 0, "end": 1, "label": "X"}]}\n', "spacy"),
    ("a.jsonl", '{"text": "a", "tokens": [], "spans": []}\n', "spacy"),
    ("a.jsonl", '{"text": "a", "spans": []}\n'
                '{"text": "b", "spans": [{"start": 0, "end": 1, "label": "X"}]}\n', "spacy"),
    ("a.json", "[]", "labelstudio"),
    ("a.conll", "a O\n", "conll"),
    ("a.bio", "a O\n", "conll"),
    ("a.iob", "a O\n", "conll"),
    ("a.tsv", "-DOCSTART- O\n\na\tO\n", "conll"),
    ("a.tsv", "[E1]a[/E1] b [E2]c[/E2]\tr\n", "markers"),
    ("a.txt", "Frogs B-SPECIES\nlive O\n", "conll"),
    ("a.txt", "[E1]a[/E1] b [E2]c[/E2]\n", "markers"),
    ("a.csv", '"Sentence","Label"\n', "markers"),
])
def test_detect_format(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert detect_format(path) == expected


def test_detect_format_refuses_to_guess(tmp_path):
    prose = tmp_path / "notes.txt"
    prose.write_text("Just some prose, nothing tagged.\n", encoding="utf-8")
    with pytest.raises(DataError, match="cannot tell the format") as info:
        detect_format(prose)
    assert str(prose) in str(info.value)
    with pytest.raises(DataError, match="suffix '.xml'"):
        (tmp_path / "a.xml").write_text("<a/>", encoding="utf-8")
        detect_format(tmp_path / "a.xml")
    with pytest.raises(DataError, match="not one written by datasets"):
        detect_format(tmp_path)


@pytest.mark.parametrize("name, fmt, kw", [
    ("r.jsonl", None, {}),
    ("r.json", None, {}),
    ("r.json", "labelstudio", {"as_predictions": True}),
    ("r.jsonl", "spacy", {}),
    ("dataset", None, {}),
])
def test_save_then_load_every_meta_preserving_format(tmp_path, name, fmt, kw):
    records = [FROGS, Record("Nothing here.", meta={"id": "demo-2"})]
    path = save_records(records, tmp_path / name, fmt=fmt, **kw)
    load_kw = {"source": "predictions"} if kw.get("as_predictions") else {}
    assert load_records(path, fmt=fmt, **load_kw) == records
    if fmt == "spacy":
        assert detect_format(path) == "spacy"


def test_save_then_load_conll_and_markers(tmp_path):
    conll_path = save_records([FROGS], tmp_path / "r.conll")
    (back,) = load_records(conll_path)
    assert back.text == "Frogs live in ponds ." and [s.label for s in back.spans] == ["SPECIES", "HABITAT"]
    csv_path = save_records([FROGS], tmp_path / "r.csv")
    (pair,) = load_records(csv_path, head_label="SPECIES", tail_label="HABITAT")
    assert (pair.text, pair.spans, pair.relations) == (FROGS.text, FROGS.spans, FROGS.relations)


def test_hf_directory_is_never_overwritten(tmp_path):
    from adaptlab.errors import AdaptlabError

    save_records([FROGS], tmp_path / "ds")
    assert detect_format(tmp_path / "ds") == "hf"
    with pytest.raises(AdaptlabError, match="already exists"):
        save_records([FROGS], tmp_path / "ds")


def test_hf_dataset_dict_needs_a_split(tmp_path):
    from datasets import DatasetDict

    from adaptlab.data.formats.hf import records_to_dataset

    ds = records_to_dataset([FROGS])
    DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"this dataset has \['train', 'test'\]"):
        load_records(tmp_path / "dd")
    assert load_records(tmp_path / "dd", split="test") == [FROGS]


def test_spacy_jsonl_written_by_io_is_valid_json_lines(tmp_path):
    path = save_records([FROGS], tmp_path / "p.jsonl", fmt="prodigy")
    (obj,) = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert obj["relations"][0]["head"] == 0 and obj["relations"][0]["child"] == 3


def test_text_lines_end_only_at_newlines(tmp_path):
    """U+0085 (NEL), U+2028 and \\x0b inside a line are text (subj.all holds NEL), not line ends."""
    from adaptlab.data.records import read_text_lines

    path = tmp_path / "lines.txt"
    path.write_bytes("1 a\u0085b\n0 c\u2028d\x0be\r\n1 f\rg".encode())
    assert read_text_lines(path) == ["1 a\u0085b", "0 c\u2028d\x0be", "1 f", "g"]
