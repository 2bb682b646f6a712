"""Round trips between the canonical record and every outside format.

Two directions for each format: records -> format -> records gives the same records, and a
hand-written sample in the format -> records -> format gives the same file (up to what the format
itself leaves open, such as Label Studio's opaque region ids).
"""

from __future__ import annotations

import json

import pytest

from adaptlab.data.formats import conll, hf, labelstudio, markers, spacy_jsonl
from adaptlab.data.records import Record, Relation, Span, read_records, write_records

FROGS = Record(
    text="Frogs live in ponds.",
    spans=[Span(0, 5, "SPECIES"), Span(14, 19, "HABITAT")],
    relations=[Relation(0, 1, "live_in")],
    meta={"id": "demo-1"},
)
# Tail before head, quotes, an emoji (UTF-16 pitfalls), nested spans and a list in meta.
BEETLE = Record(
    text='In "dung" 🐞 pats the scarab beetle breeds.',
    spans=[Span(28, 34, "SPECIES"), Span(4, 8, "HABITAT"), Span(21, 34, "SPECIES")],
    relations=[Relation(2, 1, "breed_by")],
    meta={"id": "demo-2", "tags": ["a", "b"], "score": 0.5},
)
PLAIN = Record(text="No entities here.", meta={})
SAMPLES = [FROGS, PLAIN]


def without_source(records: list[Record]) -> list[Record]:
    """Formats that cannot carry meta add ``meta["source"]`` (file:line); compare without it."""
    return [Record(r.text, r.spans, r.relations, {k: v for k, v in r.meta.items() if k != "source"})
            for r in records]


def test_samples_are_consistent():
    for record in (FROGS, BEETLE, PLAIN):
        record.validate(allow_overlaps=True)
    assert BEETLE.span_text(BEETLE.spans[2]) == "scarab beetle"
    assert BEETLE.span_text(BEETLE.spans[1]) == "dung"


# --- canonical JSONL -------------------------------------------------------------------------

def test_jsonl_round_trip(tmp_path):
    path = write_records([FROGS, PLAIN], tmp_path / "r.jsonl")
    assert read_records(path) == [FROGS, PLAIN]
    again = write_records(read_records(path), tmp_path / "again.jsonl")
    assert again.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


# --- Label Studio ----------------------------------------------------------------------------

@pytest.mark.parametrize("as_predictions", [False, True])
def test_labelstudio_records_round_trip(tmp_path, as_predictions):
    path = labelstudio.write_labelstudio([FROGS, BEETLE, PLAIN], tmp_path / "ls.json", as_predictions)
    source = "predictions" if as_predictions else "annotations"
    back = labelstudio.read_labelstudio(path, source=source, allow_overlaps=True)
    assert back == [FROGS, BEETLE, PLAIN]


def test_labelstudio_writer_is_stable_and_shaped_for_import(tmp_path):
    first = labelstudio.write_labelstudio([FROGS], tmp_path / "a.json").read_text(encoding="utf-8")
    second = labelstudio.write_labelstudio([PLAIN, FROGS], tmp_path / "b.json").read_text(encoding="utf-8")
    task = json.loads(first)[0]
    assert task["data"] == {"text": "Frogs live in ponds.", "id": "demo-1"}
    result = task["annotations"][0]["result"]
    assert [r["type"] for r in result] == ["labels", "labels", "relation"]
    assert result[0]["value"] == {"start": 0, "end": 5, "text": "Frogs", "labels": ["SPECIES"]}
    assert (result[0]["from_name"], result[0]["to_name"]) == ("label", "text")
    assert result[2] == {"type": "relation", "from_id": result[0]["id"], "to_id": result[1]["id"],
                         "direction": "right", "labels": ["live_in"]}
    # Same record, same region ids, whatever else is in the file.
    assert json.loads(second)[1]["annotations"][0]["result"] == result


def test_labelstudio_predictions_carry_model_version(tmp_path):
    path = labelstudio.write_labelstudio([FROGS], tmp_path / "p.json", as_predictions=True,
                                         from_name="ner", to_name="doc", model_version="teacher-v1")
    task = json.loads(path.read_text(encoding="utf-8"))[0]
    assert "annotations" not in task
    assert task["predictions"][0]["model_version"] == "teacher-v1"
    assert task["predictions"][0]["result"][0]["from_name"] == "ner"
    back = labelstudio.read_labelstudio(path, source="predictions")[0]
    assert back.meta["labelstudio"] == {"model_version": "teacher-v1"}
    assert back.spans == FROGS.spans and back.relations == FROGS.relations


