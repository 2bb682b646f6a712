"""The openai backend against the stub server over real HTTP with the real openai client."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest

from adaptlab.runs import configure_console
from adaptlab.teacher.base import Message, Sampling, TeacherError, TeacherRequest, TransientTeacherError
from adaptlab.teacher.config import TeacherConfig
from adaptlab.teacher.openai_compat import OpenAICompatTeacher, parse_retry_after
from adaptlab.teacher.runner import retry_reason, run_requests
from adaptlab.teacher.stub_server import StubServer

KEY = "sk-test-5ecret-value-0123456789"
SCHEMA = {"type": "object", "properties": {"entities": {"type": "array"}}, "required": ["entities"]}


def make_request(text: str = "Lions live in the savanna.", schema: dict | None = None, **sampling) -> TeacherRequest:
    return TeacherRequest(
        messages=(Message("system", "Extract entities as JSON."), Message("user", text)),
        sampling=Sampling(**sampling),
        json_schema=schema,
    )


def make_teacher(base_url: str, monkeypatch, **overrides) -> OpenAICompatTeacher:
    monkeypatch.setenv("ADAPTLAB_TEST_KEY", KEY)
    fields = {"backend": "openai", "model": "stub-model", "base_url": base_url,
              "api_key_env": "ADAPTLAB_TEST_KEY", "timeout_s": 5}
    return OpenAICompatTeacher.from_config(TeacherConfig(**(fields | overrides)))


def ask(teacher: OpenAICompatTeacher, request: TeacherRequest):
    async def go():
        try:
            return await teacher.complete(request)
        finally:
            await teacher.aclose()

    return asyncio.run(go())


def test_happy_path_sends_sampling_and_reports_usage(monkeypatch):
    seen: list[dict] = []

    def responder(body: dict) -> str:
        seen.append(body)
        return '{"entities": ["Lions", "savanna"]}'

    with StubServer(responder, api_key=KEY) as server:
        teacher = make_teacher(server.base_url, monkeypatch)
        response = ask(teacher, make_request(temperature=0.3, top_p=0.9, max_tokens=64, seed=7))
    assert json.loads(response.text) == {"entities": ["Lions", "savanna"]}
    assert response.model == "stub-model"
    assert response.finish_reason == "stop"
    assert response.usage.prompt_tokens == 4 + 5  # words of the system and user messages
    assert response.usage.completion_tokens == 3
    body = seen[0]
    assert body["messages"][1] == {"role": "user", "content": "Lions live in the savanna."}
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.3, 0.9, 64, 7)
    assert "response_format" not in body  # no schema in the request


def test_seed_none_is_omitted(monkeypatch):
    seen: list[dict] = []
    with StubServer(lambda body: seen.append(body) or "ok") as server:
        ask(make_teacher(server.base_url, monkeypatch), make_request(seed=None))
    assert "seed" not in seen[0]


def test_rate_limit_is_transient_with_retry_after(monkeypatch):
    with StubServer(lambda body: "x", p_429=1.0, retry_after_s=0.25) as server:
        with pytest.raises(TransientTeacherError) as info:
            ask(make_teacher(server.base_url, monkeypatch), make_request())
    assert info.value.status == 429
    assert info.value.retry_after == pytest.approx(0.25)
    assert server.stats.received == 1  # the client itself did not retry


def test_server_error_is_transient(monkeypatch):
    with StubServer(lambda body: "x", p_500=1.0) as server:
        with pytest.raises(TransientTeacherError) as info:
            ask(make_teacher(server.base_url, monkeypatch), make_request())
    assert info.value.status == 500
    assert info.value.retry_after is None


def test_timeout_and_connection_errors_are_transient(monkeypatch):
    with StubServer(lambda body: "x", latency_s=1.0) as server:
        with pytest.raises(TransientTeacherError, match="timeout"):
            ask(make_teacher(server.base_url, monkeypatch, timeout_s=0.2), make_request())
    with pytest.raises(TransientTeacherError, match="connection"):
        ask(make_teacher(f"http://127.0.0.1:{unused_port()}/v1", monkeypatch), make_request())


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_wrong_key_is_fatal_and_never_quoted(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    with StubServer(lambda body: "x", api_key="sk-the-right-one") as server:
        teacher = make_teacher(server.base_url, monkeypatch)
        with pytest.raises(TeacherError) as info:
            ask(teacher, make_request())
    message = str(info.value)
    assert "401" in message and "$ADAPTLAB_TEST_KEY" in message
    assert KEY not in message
    assert "***" in message  # the stub echoed the wrong key like OpenAI does; it was redacted
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert KEY not in caplog.text
    assert KEY not in json.dumps(teacher.describe())


def test_unknown_model_names_model_and_url(monkeypatch):
    with StubServer(lambda body: "x", known_models={"other-model"}) as server:
        with pytest.raises(TeacherError, match=r"model 'stub-model' not found at http://127\.0\.0\.1:\d+/v1"):
            ask(make_teacher(server.base_url, monkeypatch), make_request())


def test_auto_structured_output_falls_back_once(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="adaptlab")
    seen: list[dict] = []

    def responder(body: dict) -> str:
        seen.append(body)
        return '{"entities": []}'

    with StubServer(responder, supports_json_schema=False) as server:
        teacher = make_teacher(server.base_url, monkeypatch, structured_output="auto")

        async def go():
            try:
                first = await teacher.complete(make_request("one", schema=SCHEMA))
                second = await teacher.complete(make_request("two", schema=SCHEMA))
                return first, second
            finally:
                await teacher.aclose()

        first, second = asyncio.run(go())
    assert first.text == second.text == '{"entities": []}'
    assert [b["messages"][1]["content"] for b in seen] == ["one", "two"]
    assert all("response_format" not in b for b in seen)
    assert server.stats.by_status == {400: 1, 200: 2}  # the second request did not try the schema again
    assert teacher.json_schema_unsupported
    assert caplog.text.count("refused response_format") == 1


def test_json_schema_sent_when_supported(monkeypatch):
    seen: list[dict] = []
    with StubServer(lambda body: seen.append(body) or "{}") as server:
        ask(make_teacher(server.base_url, monkeypatch, structured_output="auto"), make_request(schema=SCHEMA))
    assert seen[0]["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": False},
    }


def test_forced_json_schema_refused_is_fatal_and_off_never_sends(monkeypatch):
    with StubServer(lambda body: "{}", supports_json_schema=False) as server:
        forced = make_teacher(server.base_url, monkeypatch, structured_output="json_schema")
        with pytest.raises(TeacherError, match="structured_output"):
            ask(forced, make_request(schema=SCHEMA))
        response = ask(make_teacher(server.base_url, monkeypatch, structured_output="off"), make_request(schema=SCHEMA))
    assert response.text == "{}"
    assert server.stats.by_status == {400: 1, 200: 1}


def test_missing_key_variable(monkeypatch):
    monkeypatch.delenv("ADAPTLAB_MISSING_KEY", raising=False)
    cfg = TeacherConfig(model="gpt-4o", base_url="https://api.example.com/v1", api_key_env="ADAPTLAB_MISSING_KEY")
    with pytest.raises(TeacherError, match="ADAPTLAB_MISSING_KEY is not set"):
        OpenAICompatTeacher.from_config(cfg)


def test_local_server_without_key_uses_placeholder(monkeypatch):
    monkeypatch.delenv("ADAPTLAB_MISSING_KEY", raising=False)
    with StubServer(lambda body: "hi", api_key="EMPTY") as server:
        cfg = TeacherConfig(model="m", base_url=server.base_url, api_key_env="ADAPTLAB_MISSING_KEY")
        assert ask(OpenAICompatTeacher.from_config(cfg), make_request()).text == "hi"


def test_describe_names_the_variable_not_the_key(monkeypatch):
    with StubServer(lambda body: "x") as server:
        base_url = server.base_url
        teacher = make_teacher(base_url, monkeypatch, structured_output="off")
        described = teacher.describe()
        asyncio.run(teacher.aclose())
    assert described == {
        "backend": "openai", "model": "stub-model", "base_url": base_url + "/",
        "api_key_env": "ADAPTLAB_TEST_KEY", "structured_output": "off",
    }
    assert KEY not in repr(described)


def test_parse_retry_after():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "150", "retry-after": "9"}) == pytest.approx(0.15)
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert parse_retry_after({}) is None


def test_answers_record_whether_the_schema_was_sent(monkeypatch):
    with StubServer(lambda body: "{}") as server:
        sent = ask(make_teacher(server.base_url, monkeypatch), make_request(schema=SCHEMA))
        not_sent = ask(make_teacher(server.base_url, monkeypatch, structured_output="off"), make_request(schema=SCHEMA))
        no_schema = ask(make_teacher(server.base_url, monkeypatch), make_request())
    assert (sent.constrained, not_sent.constrained, no_schema.constrained) == (True, False, None)


def test_server_closing_the_connection_mid_answer_is_transient(monkeypatch):
    with StubServer(lambda body: '{"entities": ["Lions"]}', p_disconnect=1.0) as server:
        with pytest.raises(TransientTeacherError) as caught:
            ask(make_teacher(server.base_url, monkeypatch), make_request())
    assert retry_reason(caught.value) == "connection"
    assert server.stats.snapshot()["by_status"] == {0: 1}


def test_runner_counts_answers_of_a_server_that_ignores_response_format(monkeypatch, caplog):
    """The stub takes response_format and answers fenced free text anyway, like transformers serve."""
    answers = {"valid": '{"entities": []}', "fenced": '```json\n{"entities": []}\n```', "wrong": '{"other": 1}'}
    with StubServer(lambda body: answers[body["messages"][-1]["content"]]) as server:
        teacher = make_teacher(server.base_url, monkeypatch)
        config = TeacherConfig(backend="openai", model="stub-model", cache=False)
        requests = [make_request(text, schema=SCHEMA) for text in answers] + [make_request("valid")]
        with caplog.at_level(logging.WARNING, logger="adaptlab"):
            outcomes, stats = run_requests(teacher, config, requests, progress=False, description="probe")
    assert all(o.ok for o in outcomes)
    assert (stats.schema_answers, stats.schema_valid, stats.schema_constrained, stats.schema_ignored) == (3, 1, 3, 2)
    assert "probe: 2 answers" in caplog.text and "ignores response_format" in caplog.text


def test_an_html_page_with_status_200_is_transient_and_quoted(monkeypatch):
    with StubServer(lambda body: "x", p_html=1.0) as server:
        with pytest.raises(TransientTeacherError, match=r"not JSON: '<html><head><title>502 Bad Gateway"):
            ask(make_teacher(server.base_url, monkeypatch), make_request())


def test_the_cache_key_names_the_server(monkeypatch):
    request = make_request()
    first = make_teacher("http://127.0.0.1:8001/v1", monkeypatch)
    same = make_teacher("http://127.0.0.1:8001/v1/", monkeypatch)
    other = make_teacher("http://127.0.0.1:8002/v1", monkeypatch)
    assert first.cache_key(request) == same.cache_key(request) != other.cache_key(request)


def test_a_server_slower_than_timeout_s_stops_the_run_without_piling_up(monkeypatch, caplog):
    """Every answer takes longer than timeout_s: each retry is logged with its reason, and after
    stop_after_timeouts attempts in a row the run stops with an error naming teacher.timeout_s."""
    with StubServer(lambda body: "x", latency_s=0.6) as server:
        teacher = make_teacher(server.base_url, monkeypatch, timeout_s=0.15)
        config = TeacherConfig(backend="openai", model="stub-model", cache=False, timeout_s=0.15, concurrency=2,
                               max_retries=10, backoff_initial_s=0.01, backoff_max_s=0.02, stop_after_timeouts=4)
        requests = [make_request(f"sentence {i}") for i in range(6)]
        with caplog.at_level(logging.INFO, logger="adaptlab"), \
                pytest.raises(TeacherError, match=r"4 attempts in a row timed out after teacher.timeout_s=0.15 s"):
            run_requests(teacher, config, requests, progress=False)
        received = server.stats.received
    assert received <= 4 + config.concurrency  # no pile-up: at most the in-flight ones beyond the limit
    assert caplog.text.count("retrying") >= 2 and "timeout: timeout waiting for" in caplog.text


def test_a_batch_with_many_failures_is_warned_about(monkeypatch, capsys):
    configure_console()  # as the CLI does: adaptlab's warnings on stderr, once
    with StubServer(lambda body: "ok", p_500=0.5, seed=3) as server:
        teacher = make_teacher(server.base_url, monkeypatch)
        config = TeacherConfig(backend="openai", model="stub-model", cache=False, max_retries=0,
                               warn_failed_share=0.1)
        outcomes, stats = run_requests(teacher, config, [make_request(f"s{i}") for i in range(8)],
                                       progress=False, description="sentences")
    failed = sum(not o.ok for o in outcomes)
    assert 0 < failed < 8
    assert stats.warnings == [stats.warnings[0]] and f"{failed} of 8 sentences requests failed" in stats.warnings[0]
    err = capsys.readouterr().err
    assert "warning:" in err and err.count("requests failed") == 1
