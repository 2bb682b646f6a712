"""The stub server itself: latency, seeded fault rates, malformed answers, stats, auth."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from adaptlab.teacher.stub_server import StubServer, body_fingerprint, corrupt_content

ANSWER = '{"entities": [{"text": "lion", "type": "SPECIES"}]}'


def body(text: str = "hello world", **extra) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0.0} | extra


def post(server: StubServer, payload: dict, key: str | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        server.base_url + "/chat/completions", data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def test_answer_shape_and_word_usage():
    with StubServer(lambda b: ANSWER) as server:
        status, payload, _ = post(server, body("three little words"))
    assert status == 200
    assert payload["object"] == "chat.completion"
    assert payload["choices"][0]["message"] == {"role": "assistant", "content": ANSWER}
    assert payload["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def test_latency_is_applied_and_requests_overlap():
    with StubServer(lambda b: "ok", latency_s=0.2) as server:
        start = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            statuses = [status for status, _, _ in pool.map(lambda i: post(server, body(f"q{i}")), range(4))]
        elapsed = time.perf_counter() - start
    assert statuses == [200] * 4
    assert 0.2 <= elapsed < 0.6  # concurrent, not 4 x 0.2 s
    assert server.stats.max_in_flight >= 2


def test_seeded_fault_rates_are_reproducible():
    def run(seed: int) -> dict[int, int]:
        with StubServer(lambda b: ANSWER, p_429=0.2, p_500=0.1, p_malformed=0.1, seed=seed) as server:
            for i in range(300):
                post(server, body(f"q{i}"))
        return server.stats.snapshot()

    first, again, other = run(1), run(1), run(2)
    assert first == again
    assert first != other
    counts = first["by_status"]
    assert sum(counts.values()) == first["received"] == 300
    assert 35 <= counts[429] <= 85  # expected 60
    assert 12 <= counts[500] <= 50  # expected 30
    assert 12 <= first["malformed"] <= 50  # expected 30, among the 200s
    assert counts[200] == 300 - counts[429] - counts[500]


def test_malformed_content_is_truncated_json():
    with StubServer(lambda b: ANSWER, p_malformed=1.0) as server:
        status, payload, _ = post(server, body())
    content = payload["choices"][0]["message"]["content"]
    assert status == 200
    assert content == corrupt_content(ANSWER) == ANSWER[: len(ANSWER) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)
    assert corrupt_content("") == "{"


def test_rate_limit_sends_retry_after():
    with StubServer(lambda b: "x", p_429=1.0, retry_after_s=0.5) as server:
        status, payload, headers = post(server, body())
    assert status == 429
    assert float(headers["retry-after"]) == 0.5
    assert payload["error"]["code"] == "rate_limit_exceeded"


def test_auth_and_unsupported_json_schema():
    schema_body = body(response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {}}})
    with StubServer(lambda b: "x", api_key="sk-right", supports_json_schema=False) as server:
        assert post(server, body())[0] == 401
        assert post(server, body(), key="sk-wrong")[0] == 401
        status, payload, _ = post(server, schema_body, key="sk-right")
        assert status == 400 and "response_format" in payload["error"]["message"]
        assert post(server, body(), key="sk-right")[0] == 200
    assert server.stats.by_status == {401: 2, 400: 1, 200: 1}


def test_stats_count_answers_per_fingerprint():
    with StubServer(lambda b: "x") as server:
        for _ in range(3):
            post(server, body("same"))
        post(server, body("other"))
    answered = server.stats.answered_by_fingerprint
    assert answered[body_fingerprint(body("same"))] == 3
    assert answered[body_fingerprint(body("other"))] == 1
    assert server.stats.answered == 4


def test_fingerprint_ignores_response_format_but_not_sampling():
    plain = body()
    assert body_fingerprint(plain) == body_fingerprint(plain | {"response_format": {"type": "json_object"}})
    assert body_fingerprint(plain) != body_fingerprint(plain | {"temperature": 0.7})
    assert body_fingerprint(plain) != body_fingerprint(body("hello there"))


def test_broken_responder_answers_500_with_the_error():
    def responder(b: dict) -> str:
        raise KeyError("missing")

    with StubServer(responder) as server:
        status, payload, _ = post(server, body())
    assert status == 500
    assert "KeyError" in payload["error"]["message"]


def test_invalid_fault_rates_are_rejected():
    with pytest.raises(ValueError, match="sum to at most 1"):
        StubServer(lambda b: "x", p_429=0.6, p_500=0.6)