LS_SAMPLE = [
    {
        "data": {"text": "Frogs live in ponds.", "source": "field notes"},
        "annotations": [{"result": [
            {"id": "r1", "from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": 0, "end": 5, "text": "Frogs", "labels": ["SPECIES"]}},
            {"id": "r2", "from_name": "label", "to_name": "text", "type": "labels",
             "value": {"start": 14, "end": 19, "text": "ponds", "labels": ["HABITAT"]}},
            {"type": "relation", "from_id": "r1", "to_id": "r2", "direction": "right", "labels": ["live_in"]},
            {"id": "c1", "from_name": "quality", "to_name": "text", "type": "choices",
             "value": {"choices": ["good"]}},
        ]}],
    },
    {"data": {"text": "Nothing to see."}, "annotations": [{"result": []}]},
]


def _normalise_region_ids(tasks: list[dict]) -> list[dict]:
    """Region ids are opaque; replace each by its position so two exports can be compared."""
    tasks = json.loads(json.dumps(tasks))
    for task in tasks:
        for block in task.get("annotations", []) + task.get("predictions", []):
            regions = [r for r in block["result"] if r.get("type") == "labels"]
            names = {r["id"]: f"region-{i}" for i, r in enumerate(regions)}
            for r in block["result"]:
                if r.get("type") == "labels":
                    r["id"] = names[r["id"]]
                elif r.get("type") == "relation":
                    r["from_id"], r["to_id"] = names[r["from_id"]], names[r["to_id"]]
    return tasks


def test_labelstudio_sample_round_trip(tmp_path):
    src = tmp_path / "export.json"
    src.write_text(json.dumps(LS_SAMPLE), encoding="utf-8")
    records = labelstudio.read_labelstudio(src)
    assert records[0].spans == [Span(0, 5, "SPECIES"), Span(14, 19, "HABITAT")]
    assert records[0].relations == [Relation(0, 1, "live_in")]
    assert records[0].meta["source"] == "field notes"
    out = labelstudio.write_labelstudio(records, tmp_path / "out.json")
    written = json.loads(out.read_text(encoding="utf-8"))
    assert _normalise_region_ids(written) == _normalise_region_ids(LS_SAMPLE)


# --- spaCy / Prodigy JSONL -------------------------------------------------------------------

def test_spacy_records_round_trip(tmp_path):
    path = spacy_jsonl.write_spacy_jsonl([FROGS, BEETLE, PLAIN], tmp_path / "s.jsonl")
    assert spacy_jsonl.read_spacy_jsonl(path, allow_overlaps=True) == [FROGS, BEETLE, PLAIN]


SPACY_SAMPLE = {
    "text": "Frogs live in ponds.",
    "tokens": [
        {"text": "Frogs", "start": 0, "end": 5, "id": 0, "ws": True},
        {"text": "live", "start": 6, "end": 10, "id": 1, "ws": True},
        {"text": "in", "start": 11, "end": 13, "id": 2, "ws": True},
        {"text": "ponds", "start": 14, "end": 19, "id": 3, "ws": False},
        {"text": ".", "start": 19, "end": 20, "id": 4, "ws": False},
    ],
    "spans": [
        {"start": 0, "end": 5, "token_start": 0, "token_end": 0, "label": "SPECIES"},
        {"start": 14, "end": 19, "token_start": 3, "token_end": 3, "label": "HABITAT"},
    ],
    "relations": [{
        "head": 0, "child": 3, "label": "live_in",
        "head_span": {"start": 0, "end": 5, "token_start": 0, "token_end": 0, "label": "SPECIES"},
        "child_span": {"start": 14, "end": 19, "token_start": 3, "token_end": 3, "label": "HABITAT"},
    }],
    "meta": {"source": "notes"},
    "answer": "accept",
    "_input_hash": 123,
    "_task_hash": -456,
}


def test_spacy_sample_round_trip(tmp_path):
    src = tmp_path / "prodigy.jsonl"
    src.write_text(json.dumps(SPACY_SAMPLE) + "\n", encoding="utf-8")
    records = spacy_jsonl.read_spacy_jsonl(src)
    assert records[0].relations == [Relation(0, 1, "live_in")]
    assert records[0].meta["spacy_extra"] == {"answer": "accept", "_input_hash": 123, "_task_hash": -456}
    out = spacy_jsonl.write_spacy_jsonl(records, tmp_path / "out.jsonl")
    assert json.loads(out.read_text(encoding="utf-8")) == SPACY_SAMPLE


