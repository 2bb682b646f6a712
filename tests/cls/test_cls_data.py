"""Reading classification examples: every format, multi-label, and every malformed input named by file:line."""

from __future__ import annotations

import pytest

from adaptlab.data.classification import Example, check_known_labels, label_set, read_examples, texts_to_classify
from adaptlab.data.splits import split_dev
from adaptlab.errors import DataError


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def pairs(examples: list[Example]) -> list[tuple[str, list[str], int]]:
    return [(e.text, e.labels, e.line) for e in examples]


def test_jsonl_single_label(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"text": "great phone", "label": "pos"}\n\n{"text": "broke", "label": 0}\n')
    assert pairs(read_examples(path)) == [("great phone", ["pos"], 1), ("broke", ["0"], 3)]


def test_json_suffix_is_read_as_jsonl_and_columns_are_chosen(tmp_path):
    path = write(tmp_path, "d.json", '{"sentence": "great", "y": "pos", "id": 1}\n')
    assert pairs(read_examples(path, text_column="sentence", label_column="y")) == [("great", ["pos"], 1)]


def test_csv_and_tsv_with_header(tmp_path):
    csv_path = write(tmp_path, "d.csv", 'id,text,label\n1,"good, really",pos\n2,"two\nlines",neg\n3,bad,neg\n')
    assert pairs(read_examples(csv_path)) == [("good, really", ["pos"], 2), ("two\nlines", ["neg"], 4),
                                             ("bad", ["neg"], 5)]
    tsv_path = write(tmp_path, "d.tsv", "label\ttext\npos\tgood, really\n")
    assert pairs(read_examples(tsv_path)) == [("good, really", ["pos"], 2)]


def test_label_text_lines_of_the_fewshot_files(tmp_path):
    path = write(tmp_path, "d.all", "1 this is great\n\n0 it do n't work , sadly\n")
    assert pairs(read_examples(path)) == [("this is great", ["1"], 1), ("it do n't work , sadly", ["0"], 3)]
    assert pairs(read_examples(write(tmp_path, "d.jsonl.txt", "a x\n"), format="label-text")) == [("x", ["a"], 1)]


def test_multi_label_jsonl_csv_and_lines(tmp_path):
    jsonl = write(tmp_path, "m.jsonl", '{"text": "a", "label": ["b", "a", "b"]}\n{"text": "c", "label": []}\n'
                                       '{"text": "d", "label": "solo"}\n')
    assert pairs(read_examples(jsonl, multi_label=True)) == [("a", ["a", "b"], 1), ("c", [], 2), ("d", ["solo"], 3)]
    csv_path = write(tmp_path, "m.csv", "text,label\nboth,sport|food\nnone,\none,food\n")
    assert pairs(read_examples(csv_path, multi_label=True)) == [("both", ["food", "sport"], 2), ("none", [], 3),
                                                                ("one", ["food"], 4)]
    lines = write(tmp_path, "m.txt", "x|y some text\n")
    assert pairs(read_examples(lines, multi_label=True)) == [("some text", ["x", "y"], 1)]


def test_explicit_format_overrides_the_suffix(tmp_path):
    path = write(tmp_path, "data.txt", "text,label\nfine,pos\n")
    assert pairs(read_examples(path, format="csv")) == [("fine", ["pos"], 2)]
    with pytest.raises(DataError, match="unknown classification format 'xml'"):
        read_examples(path, format="xml")


@pytest.mark.parametrize("name, content, message, line", [
    ("d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "x"\n', "invalid JSON", 2),
    ("d.jsonl", '["a", "x"]\n', "expected a JSON object per line, got list", 1),
    ("d.jsonl", '{"text": "  ", "label": "x"}\n', "empty text", 1),
    ("d.jsonl", '{"text": "a", "label": ""}\n', "empty label", 1),
    ("d.jsonl", '{"text": "a", "label": null}\n', "a label must be a string", 1),
    ("d.jsonl", '{"text": 3, "label": "x"}\n', "the text must be a string, got int", 1),
    ("d.jsonl", '{"text": "a", "label": ["x", "y"]}\n', "2 labels .* set multi_label: true", 1),
    ("d.jsonl", '{"txt": "a", "label": "x"}\n', r"no 'text' key \(the object has \['label', 'txt'\]\)", 1),
    ("d.csv", "text,label\na,x\nb,x,extra\n", "3 fields, but the header has 2", 3),
    ("d.csv", 'text,label\n"a"b,x\n', "malformed row", 2),
    ("d.csv", "text,label\n,x\n", "empty text", 2),
    ("d.csv", "text,label\na,\n", "empty label", 2),
    ("d.csv", "sentence,label\na,x\n", r"no column 'text'; the header has \['sentence', 'label'\]", 1),
    ("d.tsv", "text\tlabel\na\tx|y\n", "2 labels", 2),
    ("d.txt", "1 fine\n0\n", "expected 'LABEL TEXT', got only '0'", 2),
])
def test_malformed_input_names_file_and_line(tmp_path, name, content, message, line):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError, match=message) as info:
        read_examples(path)
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_missing_empty_and_unlabelled_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_examples(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="file is empty"):
        read_examples(write(tmp_path, "e.txt", "\n\n"))
    with pytest.raises(DataError, match="holds no examples"):
        read_examples(write(tmp_path, "h.csv", "text,label\n"))


def test_label_order_and_unknown_labels():
    examples = [Example("t", [label], 1) for label in ["10", "b", "2", "-1", "a"]]
    assert label_set(examples) == ["-1", "2", "10", "a", "b"]
    with pytest.raises(DataError, match=r"the dev data has the labels \['c'\].*it has \['a', 'b'\]"):
        check_known_labels([Example("t", ["c"], 1), Example("u", ["a"], 2)], ["a", "b"], "the dev data")


def test_texts_to_classify_for_prediction(tmp_path):
    assert texts_to_classify(write(tmp_path, "t.jsonl", '{"text": "a"}\n{"text": "b", "label": "x"}\n')) == ["a", "b"]
    assert texts_to_classify(write(tmp_path, "t.csv", "id,body\n1,hello\n"), text_column="body") == ["hello"]
    assert texts_to_classify(write(tmp_path, "t.txt", "one text\n\n1 another\n")) == ["one text", "1 another"]


def test_split_dev_keeps_class_proportions():
    examples = [Example(f"a{i}", ["a"], i) for i in range(20)] + [Example(f"b{i}", ["b"], i) for i in range(10)]
    examples.append(Example("rare", ["c"], 99))
    train, dev = split_dev(examples, 0.2, seed=1, stratum=lambda e: tuple(e.labels))
    assert sorted(e.labels[0] for e in dev) == ["a"] * 4 + ["b"] * 2  # round(0.2 * 20), round(0.2 * 10), none of 1
    assert len(train) + len(dev) == len(examples) and "rare" in {e.text for e in train}
    # without strata, the old behaviour: round(0.2 * 31) = 6 keys, whatever their labels
    assert len(split_dev(examples, 0.2, seed=1)[1]) == 6
    tiny = [Example("x", ["a"], 1), Example("y", ["b"], 2)]
    assert len(split_dev(tiny, 0.1, seed=0, stratum=lambda e: tuple(e.labels))[1]) == 1  # at least one

