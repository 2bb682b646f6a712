"""The generic bag JSONL format: splitting with offsets, round trips, counts and every bad-input error."""

from __future__ import annotations

import json

import pytest

from adaptlab.errors import DataError
from adaptlab.fractal.bags import Bag, PairBag, Response, describe_bags, read_bags, split_sentences, write_bags


def write_lines(path, *records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_split_sentences_offsets_slice_the_text_exactly():
    text = "  Mr. Smith went to Washington D.C. on Monday!   He said hi.\n\nHe said hi.  "
    split = split_sentences(text)
    assert [s for s, _, _ in split] == ["Mr. Smith went to Washington D.C. on Monday!", "He said hi.", "He said hi."]
    for sentence, start, end in split:
        assert text[start:end] == sentence
    assert split[1][1] < split[2][1]  # a repeated sentence is located after the previous one, not at its first copy
    assert split_sentences("   \n ") == []


def test_read_response_and_sentences_records(tmp_path):
    path = write_lines(
        tmp_path / "bags.jsonl",
        {"id": "r1", "context": "Who sang?", "response": "Dave sang. Nobody else did.", "label": 1,
         "sentence_labels": [1, 0], "group": "q1"},
        "",
        {"id": "r2", "context": None, "sentences": ["It rained.", "Yes."], "label": 0.25},
        {"id": "p1", "context": "Who sang?", "a": "Dave sang.", "b": ["It rained.", "Yes."], "preference": 0.5,
         "group": "q1"},
    )
    bags, pairs = read_bags(path)
    first, second = bags
    assert first.sentences == ["Dave sang.", "Nobody else did."]
    assert [first.response[s:e] for s, e in first.offsets] == first.sentences
    assert first.sentence_labels == [1.0, 0.0] and first.label == 1.0 and first.group == "q1"
    assert second.offsets is None and second.response is None and second.context is None and second.label == 0.25
    (pair,) = pairs
    assert pair.a.sentences == ["Dave sang."] and pair.a.offsets == [(0, 10)]
    assert pair.b.sentences == ["It rained.", "Yes."] and pair.b.offsets is None
    assert pair.preference == 0.5 and pair.group == "q1"


def test_write_then_read_round_trips_exactly(tmp_path):
    text = "First one. Second one!  Third?"
    split = split_sentences(text)
    bag = Bag(id="b", context="ctx", sentences=[s for s, _, _ in split], offsets=[(a, b) for _, a, b in split],
              label=0.0, sentence_labels=[1.0, 0.0, 1.0], group="g", response=text)
    plain = Bag(id="c", context=None, sentences=["Only sentences."], offsets=None, label=1.0)
    pair = PairBag(id="p", context=None, a=Response(["x y."]), b=Response(["Z."], [(0, 2)], "Z."), preference=1.0)
    path = write_bags([bag, plain, pair], tmp_path / "out" / "bags.jsonl")
    bags, pairs = read_bags(path)
    assert bags == [bag, plain] and pairs == [pair]
    assert not list(path.parent.glob(".*.tmp"))


def test_describe_bags_counts():
    bags = [
        Bag("a", None, ["x.", "y."], None, 1.0, [1.0, 0.0]),
        Bag("b", None, ["z."], None, 0.0, None),
        Bag("c", None, ["w.", "v."], None, 1.0, [0.0, 1.0]),
    ]
    pairs = [PairBag("p", None, Response(["x."]), Response(["y."]), 0.5)]
    stats = describe_bags(bags, pairs)
    assert stats["bags"] == 3 and stats["sentences"] == 5 and stats["positive_bags"] == 2
    assert stats["label_distribution"] == {"0.0": 1, "1.0": 2}
    assert stats["bags_with_sentence_labels"] == 2 and stats["bags_without_sentence_labels"] == 1
    assert stats["positive_sentences"] == 2 and stats["labelled_sentences"] == 4
    assert stats["pairs"] == 1 and stats["preference_distribution"] == {"0.5": 1}


GOOD = {"id": "x1", "context": None, "response": "One. Two.", "label": 1}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"id": "x1", "context": None, "response": "   ", "label": 1}, "no sentences"),
        ({"id": "x1", "context": None, "sentences": [], "label": 1}, "no sentences"),
        ({"id": "x1", "context": None, "sentences": ["a.", " "], "label": 1}, "empty sentence"),
        ({**GOOD, "label": 1.5}, "out of range"),
        ({**GOOD, "label": -0.1}, "out of range"),
        ({**GOOD, "label": "yes"}, "must be a number"),
        ({**GOOD, "label": True}, "must be a number"),
        ({**GOOD, "sentence_labels": [1]}, "1 entries but the bag has 2 sentences"),
        ({**GOOD, "sentence_labels": [1, 2]}, "sentence_labels[1] 2 is out of range"),
        ({"id": "x1", "context": None, "response": "One.", "sentences": ["One."], "label": 1}, "exactly one of"),
        ({"id": "x1", "context": None, "label": 1}, "exactly one of"),
        ({"id": "x1", "context": None, "response": "One.", "sentences": ["One."], "offsets": [[0, 3]], "label": 1},
         "does not slice"),
        ({k: v for k, v in GOOD.items() if k != "label"}, "missing field 'label'"),
        ({k: v for k, v in GOOD.items() if k != "context"}, "missing field 'context'"),
        ({**GOOD, "labels": [1]}, "unknown field"),
        ({"id": "x1", "context": None, "a": "One.", "preference": 1}, "missing field 'b'"),
        ({"id": "x1", "context": None, "a": "One.", "b": "Two.", "preference": 2}, "out of range"),
        ({"id": "x1", "context": None, "a": "One.", "b": "", "preference": 1}, "no sentences"),
        ({"id": "x1", "context": None, "a": "One.", "b": 3, "preference": 1}, "pair side 'b'"),
    ],
)
def test_bad_records_name_file_line_and_id(tmp_path, record, expected):
    fine = {"id": "ok", "context": None, "sentences": ["Fine."], "label": 0}
    path = write_lines(tmp_path / "bad.jsonl", fine, record)
    with pytest.raises(DataError) as err:
        read_bags(path)
    message = str(err.value)
    assert message.startswith(f"{path}:2: record 'x1': "), message
    assert expected in message
    assert err.value.line == 2


def test_missing_id_malformed_json_and_duplicates(tmp_path):
    with pytest.raises(DataError, match=r"bad\.jsonl:1: .*missing field 'id'"):
        read_bags(write_lines(tmp_path / "bad.jsonl", {"context": None, "response": "One.", "label": 1}))
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        read_bags(write_lines(tmp_path / "bad.jsonl", GOOD, '{"id": "x2", '))
    with pytest.raises(DataError, match=r"bad\.jsonl:3: record 'x1': duplicate id \(first used on line 1\)"):
        read_bags(write_lines(tmp_path / "bad.jsonl", GOOD, {**GOOD, "id": "x2"},
                              {"id": "x1", "context": None, "a": "A.", "b": "B.", "preference": 0}))
    with pytest.raises(DataError, match="JSON object"):
        read_bags(write_lines(tmp_path / "bad.jsonl", "[1, 2]"))
    with pytest.raises(DataError, match="file not found"):
        read_bags(tmp_path / "missing.jsonl")
