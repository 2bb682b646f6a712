"""Ask a teacher many questions: cache, de-duplication, bounded concurrency, rate limits, retries.

Every backend gets the same treatment, in this order, for each request of a batch:

1. **De-duplicate.** Requests with equal cache key (backend, model, request hash) are sent once and
   share the outcome; they are counted as ``duplicates``.
2. **Cache.** A key already in the :class:`~adaptlab.teacher.cache.ResponseCache` is answered from
   it and nothing is sent. Each answer fetched now is written to the cache the moment it arrives,
   so an interrupted run loses at most the answers in flight.
3. **Concurrency and rate.** At most ``teacher.concurrency`` requests are in flight; the
   :class:`~adaptlab.teacher.limits.RateLimiter` keeps requests and tokens per minute under
   ``teacher.requests_per_minute`` / ``teacher.tokens_per_minute``.
4. **Retry.** A :class:`TransientTeacherError` (429, 5xx, timeout, dropped connection) is retried
   up to ``teacher.max_retries`` times after sleeping, for retry ``k = 0, 1, ...``::

       sleep = max(retry_after, uniform(0, min(backoff_max_s, backoff_initial_s * 2**k)))

   ("full jitter" exponential backoff; ``retry_after`` is the server's hint, 0 without one). When
   the retries are used up the request's :class:`Outcome` carries the error text and the batch goes
   on. A :class:`TeacherError` (bad key, unknown model, replay miss) stops the batch: outstanding
   requests are cancelled and the error propagates; answers received before it are in the cache.
   Every retry is logged with its reason. ``teacher.stop_after_timeouts`` attempts in a row that time
   out (no answer between them) stop the run with an error naming ``teacher.timeout_s``: the server
   is slower than that, and it keeps generating the answers the client gave up on.
5. **Failures.** A batch in which more than ``teacher.warn_failed_share`` of the requests failed is
   warned about on the console, in the log and in ``stats.warnings``; recipes treat a stage in which
   every request failed as an error (:func:`require_an_answer`).

Retry reasons are counted under the HTTP status (``"429"``, ``"500"``) when the backend gave one,
else ``"timeout"`` or ``"connection"`` when the error (or its ``__cause__``) says so by message or
exception type, else ``"other"``.

Schema checks: every answer (fetched now or cached) to a request with a JSON schema is checked
with :func:`~adaptlab.teacher.schema_check.schema_problem`. ``schema_valid`` counts the valid ones,
``schema_constrained`` those produced under the schema (constrained decoding, or ``response_format``
sent), and ``schema_ignored`` the constrained ones that are invalid although the schema was
enforced: complete answers that do not match it, and answers cut at ``max_tokens`` that are not even
a prefix of a matching document (:func:`~adaptlab.teacher.schema_check.is_schema_prefix`). For the
``openai`` backend these are answers of a server that ignores ``response_format`` (logged as a
warning). Invalid answers are not dropped here; the caller's parser decides.

Token counts and cost cover answers fetched now; cache hits are counted separately
(``cached_prompt_tokens``/``cached_completion_tokens``). Cost in USD is
``prompt_tokens * price_input_per_million / 1e6 + completion_tokens * price_output_per_million / 1e6``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape

from adaptlab.runs import get_logger, progress_bar
from adaptlab.teacher.base import Teacher, TeacherError, TeacherRequest, TeacherResponse, TransientTeacherError
from adaptlab.teacher.cache import ResponseCache
from adaptlab.teacher.config import TeacherConfig
from adaptlab.teacher.limits import RateLimiter, estimate_request_tokens
from adaptlab.teacher.schema_check import is_schema_prefix, schema_problem


@dataclass
class Outcome:
    """What became of one request: an answer, or ``error`` saying why it failed after its retries."""

    request: TeacherRequest
    response: TeacherResponse | None = None
    error: str | None = None
    cached: bool = False
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.response is not None


def require_an_answer(outcomes: Sequence[Outcome], teacher: Teacher, stage: str) -> None:
    """A stage whose every request failed is an error, not a run with nothing in it.

    Failures of some requests are accounted as rejects; when none was answered (a closed port, a
    server that drops every connection mid-answer, a wrong key), carrying on would only write an
    empty result and exit 0.
    """
    if outcomes and not any(outcome.ok for outcome in outcomes):
        first = outcomes[0]
        raise TeacherError(f"all {len(outcomes)} {stage} requests to the teacher ({teacher.backend}: {teacher.model}) "
                           f"failed, e.g. {first.request.describe()}: {first.error}. Check that the server at "
                           "teacher.base_url is up and answers, or the teacher settings")


@dataclass
class RunnerStats:
    """Counters accumulated over every :meth:`TeacherRunner.run` call of one runner."""

    requests: int = 0
    unique: int = 0
    duplicates: int = 0
    cache_hits: int = 0
    sent: int = 0  # HTTP attempts, retries included
    answered: int = 0  # unique requests answered now (not from the cache)
    failed: int = 0  # unique requests that still failed after their retries
    retries: int = 0
    retry_reasons: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    schema_answers: int = 0  # unique answers (fetched or cached) to requests with a JSON schema
    schema_valid: int = 0  # ... whose whole text is JSON valid under the schema
    schema_constrained: int = 0  # ... produced under the schema (constrained decoding / response_format sent)
    schema_ignored: int = 0  # constrained, yet invalid, and if cut at max_tokens not even a valid prefix
    cost_usd: float = 0.0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def requests_per_second(self) -> float:
        """Requests handled (cache hits and duplicates included) per wall-clock second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["retry_reasons"] = dict(sorted(self.retry_reasons.items()))
        data["cost_usd"] = round(self.cost_usd, 6)
        data["seconds"] = round(self.seconds, 3)
        data["requests_per_second"] = round(self.requests_per_second, 3)
        return data


