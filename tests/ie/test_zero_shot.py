"""Zero-shot NER with a teacher over HTTP: both prompts, string-to-span mapping, scores, student side by side."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from adaptlab.data.records import Record, Span, write_records
from adaptlab.ie import zero_shot as zs
from adaptlab.teacher.stub_server import StubServer

GOLD = [
    Record("Otters eat fish and crabs in cold rivers.",
           [Span(0, 6, "SPECIES"), Span(11, 15, "FEEDING"), Span(20, 25, "FEEDING"), Span(29, 40, "HABITAT")]),
    Record("The kakapo eats fruit; fruit is plentiful.", [Span(4, 10, "SPECIES"), Span(16, 21, "FEEDING")]),
]
QUERIES = {"species": "SPECIES", "feeding": "FEEDING", "habitat": "HABITAT"}


def gold_strings(text: str, label: str) -> list[str]:
    record = next(r for r in GOLD if r.text == text)
    return [record.span_text(s) for s in record.spans if s.label == label]


def universalner_teacher(body: dict) -> str:
    """Perfect on every type, except that it answers HABITAT questions with a string not in the text."""
    messages = body["messages"]
    text = messages[1]["content"].removeprefix("Text: ")
    asked = re.search(r"What describes (.+) in the text\?", messages[-1]["content"]).group(1)
    label = QUERIES[asked]
    return json.dumps(["the ocean"] if label == "HABITAT" else gold_strings(text, label))


def json_spans_teacher(body: dict) -> str:
    text = re.search(r"Text: (.+)\n", body["messages"][-1]["content"]).group(1)
    entities = [{"text": s, "type": label} for label in QUERIES.values() for s in gold_strings(text, label)]
    answer = json.dumps({"entities": entities[:-1] + [{"text": "CRABS", "type": "X"}]})
    return f"Here you go:\n```json\n{answer}\n```"


def config(tmp_path, base_url: str, prompt: str):
    path = tmp_path / "zs.yaml"
    path.write_text(yaml.safe_dump({
        "prompt": prompt, "queries": {v: k for k, v in QUERIES.items()}, "progress": False,
        "teacher": {"backend": "openai", "base_url": base_url, "cache_path": str(tmp_path / "cache.sqlite")},
    }))
    write_records(GOLD, tmp_path / "gold.jsonl")
    return path


def test_universalner_prompt_scores_each_type(tmp_path, run_cli):
    with StubServer(universalner_teacher) as server:
        code, out, err = run_cli("teacher", "zero-shot-ner", config(tmp_path, server.base_url, "universalner"),
                                 "--data", tmp_path / "gold.jsonl", "--output", tmp_path / "run", "--json")
        assert code == 0, err
        assert server.stats.received == len(GOLD) * 3
    metrics = json.loads(out)
    strict = metrics["teacher"]["strict"]["per_type"]
    assert strict["SPECIES"]["f1"] == 1.0 and strict["FEEDING"]["f1"] == 1.0
    assert strict["HABITAT"]["recall"] == 0.0
    assert metrics["answers"]["unaligned"] == 2  # "the ocean", asked once per text
    assert metrics["teacher"]["string"]["per_type"]["HABITAT"]["precision"] == 0.0
    assert metrics["prompt"] == {"name": "universalner", "version": "1"}
    predictions = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert predictions[1]["spans"] == [[4, 10, "SPECIES"], [16, 21, "FEEDING"]]


def test_json_span_prompt_ignores_unknown_types_and_maps_strings(tmp_path, run_cli, tiny_bert_dir):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    labels = ["O"] + [f"{p}-{t}" for t in ("FEEDING", "HABITAT", "SPECIES") for p in "BI"]
    student = tmp_path / "student"
    AutoModelForTokenClassification.from_pretrained(
        tiny_bert_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}).save_pretrained(student)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(student)
    with StubServer(json_spans_teacher, supports_json_schema=False) as server:
        code, out, err = run_cli("teacher", "zero-shot-ner", config(tmp_path, server.base_url, "json_spans"),
                                 "--data", tmp_path / "gold.jsonl", "--student", student, "--json",
                                 "--output", tmp_path / "run")
        assert code == 0, err
    metrics = json.loads(out)
    teacher = metrics["teacher"]
    assert teacher["strict"]["micro"]["precision"] == 1.0
    assert teacher["strict"]["micro"]["recall"] == pytest.approx(4 / 6)
    assert set(metrics["student"]) == {"strict", "overlap", "string"}


def test_string_match_normalises_case_articles_and_punctuation():
    gold = [Record("The Fish swim.", [Span(0, 8, "SPECIES")])]
    scores = zs.zero_shot_scores(gold, [[Span(4, 8, "SPECIES")]], [[("SPECIES", "fish")]], ["SPECIES"])
    assert scores["strict"]["micro"]["f1"] == 0.0
    assert scores["overlap"]["micro"]["f1"] == 1.0
    assert scores["string"]["micro"]["f1"] == 1.0


def test_a_server_that_answers_nothing_is_an_error_not_a_zero_score(tmp_path, monkeypatch, run_cli):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with StubServer(universalner_teacher, api_key="sk-test", p_disconnect=1.0) as server:
        code, out, err = run_cli("teacher", "zero-shot-ner", config(tmp_path, server.base_url, "universalner"),
                                 "teacher.max_retries=0", "--data", tmp_path / "gold.jsonl", "--output",
                                 tmp_path / "run")
    message = " ".join(err.split())
    assert code == 2 and "all 6 zero-shot requests to the teacher" in message and "strict" not in out
    assert not (tmp_path / "run").exists()
