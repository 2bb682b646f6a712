"""TeacherRunner: order, concurrency bound, cache, de-duplication, retries, fatal errors, rate limits, accounting."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from adaptlab.teacher.base import (
    Message,
    Sampling,
    Teacher,
    TeacherError,
    TeacherRequest,
    TeacherResponse,
    TransientTeacherError,
    Usage,
)
from adaptlab.teacher.cache import ResponseCache
from adaptlab.teacher.config import TeacherConfig
from adaptlab.teacher.limits import RateLimiter, estimate_request_tokens
from adaptlab.teacher.runner import TeacherRunner, backoff_delay, retry_reason, run_requests


class FakeTeacher(Teacher):
    """Answers ``echo:<last user message>`` after ``delay`` seconds, raising scripted errors first.

    ``errors[text]`` is a list of exceptions raised, one per call, before that prompt succeeds.
    """

    backend = "fake"

    def __init__(self, delay: float = 0.0, errors: dict[str, list[Exception]] | None = None,
                 delays: dict[str, float] | None = None):
        super().__init__("fake-model")
        self.delay = delay
        self.delays = delays or {}
        self.errors = {text: list(errs) for text, errs in (errors or {}).items()}
        self.calls: list[str] = []
        self.finished: list[str] = []
        self.started_at: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def complete(self, request: TeacherRequest) -> TeacherResponse:
        text = request.messages[-1].content
        self.calls.append(text)
        self.started_at.append(time.perf_counter())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delays.get(text, self.delay))
            pending = self.errors.get(text)
            if pending:
                raise pending.pop(0)
            self.finished.append(text)
            return TeacherResponse(f"echo:{text}", Usage(10, 5), model=self.model)
        finally:
            self.in_flight -= 1


def _request(text: str, variant: int = 0, tag: str = "") -> TeacherRequest:
    return TeacherRequest(messages=(Message("user", text),), sampling=Sampling(max_tokens=16), variant=variant, tag=tag)


def _config(**overrides) -> TeacherConfig:
    settings = dict(concurrency=4, max_retries=3, backoff_initial_s=0.001, backoff_max_s=0.002, cache=False)
    settings.update(overrides)
    return TeacherConfig(**settings)


def test_outcomes_in_input_order_despite_completion_order():
    texts = [f"q{i}" for i in range(6)]
    teacher = FakeTeacher(delays={text: 0.05 - 0.008 * i for i, text in enumerate(texts)})
    outcomes, stats = run_requests(teacher, _config(concurrency=6), [_request(t) for t in texts], progress=False)
    assert [o.response.text for o in outcomes] == [f"echo:{t}" for t in texts]
    assert all(o.ok and o.attempts == 1 and not o.cached for o in outcomes)
    assert teacher.finished == texts[::-1]  # the answers really did arrive in reverse order
    assert stats.answered == 6 and stats.sent == 6 and stats.failed == 0


def test_concurrency_bound_never_exceeded():
    teacher = FakeTeacher(delay=0.01)
    outcomes, _ = run_requests(teacher, _config(concurrency=3), [_request(f"q{i}") for i in range(20)], progress=False)
    assert len(outcomes) == 20
    assert teacher.max_in_flight == 3


def test_cache_hits_send_nothing_on_second_run(tmp_path):
    requests = [_request(f"q{i}") for i in range(5)]
    config = _config(price_input_per_million=2.0, price_output_per_million=10.0)
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        first_teacher = FakeTeacher()
        run_requests(first_teacher, config, requests, cache=cache, progress=False)
        assert len(first_teacher.calls) == 5 and len(cache) == 5

    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        second_teacher = FakeTeacher()
        outcomes, stats = run_requests(second_teacher, config, requests + [_request("new")], cache=cache,
                                       progress=False)
    assert second_teacher.calls == ["new"]
    assert [o.cached for o in outcomes] == [True] * 5 + [False]
    assert outcomes[0].response.text == "echo:q0" and outcomes[0].attempts == 0
    assert stats.cache_hits == 5 and stats.answered == 1
    assert (stats.cached_prompt_tokens, stats.cached_completion_tokens) == (50, 25)
    assert (stats.prompt_tokens, stats.completion_tokens) == (10, 5)
    assert stats.cost_usd == pytest.approx((10 * 2.0 + 5 * 10.0) / 1e6)


def test_duplicates_sent_once_and_share_outcome():
    teacher = FakeTeacher()
    requests = [_request("a", tag="first"), _request("b"), _request("a", tag="second"), _request("a", variant=1)]
    outcomes, stats = run_requests(teacher, _config(), requests, progress=False)
    assert sorted(teacher.calls) == ["a", "a", "b"]  # variant 1 is a different question
    assert (stats.requests, stats.unique, stats.duplicates, stats.sent) == (4, 3, 1, 3)
    assert outcomes[0].response == outcomes[2].response
    assert [o.request.tag for o in outcomes[:3]] == ["first", "", "second"]


def test_retry_on_429_then_success():
    errors = {"a": [TransientTeacherError("rate limited", status=429), TransientTeacherError("boom", status=500)]}
    teacher = FakeTeacher(errors=errors)
    outcomes, stats = run_requests(teacher, _config(), [_request("a"), _request("b")], progress=False)
    assert outcomes[0].ok and outcomes[0].attempts == 3
    assert (stats.sent, stats.retries, stats.answered, stats.failed) == (4, 2, 2, 0)
    assert stats.to_json()["retry_reasons"] == {"429": 1, "500": 1}


def test_retry_after_is_respected():
    teacher = FakeTeacher(errors={"a": [TransientTeacherError("slow down", status=429, retry_after=0.25)]})
    started = time.perf_counter()
    outcomes, _ = run_requests(teacher, _config(), [_request("a")], progress=False)
    assert outcomes[0].ok
    assert teacher.started_at[1] - teacher.started_at[0] >= 0.25
    assert time.perf_counter() - started < 2.0


def test_failure_after_max_retries_becomes_outcome_error_and_run_continues():
    teacher = FakeTeacher(errors={"bad": [TransientTeacherError("server error", status=503)] * 10})
    outcomes, stats = run_requests(teacher, _config(max_retries=2), [_request("bad"), _request("good")],
                                   progress=False)
    assert outcomes[0].response is None
    assert outcomes[0].error == "HTTP 503 after 3 attempts: server error"
    assert outcomes[0].attempts == 3
    assert outcomes[1].ok
    assert (stats.failed, stats.answered, stats.retries, stats.sent) == (1, 1, 2, 4)
    assert stats.retry_reasons == {"503": 2}


def test_fatal_error_propagates_and_cancels_the_rest(tmp_path):
    teacher = FakeTeacher(delays={"fast": 0.0, "fatal": 0.02, "slow": 5.0},
                          errors={"fatal": [TeacherError("invalid API key")]})
    requests = [_request("fast"), _request("fatal"), _request("slow")]
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        runner = TeacherRunner(teacher, _config(), cache=cache, progress=False)

        async def main():
            with pytest.raises(TeacherError, match="invalid API key"):
                await runner.run(requests)
            assert teacher.in_flight == 0  # the slow request was cancelled, not left running
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert pending == []

        started = time.perf_counter()
        asyncio.run(main())
        assert time.perf_counter() - started < 2.0
        assert len(cache) == 1  # the answer received before the error is kept


def test_runner_reused_in_one_event_loop_accumulates_stats():
    teacher = FakeTeacher()
    runner = TeacherRunner(teacher, _config(), progress=False)

    async def main():
        first = await runner.run([_request("a"), _request("b")], "stage 1")
        second = await runner.run([_request("c")], "stage [2]")
        return first, second

    first, second = asyncio.run(main())
    assert len(first) == 2 and len(second) == 1
    assert runner.stats.requests == 3 and runner.stats.answered == 3
    assert runner.stats.seconds > 0 and runner.stats.requests_per_second > 0


def test_requests_per_minute_limit_spaces_requests():
    teacher = FakeTeacher()
    runner = TeacherRunner(teacher, _config(concurrency=10, requests_per_minute=2), progress=False,
                           rate_window_s=0.2)
    asyncio.run(runner.run([_request(f"q{i}") for i in range(6)]))
    starts = sorted(teacher.started_at)
    assert starts[-1] - starts[0] >= 0.38  # pairs at 0, 0.2, 0.4
    for i in range(len(starts) - 2):  # never 3 starts within one window
        assert starts[i + 2] - starts[i] >= 0.19


def test_token_and_cost_accounting():
    config = _config(price_input_per_million=2.0, price_output_per_million=10.0)
    outcomes, stats = run_requests(FakeTeacher(), config, [_request(f"q{i}") for i in range(3)], progress=False)
    assert len(outcomes) == 3
    data = stats.to_json()
    assert (data["prompt_tokens"], data["completion_tokens"]) == (30, 15)
    assert data["cost_usd"] == pytest.approx(30 * 2.0 / 1e6 + 15 * 10.0 / 1e6)
    assert (data["cached_prompt_tokens"], data["cached_completion_tokens"]) == (0, 0)
    assert set(data) >= {"requests", "unique", "duplicates", "cache_hits", "sent", "answered", "failed",
                         "retries", "retry_reasons", "seconds", "requests_per_second"}


def test_progress_bar_does_not_break_a_run(capsys):
    outcomes, _ = run_requests(FakeTeacher(), _config(), [_request("a")], progress=True, description="smoke [x]")
    assert outcomes[0].ok


def test_token_limiter_waits_and_reconciles():
    async def main():
        limiter = RateLimiter(tokens_per_minute=100, window_s=0.2)
        started = time.perf_counter()
        first = await limiter.acquire(60)
        await limiter.acquire(60)  # 120 > 100: waits for the first to leave the window
        waited = time.perf_counter() - started
        assert waited >= 0.19

        limiter = RateLimiter(tokens_per_minute=100, window_s=0.2)
        first = await limiter.acquire(60)
        first.reconcile(10)  # the answer used far less than estimated
        started = time.perf_counter()
        await limiter.acquire(60)
        assert time.perf_counter() - started < 0.1

        limiter = RateLimiter(tokens_per_minute=100, window_s=0.2)
        started = time.perf_counter()
        await limiter.acquire(500)  # larger than the whole budget: let through on an empty window
        assert time.perf_counter() - started < 0.1

    asyncio.run(main())


def test_token_estimate_is_chars_over_four_plus_max_tokens():
    request = TeacherRequest(messages=(Message("system", "x" * 40), Message("user", "y" * 81)),
                             sampling=Sampling(max_tokens=100))
    assert estimate_request_tokens(request) == 121 // 4 + 100


def test_backoff_delay_is_full_jitter_with_retry_after_floor():
    rng = random.Random(0)
    delays = [backoff_delay(3, 1.0, 5.0, None, rng) for _ in range(200)]
    assert all(0.0 <= d <= 5.0 for d in delays)  # min(5, 1 * 2**3) = 5
    assert max(delays) > 4.0 and min(delays) < 1.0
    assert all(0.0 <= backoff_delay(0, 1.0, 60.0, None, rng) <= 1.0 for _ in range(50))
    assert all(backoff_delay(0, 1.0, 60.0, 7.5, rng) >= 7.5 for _ in range(50))


def test_retry_reason_convention():
    assert retry_reason(TransientTeacherError("x", status=429)) == "429"
    assert retry_reason(TransientTeacherError("request timed out")) == "timeout"
    assert retry_reason(TransientTeacherError("server dropped the connection")) == "connection"
    wrapped = TransientTeacherError("network trouble")
    wrapped.__cause__ = TimeoutError()
    assert retry_reason(wrapped) == "timeout"
    assert retry_reason(TransientTeacherError("odd")) == "other"


class SchemaTeacher(Teacher):
    """Answers each request with the text in its last message, as a constrained answer cut or not."""

    backend = "schema-fake"

    def __init__(self):
        super().__init__("schema-model")

    async def complete(self, request: TeacherRequest) -> TeacherResponse:
        text, _, finish = request.messages[-1].content.partition("|")
        return TeacherResponse(text, Usage(1, 1), model=self.model, finish_reason=finish or "stop",
                               constrained=request.json_schema is not None)


def test_schema_answers_are_checked_and_ignored_schemas_counted(caplog):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}
    texts = ['{"a": 1}', ' {"a": 2} ', '{"a": "x"}', '```json\n{"a": 1}\n```', '{"a": 1|length', '{"a": |length',
             '{"b": |length']
    requests = [TeacherRequest((Message("user", t),), json_schema=schema) for t in texts]
    requests.append(TeacherRequest((Message("user", "free text"),)))
    with caplog.at_level("WARNING", logger="adaptlab"):
        outcomes, stats = run_requests(SchemaTeacher(), TeacherConfig(cache=False), requests, progress=False)
    assert all(o.ok for o in outcomes)
    # valid: the first two; cut but on track: '{"a": 1' and '{"a": '; ignored: wrong type, fenced, cut off track
    assert (stats.schema_answers, stats.schema_valid, stats.schema_constrained, stats.schema_ignored) == (7, 2, 7, 3)
    assert "3 answers" in caplog.text and "ignores response_format" in caplog.text
