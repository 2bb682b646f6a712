"""Corpus reading and cleaning: every filter by its reason, every source format, readable errors."""

from __future__ import annotations

import json

import pytest

from adaptlab.config import validate_config
from adaptlab.errors import ConfigError, DataError
from adaptlab.lm.corpus import (
    CleaningConfig,
    SourceConfig,
    clean_document,
    held_out_count,
    read_and_clean,
    read_source,
    resolve_format,
    select_replay_blocks,
    split_held_out,
)

PROSE = "The central bank raised its policy rate by a quarter point to curb inflation."


def test_normalisation_control_chars_and_whitespace():
    lone_surrogate = json.loads('"\\ud800"')  # what a bad JSON escape gives
    raw = f"ＡＢＣ　１２３ rose\x00 by\u200b 5%\r\nsecond\t\t line  here\r\n\n\n   third{lone_surrogate} line\x07"
    doc = clean_document(raw, CleaningConfig(min_chars=0))
    assert doc.text == "ABC 123 rose by 5%\nsecond line here\nthird line"
    assert doc.unicode_changed and doc.control_chars_removed == 4 and doc.reason is None


def test_cleaning_steps_can_be_turned_off():
    cfg = CleaningConfig(unicode_form=None, remove_control_chars=False, normalize_whitespace=False, min_chars=0,
                         min_alpha_fraction=0)
    doc = clean_document("ＡＢＣ  x\x00\n\n  y", cfg)
    # Blank lines always go (they separate documents in the held-out text files).
    assert doc.text == "ＡＢＣ  x\x00\n  y"
    assert not doc.unicode_changed and doc.control_chars_removed == 0


@pytest.mark.parametrize(("raw", "overrides", "reason"), [
    ("  \n\t\n", {}, "empty"),
    ("We use cookies on this site.\nAccept all cookies\n" + PROSE, {}, "boilerplate"),
    ("same line\nsame line\nsame line\n" + PROSE, {}, "repeated_lines"),
    ("short text", {}, "too_few_chars"),
    (PROSE, {"max_chars": 20}, "too_many_chars"),
    (PROSE, {"min_words": 50}, "too_few_words"),
    (PROSE, {"max_words": 5}, "too_many_words"),
    ("1,234,567 | 2,345,678 | 3,456,789 | ab", {}, "too_few_alphabetic"),
])
def test_each_filter_names_its_reason(raw, overrides, reason):
    assert clean_document(raw, CleaningConfig(**overrides)).reason == reason


def test_boilerplate_lines_are_removed_from_kept_documents_and_counted():
    raw = f"{PROSE}\nSubscribe to our newsletter!\n{PROSE.replace('quarter', 'half')}"
    doc = clean_document(raw, CleaningConfig())
    assert doc.reason is None and doc.boilerplate_lines_removed == 1
    assert "Subscribe" not in doc.text and doc.text.count("\n") == 1


def test_long_prose_lines_are_never_boilerplate():
    line = "Analysts said the firm's cookie policy change " + "had wide effects on advertising revenue " * 6
    doc = clean_document(line, CleaningConfig())
    assert doc.reason is None and doc.boilerplate_lines_removed == 0


def test_japanese_text_passes_default_filters():
    doc = clean_document("日本銀行は政策金利を据え置いた。市場では円安が進んだ。", CleaningConfig())
    assert doc.reason is None


def test_cleaning_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="boilerplate_patterns"):
        validate_config(CleaningConfig, {"boilerplate_patterns": ["(unclosed"]})
    with pytest.raises(ConfigError, match="max_chars"):
        validate_config(CleaningConfig, {"min_chars": 100, "max_chars": 10})
    with pytest.raises(ConfigError, match="unknown key 'min_lenght'"):
        validate_config(CleaningConfig, {"min_lenght": 3})


def test_text_sources_by_paragraph_by_file_and_folder(tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("second file\n", encoding="utf-8")
    (folder / "sub" / "a.txt").write_text("one\nline two\n\n\nthree\n", encoding="utf-8")
    (folder / "ignored.md").write_text("not text", encoding="utf-8")
    by_paragraph = list(read_source(SourceConfig(name="t", path=str(folder))))
    assert by_paragraph == ["second file", "one\nline two", "three"]
    by_file = list(read_source(SourceConfig(name="t", path=str(folder / "sub" / "a.txt"), documents="file")))
    assert by_file == ["one\nline two\n\n\nthree"]


def test_jsonl_source_with_custom_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"body": "first"}) + "\n\n" + json.dumps({"body": "second"}) + "\n")
    source = SourceConfig(name="c", path=str(path), text_field="body")
    assert resolve_format(source) == "jsonl"
    assert list(read_source(source)) == ["first", "second"]