def test_spacy_relation_matches_spans_by_offsets_not_position():
    obj = {"text": "ab cd",
           "spans": [{"start": 3, "end": 5, "label": "Y"}, {"start": 0, "end": 2, "label": "X"}],
           "relations": [{"head": 0, "child": 1, "label": "r",
                          "head_span": {"start": 0, "end": 2}, "child_span": {"start": 3, "end": 5}}]}
    assert spacy_jsonl.object_to_record(obj).relations == [Relation(1, 0, "r")]


# --- entity markers --------------------------------------------------------------------------

def test_markers_csv_records_round_trip(tmp_path):
    records = [
        markers.record_from_marked("[E1]Frogs[/E1] live in [E2]ponds[/E2].", "live_in", "SPECIES", "HABITAT"),
        markers.record_from_marked('In [E2]"dung" pats[/E2] the [E1]scarab[/E1] breeds.', "breed_by",
                                   "SPECIES", "BREEDING"),
    ]
    path = markers.write_marked_csv(records, tmp_path / "re.csv")
    back = markers.read_marked_csv(path, head_label="SPECIES",
                                   tail_label={"live_in": "HABITAT", "breed_by": "BREEDING"})
    assert without_source(back) == records
    assert back[1].meta["source"] == f"{path}:3"


def test_markers_csv_reads_standard_csv_quoting(tmp_path):
    """What Python's csv.writer (and spreadsheets) write: quotes only around fields that need them."""
    import csv

    path = tmp_path / "re.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sentence", "label"])
        writer.writerow(["[E1]Frogs[/E1] live in [E2]ponds[/E2].", "live_in"])
        writer.writerow(['[E1]Toads[/E1], they say, eat [E2]"dung" beetles[/E2]', "feed_on"])
    records = markers.read_marked_csv(path)
    assert [r.relations[0].label for r in records] == ["live_in", "feed_on"]
    assert records[1].text == 'Toads, they say, eat "dung" beetles'
    assert records[1].span_text(records[1].spans[1]) == '"dung" beetles'


def test_markers_csv_sample_round_trip(tmp_path):
    sample = (
        '"Sentence","Label"\n'
        '"[E1]Frogs[/E1] live in [E2]ponds[/E2].","live_in"\n'
        '"[E2]Beetles[/E2] are eaten by [E1]""toads""[/E1]","feed_on"\n'
    )
    src = tmp_path / "sample.csv"
    src.write_text(sample, encoding="utf-8")
    records = markers.read_marked_csv(src)
    assert records[1].text == 'Beetles are eaten by "toads"'
    assert records[1].span_text(records[1].spans[0]) == '"toads"'
    out = markers.write_marked_csv(records, tmp_path / "out.csv")
    assert out.read_text(encoding="utf-8") == sample


def test_markers_tsv_round_trip(tmp_path):
    records = [markers.record_from_marked("[E1]Frogs[/E1] live in [E2]ponds[/E2].", "live_in")]
    path = markers.write_marked_tsv(records, tmp_path / "re.tsv")
    assert path.read_text(encoding="utf-8") == "[E1]Frogs[/E1] live in [E2]ponds[/E2].\tlive_in\n"
    assert without_source(markers.read_marked_tsv(path)) == records


# --- Hugging Face datasets -------------------------------------------------------------------

def test_hf_records_round_trip():
    ds = hf.records_to_dataset([FROGS, BEETLE, PLAIN])
    assert ds.column_names == ["text", "spans", "relations", "meta"]
    assert ds[0]["spans"] == [{"start": 0, "end": 5, "label": "SPECIES"},
                              {"start": 14, "end": 19, "label": "HABITAT"}]
    assert ds[0]["relations"] == [{"head": 0, "tail": 1, "label": "live_in"}]
    assert json.loads(ds[1]["meta"]) == BEETLE.meta
    assert hf.dataset_to_records(ds) == [FROGS, BEETLE, PLAIN]


def test_hf_dataset_round_trip_via_disk(tmp_path):
    ds = hf.records_to_dataset([FROGS, PLAIN])
    hf.write_hf(hf.dataset_to_records(ds), tmp_path / "ds")
    assert hf.read_hf(tmp_path / "ds") == [FROGS, PLAIN]
    assert hf.records_to_dataset(hf.read_hf(tmp_path / "ds")).to_dict() == ds.to_dict()