def retry_reason(error: TransientTeacherError) -> str:
    """The key a retry is counted under: HTTP status, else ``timeout``/``connection``, else ``other``."""
    if error.status is not None:
        return str(error.status)
    for candidate in (error, error.__cause__):
        if candidate is None:
            continue
        text = f"{type(candidate).__name__} {candidate}".lower()
        if isinstance(candidate, TimeoutError) or "timeout" in text or "timed out" in text:
            return "timeout"
        if isinstance(candidate, ConnectionError) or "connection" in text:
            return "connection"
    return "other"


def backoff_delay(
    retry_index: int, initial_s: float, max_s: float, retry_after: float | None, rng: random.Random
) -> float:
    """Full-jitter exponential backoff, never shorter than the server's ``retry_after`` hint."""
    jittered = rng.uniform(0.0, min(max_s, initial_s * 2**retry_index))
    return max(jittered, retry_after or 0.0)


class TeacherRunner:
    """Runs batches of requests against one teacher; reusable, with stats summed over batches.

    The runner neither opens nor closes the teacher or the cache: the caller owns both (open the
    cache with ``ResponseCache(config.cache_path)`` when ``config.cache`` is true). ``rate_window_s``
    is the limiter window, 60 s for the per-minute limits of the config; tests shorten it.
    """

    def __init__(
        self,
        teacher: Teacher,
        config: TeacherConfig,
        cache: ResponseCache | None = None,
        progress: bool = True,
        rate_window_s: float = 60.0,
        rng: random.Random | None = None,
    ):
        self.teacher = teacher
        self.config = config
        self.cache = cache
        self.progress = progress
        self.stats = RunnerStats()
        self.limiter = RateLimiter(config.requests_per_minute, config.tokens_per_minute, window_s=rate_window_s)
        self._rng = rng or random.Random()
        self._log = get_logger()
        self._semaphore: asyncio.Semaphore | None = None
        self._semaphore_loop: asyncio.AbstractEventLoop | None = None
        self._timeouts_in_a_row = 0

    async def run(self, requests: Sequence[TeacherRequest], description: str = "") -> list[Outcome]:
        """Answer ``requests``; the outcomes come back in input order, one per request."""
        started = time.perf_counter()
        backend, model = self.teacher.backend, self.teacher.model
        keys = [self.teacher.cache_key(request) for request in requests]
        first_request: dict[str, TeacherRequest] = {}
        for key, request in zip(keys, requests):
            first_request.setdefault(key, request)
        self.stats.requests += len(requests)
        self.stats.unique += len(first_request)
        self.stats.duplicates += len(requests) - len(first_request)

        resolved: dict[str, Outcome] = {}
        to_send: list[tuple[str, TeacherRequest]] = []
        for key, request in first_request.items():
            response = self.cache.get(key) if self.cache is not None else None
            if response is None:
                to_send.append((key, request))
                continue
            resolved[key] = Outcome(request, response, cached=True)
            self.stats.cache_hits += 1
            self.stats.cached_prompt_tokens += response.usage.prompt_tokens
            self.stats.cached_completion_tokens += response.usage.completion_tokens

        try:
            with progress_bar(self.progress, fields="cached {task.fields[hits]}  failed {task.fields[failed]}") as bar:
                task_id = bar.add_task(escape(description or f"{backend}:{model}"), total=len(first_request),
                                       completed=len(resolved), hits=len(resolved), failed=0)
                failed_here = 0

                async def fetch_and_show(key: str, request: TeacherRequest) -> None:
                    nonlocal failed_here
                    outcome = await self._fetch(key, request)
                    resolved[key] = outcome
                    failed_here += outcome.error is not None
                    bar.update(task_id, advance=1, failed=failed_here)

                await _run_all([fetch_and_show(key, request) for key, request in to_send])
        finally:
            self.stats.seconds += time.perf_counter() - started
        self._check_schemas(resolved.values(), description)
        self._warn_if_many_failed(list(resolved.values()), description)
        return [dataclasses.replace(resolved[key], request=request) for key, request in zip(keys, requests)]

    async def _fetch(self, key: str, request: TeacherRequest) -> Outcome:
        config = self.config
        estimate = estimate_request_tokens(request)
        attempts = 0
        while True:
            attempts += 1
            async with self._loop_semaphore():
                reservation = await self.limiter.acquire(estimate)
                self.stats.sent += 1
                try:
                    response = await self.teacher.complete(request)
                except TransientTeacherError as exc:
                    error = exc
                else:
                    self._timeouts_in_a_row = 0
                    usage = response.usage
                    reservation.reconcile(usage.prompt_tokens + usage.completion_tokens)
                    if self.cache is not None:
                        self.cache.put(key, self.teacher.backend, self.teacher.model, request, response)
                    self._count_answer(response)
                    return Outcome(request, response, attempts=attempts)
            reason = retry_reason(error)
            self._stop_if_too_slow(reason)
            if attempts > config.max_retries:
                label = f"HTTP {error.status}" if error.status is not None else reason
                message = f"{label} after {attempts} attempts: {error}"
                self.stats.failed += 1
                self._log.warning("teacher request failed: %s: %s", request.describe(), message)
                return Outcome(request, error=message, attempts=attempts)
            self.stats.retries += 1
            self.stats.retry_reasons[reason] += 1
            delay = backoff_delay(attempts - 1, config.backoff_initial_s, config.backoff_max_s, error.retry_after,
                                  self._rng)
            self._log.info("retrying %s in %.2fs (attempt %d of %d failed, %s: %s)", request.describe(), delay,
                           attempts, config.max_retries + 1, reason, error)
            await asyncio.sleep(delay)

    def _stop_if_too_slow(self, reason: str) -> None:
        """Count timed-out attempts in a row (an answer resets the count); at ``stop_after_timeouts`` stop."""
        self._timeouts_in_a_row = self._timeouts_in_a_row + 1 if reason == "timeout" else 0
        limit = self.config.stop_after_timeouts
        if limit is not None and self._timeouts_in_a_row >= limit:
            raise TeacherError(
                f"{self._timeouts_in_a_row} attempts in a row timed out after teacher.timeout_s="
                f"{self.config.timeout_s:g} s at {self.teacher.describe().get('base_url') or self.teacher.model}: "
                "the teacher answers more slowly than that. Raise teacher.timeout_s or lower teacher.concurrency "
                "(teacher.stop_after_timeouts sets when to stop; answers received so far stay in the cache)")

    def _warn_if_many_failed(self, outcomes: list[Outcome], description: str) -> None:
        """More than ``teacher.warn_failed_share`` of the batch failed: a warning in the log (and so on the console
        under the CLI) and in ``stats.warnings`` (metrics.json and the report)."""
        failed = [outcome for outcome in outcomes if not outcome.ok]
        threshold = self.config.warn_failed_share
        if not failed or len(failed) <= threshold * len(outcomes):
            return
        message = (f"{len(failed)} of {len(outcomes)} {description or 'teacher'} requests failed after their retries "
                   f"(more than teacher.warn_failed_share={threshold:g}), e.g. {failed[0].error}")
        self.stats.warnings.append(message)
        self._log.warning(message)

    def _check_schemas(self, outcomes: Any, description: str) -> None:
        ignored = 0
        for outcome in outcomes:
            schema, response = outcome.request.json_schema, outcome.response
            if schema is None or response is None:
                continue
            valid = schema_problem(response.text, schema) is None
            self.stats.schema_answers += 1
            self.stats.schema_valid += valid
            if response.constrained:
                self.stats.schema_constrained += 1
                cut_on_track = response.finish_reason == "length" and is_schema_prefix(response.text, schema)
                ignored += not valid and not cut_on_track
        self.stats.schema_ignored += ignored
        if ignored:
            self._log.warning(
                "%s: %d answers of %s do not match their JSON schema although it was enforced; with the openai "
                "backend this server ignores response_format json_schema. They are parsed from free text and "
                "checked like any answer (runner.schema_ignored in metrics.json)",
                description or "teacher", ignored, self.teacher.describe())

    def _count_answer(self, response: TeacherResponse) -> None:
        prompt, completion = response.usage.prompt_tokens, response.usage.completion_tokens
        self.stats.answered += 1
        self.stats.prompt_tokens += prompt
        self.stats.completion_tokens += completion
        self.stats.cost_usd += (prompt * self.config.price_input_per_million
                                + completion * self.config.price_output_per_million) / 1e6

    def _loop_semaphore(self) -> asyncio.Semaphore:
        """The concurrency bound for the running loop, shared by overlapping ``run`` calls."""
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore_loop is not loop:
            self._semaphore, self._semaphore_loop = asyncio.Semaphore(self.config.concurrency), loop
        return self._semaphore


async def _run_all(coroutines: list[Any]) -> None:
    """Run coroutines as tasks; on the first exception (or our own cancellation) cancel the rest and raise."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    if not tasks:
        return
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def run_requests(
    teacher: Teacher,
    config: TeacherConfig,
    requests: Sequence[TeacherRequest],
    cache: ResponseCache | None = None,
    progress: bool = True,
    description: str = "",
) -> tuple[list[Outcome], RunnerStats]:
    """Synchronous one-batch helper around :class:`TeacherRunner` (runs its own event loop).

    The caller still owns the teacher and the cache: close them (``await teacher.aclose()``,
    ``cache.close()``) when done.
    """
    runner = TeacherRunner(teacher, config, cache=cache, progress=progress)
    outcomes = asyncio.run(runner.run(requests, description))
    return outcomes, runner.stats