@pytest.mark.parametrize(("content", "message"), [
    ('{"text": "ok"}\n{"text": broken}\n', r"c\.jsonl:2: invalid JSON"),
    ('{"text": "ok"}\n{"body": "x", "id": 1}\n', r"c\.jsonl:2: no 'text' field \(keys: body, id\)"),
    ('{"text": 5}\n', r"c\.jsonl:1: field 'text' must be a string"),
    ('["text"]\n', r"c\.jsonl:1: expected a JSON object"),
])
def test_bad_jsonl_lines_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "c.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        list(read_source(SourceConfig(name="c", path=str(path))))


def test_missing_source_names_it(tmp_path):
    with pytest.raises(DataError, match=r"source 'fin': file or folder not found"):
        list(read_source(SourceConfig(name="fin", path=str(tmp_path / "nope.jsonl"))))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no \\*.txt files"):
        list(read_source(SourceConfig(name="fin", path=str(tmp_path / "empty"))))


def test_hf_dataset_sources(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"content": ["a doc", "b doc"]}).save_to_disk(str(tmp_path / "single"))
    single = SourceConfig(name="hf", path=str(tmp_path / "single"), text_field="content")
    assert resolve_format(single) == "hf" and list(read_source(single)) == ["a doc", "b doc"]

    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["t"]}),
                                   "test": datasets.Dataset.from_dict({"text": ["x", "y"]})})
    splits.save_to_disk(str(tmp_path / "dict"))
    assert list(read_source(SourceConfig(name="hf", path=str(tmp_path / "dict")))) == ["t"]
    assert list(read_source(SourceConfig(name="hf", path=str(tmp_path / "dict"), split="test"))) == ["x", "y"]
    with pytest.raises(DataError, match="has no split 'dev' \\(splits: train, test\\)"):
        list(read_source(SourceConfig(name="hf", path=str(tmp_path / "dict"), split="dev")))
    with pytest.raises(DataError, match="has no column 'text' \\(columns: content\\)"):
        list(read_source(SourceConfig(name="hf", path=str(tmp_path / "single"))))


def test_read_and_clean_accounts_for_every_document(tmp_path):
    path = tmp_path / "c.jsonl"
    texts = [PROSE, "tiny", "", "We use cookies.", PROSE + " Again."]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    kept, stats = read_and_clean(SourceConfig(name="c", path=str(path)), CleaningConfig())
    assert len(kept) == 2
    assert stats.documents_read == 5 and stats.kept == 2
    assert dict(stats.filtered) == {"too_few_chars": 1, "empty": 1, "boilerplate": 1}
    assert stats.examples["too_few_chars"] == ["tiny"]


def test_held_out_split_is_seeded_and_disjoint():
    assert held_out_count(1000, 0.01, None) == 10
    assert held_out_count(20, 0.01, None) == 1
    assert held_out_count(20, 0.01, 4) == 4
    train, held_out = split_held_out(50, 5, "0-domain")
    assert len(held_out) == 5 and not set(train) & set(held_out) and sorted(train + held_out) == list(range(50))
    assert split_held_out(50, 5, "0-domain") == (train, held_out)
    assert split_held_out(50, 5, "1-domain")[1] != held_out


def test_replay_subsamples_to_the_ratio():
    lengths = [100] * 50  # 5000 general tokens available
    chosen, info = select_replay_blocks(lengths, domain_tokens=9000, ratio=0.1, seed=0)
    assert info["mode"] == "subsample" and info["target_tokens"] == 1000
    assert len(chosen) == 10 and len(set(chosen)) == 10
    assert info["ratio_achieved"] == pytest.approx(0.1)
    assert select_replay_blocks(lengths, 9000, 0.1, seed=0)[0] == chosen
    assert select_replay_blocks(lengths, 9000, 0.1, seed=1)[0] != chosen


def test_replay_repeats_scarce_general_blocks():
    chosen, info = select_replay_blocks([100, 100, 50], domain_tokens=750, ratio=0.5, seed=0)
    # target 750 general tokens from 250 available: every block 3 times.
    assert info["mode"] == "repeat" and info["full_repeats"] == 3
    assert sorted(chosen) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert info["general_tokens_used"] == 750 and info["ratio_achieved"] == pytest.approx(0.5)


def test_replay_off():
    chosen, info = select_replay_blocks([100, 100], domain_tokens=500, ratio=0.0, seed=0)
    assert chosen == [] and info["mode"] == "off" and info["ratio_achieved"] == 0.0