def test_hf_conll_style_class_labels_and_strings():
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    names = ["O", "B-PER", "I-PER", "B-LOC"]
    features = Features({"id": Value("string"), "tokens": Sequence(Value("string")),
                         "pos_tags": Sequence(Value("int32")), "ner_tags": Sequence(ClassLabel(names=names))})
    ds = Dataset.from_dict({"id": ["0"], "tokens": [["Ann", "Lee", "visits", "Oslo"]],
                            "pos_tags": [[1, 1, 2, 1]], "ner_tags": [[1, 2, 0, 3]]}, features=features)
    (record,) = hf.dataset_to_records(ds)
    assert record.text == "Ann Lee visits Oslo"
    assert record.spans == [Span(0, 7, "PER"), Span(15, 19, "LOC")]
    assert record.meta == {"id": "0"}
    as_strings = Dataset.from_dict({"tokens": [["Oslo", "."]], "ner_tags": [["B-LOC", "O"]]})
    assert hf.dataset_to_records(as_strings)[0].spans == [Span(0, 4, "LOC")]
    plain_ints = Dataset.from_dict({"tokens": [["Oslo"]], "ner_tags": [[3]]})
    assert hf.dataset_to_records(plain_ints, tag_names=names)[0].spans == [Span(0, 4, "LOC")]


# --- CoNLL / BIO -----------------------------------------------------------------------------

def test_conll_records_round_trip(tmp_path):
    tokenised = Record("Frogs live in ponds .", [Span(0, 5, "SPECIES"), Span(14, 19, "HABITAT")])
    path = conll.write_conll([tokenised, Record("Nothing here", [])], tmp_path / "r.conll")
    back = conll.read_conll(path)
    assert without_source(back) == [tokenised, Record("Nothing here", [])]


IOB2_SAMPLE = (
    "Green\tB-SPECIES\nfrogs\tI-SPECIES\nlive\tO\nin\tO\nponds\tB-HABITAT\n.\tO\n"
    "\n"
    "Toads\tB-SPECIES\n"
)


def test_conll_sample_round_trip(tmp_path):
    src = tmp_path / "in.conll"
    src.write_text(IOB2_SAMPLE, encoding="utf-8")
    out = conll.write_conll(conll.read_conll(src), tmp_path / "out.conll")
    assert out.read_text(encoding="utf-8") == IOB2_SAMPLE


@pytest.mark.parametrize("scheme, tags", [
    ("IOB1", ["I-SPECIES", "I-SPECIES", "O", "O", "I-HABITAT", "O"]),
    ("IOBES", ["B-SPECIES", "E-SPECIES", "O", "O", "S-HABITAT", "O"]),
    ("BILOU", ["B-SPECIES", "L-SPECIES", "O", "O", "U-HABITAT", "O"]),
    ("bare", ["SPECIES", "SPECIES", "O", "O", "HABITAT", "O"]),
])
def test_conll_reads_other_schemes_and_writes_iob2(tmp_path, scheme, tags):
    words = ["Green", "frogs", "live", "in", "ponds", "."]
    src = tmp_path / f"{scheme}.bio"
    # Mixed separators: a tab and a run of spaces are both accepted.
    pairs = enumerate(zip(words, tags, strict=True))
    src.write_text("".join(f"{w}{'   ' if i % 2 else chr(9)}{t}\n" for i, (w, t) in pairs), encoding="utf-8")
    (record,) = conll.read_conll(src)
    assert record.spans == [Span(0, 11, "SPECIES"), Span(20, 25, "HABITAT")]
    out = conll.write_conll([record], tmp_path / "out.conll")
    assert out.read_text(encoding="utf-8") == IOB2_SAMPLE.split("\n\n")[0] + "\n"


def test_conll_iob1_b_separates_adjacent_spans(tmp_path):
    src = tmp_path / "iob1.conll"
    src.write_text("Ann I-PER\nBob B-PER\nsing O\n", encoding="utf-8")
    (record,) = conll.read_conll(src)
    assert record.spans == [Span(0, 3, "PER"), Span(4, 7, "PER")]
    out = conll.write_conll([record], tmp_path / "out.conll")
    assert out.read_text(encoding="utf-8") == "Ann\tB-PER\nBob\tB-PER\nsing\tO\n"
