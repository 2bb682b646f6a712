"""The synth CLI over real HTTP (stub server), the persistent cache on rerun, and the review round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from adaptlab import example_configs
from adaptlab.data.records import read_records
from adaptlab.synth.review import ACCEPT, LABELS_NAME, REJECT, TEXT_NAME, VERDICT_NAME
from adaptlab.synth.scripted import scripted_answer
from adaptlab.teacher.stub_server import StubServer

ROOT = Path(__file__).resolve().parents[2]


SECRET = "sk-test-5ecret-never-written"


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with StubServer(scripted_answer, api_key=SECRET) as server:
        yield server


def write_config(tmp_path: Path, base_url: str) -> Path:
    cfg = yaml.safe_load((example_configs.path("synth_biospecies")).read_text())
    cfg["subjects"] = {"groups": ["amphibians", "birds"], "per_group": 3}
    cfg["teacher"].update(base_url=base_url, cache_path=str(tmp_path / "cache.sqlite"), requests_per_minute=None,
                          tokens_per_minute=None)
    cfg["progress"] = False
    path = tmp_path / "synth.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_generate_over_http_then_rerun_from_cache_sends_nothing(tmp_path, stub, run_cli):
    config = write_config(tmp_path, stub.base_url)
    code, out, err = run_cli("synth", "generate", config, "--output", tmp_path / "first")
    assert code == 0, err
    assert "sentences: 18 proposed = 18 accepted + 0 rejected" in out
    runner = json.loads((tmp_path / "first" / "metrics.json").read_text())["runner"]
    assert runner["schema_answers"] == 8 and runner["schema_constrained"] == 8
    printed = " ".join(out.split())  # rich wraps long lines
    assert f"{runner['schema_valid']}/8 answers schema-valid ({runner['schema_ignored']} ignored the schema)" in printed
    sent_first = stub.stats.received
    assert sent_first == 2 + 6

    code, out, err = run_cli("synth", "generate", config, "--output", tmp_path / "second")
    assert code == 0, err
    assert stub.stats.received == sent_first, "a rerun must be answered from the cache"
    metrics = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert metrics["runner"]["cache_hits"] == 8 and metrics["runner"]["sent"] == 0
    assert (tmp_path / "first" / "records.jsonl").read_bytes() == (tmp_path / "second" / "records.jsonl").read_bytes()
    records = read_records(tmp_path / "first" / "records.jsonl")
    assert {r.meta["group"] for r in records} == {"amphibians", "birds"}
    assert all(r.relations for r in records)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "cache.sqlite" for p in written)
    assert not [p for p in written if SECRET.encode() in p.read_bytes()], "the API key must never reach disk"


def test_generate_config_errors_name_the_key(tmp_path, run_cli):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"schema": {"subject": "X", "entities": [{"name": "X"}]},
                                      "subjects": {"groups": ["a"]}, "teacher": {"backend": "gpt"}}))
    code, _, err = run_cli("synth", "generate", config)
    assert code == 2 and "teacher.backend" in err
    code, _, err = run_cli("synth", "generate", config, "teacher.backend=replay")
    assert code == 2 and "teacher.cassette" in err


def test_missing_api_key_is_a_clear_error(tmp_path, run_cli, monkeypatch):
    monkeypatch.delenv("ADAPTLAB_TEST_KEY", raising=False)
    config = write_config(tmp_path, "https://api.example.invalid/v1")
    code, _, err = run_cli("synth", "generate", config, "teacher.api_key_env=ADAPTLAB_TEST_KEY")
    assert code == 2 and "ADAPTLAB_TEST_KEY" in err


def review_annotations(tasks: list[dict]) -> list[dict]:
    """Reviewers: accept the first task unchanged, shorten a span in the second, reject the third."""
    for k, task in enumerate(tasks[:3]):
        result = [dict(r) for r in task["predictions"][0]["result"]]
        if k == 1:
            span = next(r for r in result if r["type"] == "labels" and r["value"]["labels"] == ["HABITAT"])
            span["value"] = {**span["value"], "start": span["value"]["start"] + 1}
            span["value"]["text"] = span["value"]["text"][1:]
        verdict = REJECT if k == 2 else ACCEPT
        result.append({"from_name": VERDICT_NAME, "to_name": TEXT_NAME, "type": "choices",
                       "value": {"choices": [verdict]}})
        task["annotations"] = [{"result": result, "was_cancelled": False, "completed_by": 7}]
    return tasks


def test_review_export_import_and_factcheck_round_trip(tmp_path, stub, run_cli):
    config = write_config(tmp_path, stub.base_url)
    assert run_cli("synth", "generate", config, "--output", tmp_path / "gen")[0] == 0
    code, out, err = run_cli("synth", "review", "export", tmp_path / "gen", "--output", tmp_path / "ls")
    assert code == 0, err
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert len(tasks) == 18 and all(t["predictions"][0]["result"] for t in tasks)
    assert f'name="{LABELS_NAME}"' in (tmp_path / "ls" / "labeling_config.xml").read_text()
    habitat_tasks = [t for t in tasks if any(r.get("value", {}).get("labels") == ["HABITAT"]
                                             for r in t["predictions"][0]["result"])]
    others = [t for t in tasks if t not in habitat_tasks]
    exported = tmp_path / "export.json"
    exported.write_text(json.dumps(review_annotations([others[0], habitat_tasks[0], others[1]]) + others[2:]))

    code, out, err = run_cli("synth", "review", "import", exported, "--schema", tmp_path / "gen",
                             "--output", tmp_path / "reviewed")
    assert code == 0, err
    metrics = json.loads((tmp_path / "reviewed" / "metrics.json").read_text())
    assert metrics["counts"]["verified"] == 2 and metrics["counts"]["edited"] == 1
    assert metrics["counts"]["rejected"] == 1
    kept = read_records(tmp_path / "reviewed" / "records.jsonl")
    assert len(kept) == len(others) + 1 - 1
    assert sum(r.meta["verified"] for r in kept) == 2
    habitat = metrics["agreement"]["spans"]["strict"]["per_type"]["HABITAT"]
    assert habitat["precision"] == 0.0 and habitat["support"] == 1

    sheet = tmp_path / "facts.csv"
    code, out, err = run_cli("synth", "factcheck", "export", tmp_path / "gen", "--output", sheet, "--per-aspect", "2")
    assert code == 0, err
    lines = sheet.read_text(encoding="utf-8-sig").splitlines()
    assert len(lines) == 1 + 6
    filled = [lines[0]] + [line.replace(",,", ",1,", 1) if k % 2 else line.replace(",,", ",0,", 1)
                           for k, line in enumerate(lines[1:])]
    sheet.write_text("\n".join(filled) + "\n", encoding="utf-8")
    code, out, err = run_cli("synth", "factcheck", "score", sheet, "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["overall"]["checked"] == 6 and scores["overall"]["correct"] == 3


def test_record_a_cassette_then_replay_it_offline(tmp_path, stub, run_cli):
    config = write_config(tmp_path, stub.base_url)
    cassette = tmp_path / "answers.jsonl"
    code, _, err = run_cli("synth", "generate", config, "--record", cassette, "--output", tmp_path / "live")
    assert code == 0, err
    assert len(cassette.read_text().splitlines()) == stub.stats.received == 8
    code, _, err = run_cli("synth", "generate", config, "teacher.backend=replay", f"teacher.cassette={cassette}",
                           "teacher.model=gpt-4o", "--output", tmp_path / "replayed")
    assert code == 0, err
    assert stub.stats.received == 8
    live, replayed = (read_records(tmp_path / name / "records.jsonl") for name in ("live", "replayed"))
    assert [(r.text, r.spans, r.relations) for r in live] == [(r.text, r.spans, r.relations) for r in replayed]
    assert {r.meta["backend"] for r in replayed} == {"replay"}


def test_edited_prompt_templates_override_the_packaged_ones(tmp_path, stub, run_cli):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "sentences.yaml").write_text(yaml.safe_dump({
        "name": "sentences-short", "version": "7",
        "user": 'Write $n_sentences different sentences about the species "$subject". $entity_guidelines',
    }))
    config = write_config(tmp_path, stub.base_url)
    code, _, err = run_cli("synth", "generate", config, f"prompts_dir={prompts}", "--output", tmp_path / "run")
    assert code == 0, err
    meta = read_records(tmp_path / "run" / "records.jsonl")[0].meta
    assert (meta["prompt"], meta["prompt_version"]) == ("sentences-short", "7")

    (prompts / "sentences.yaml").write_text(yaml.safe_dump({"user": "About $subjekt"}))
    code, _, err = run_cli("synth", "generate", config, f"prompts_dir={prompts}", "--output", tmp_path / "bad")
    assert code == 2 and "$subjekt" in err and "sentences.yaml" in err
    assert not (tmp_path / "bad").exists()


def test_server_that_closes_connections_mid_answer_is_retried_then_an_error(tmp_path, monkeypatch, run_cli):
    """Every answer is cut off: each request is retried, then the run stops with exit 2 and leaves nothing."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with StubServer(scripted_answer, api_key=SECRET, p_disconnect=1.0) as server:
        config = write_config(tmp_path, server.base_url)
        code, out, err = run_cli("synth", "generate", config, "--output", tmp_path / "run", "teacher.max_retries=2",
                                 "teacher.backoff_initial_s=0.01", "teacher.backoff_max_s=0.02")
    assert code == 2 and "Traceback" not in err
    message = " ".join(err.split())
    assert "all 2 subjects requests to the teacher (openai: " in message and "connection after 3 attempts" in message
    assert "teacher.base_url" in message
    assert server.stats.snapshot()["by_status"] == {0: 6}  # 2 requests x 3 attempts, each cut mid-answer
    assert not (tmp_path / "run").exists()


def test_requests_that_fail_among_answered_ones_are_accounted(tmp_path, monkeypatch, run_cli):
    """Some answers cut off: the run goes on; the failed requests are rejects with their reason."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with StubServer(scripted_answer, api_key=SECRET, p_disconnect=0.5, seed=3) as server:
        config = write_config(tmp_path, server.base_url)
        code, _, err = run_cli("synth", "generate", config, "--output", tmp_path / "run", "teacher.max_retries=0")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    failed = metrics["runner"]["failed"]
    assert 0 < failed and metrics["runner"]["retry_reasons"] == {}
    assert server.stats.snapshot()["by_status"].get(0) == failed
