"""Client-side rate limits: requests per minute and tokens per minute over a sliding window.

Servers enforce both limits and answer HTTP 429 when a client exceeds them; retrying after a 429
wastes a round trip and, with many workers, turns into a thundering herd. Staying under the limits
on the client side is cheaper.

Rule (sliding window of ``window_s`` seconds, 60 for "per minute"): a request may start at time
``t`` when, counting the reservations made in ``(t - window_s, t]``,

    started_requests + 1 <= requests_per_minute
    reserved_tokens + estimate <= tokens_per_minute

Otherwise it waits until the oldest reservation leaves the window and checks again. The token
estimate made before sending (``prompt characters / 4 + max_tokens``, see
:func:`estimate_request_tokens`) is replaced by the real usage once the answer arrives
(:meth:`Reservation.reconcile`), which frees the unused part of the budget. A single request whose
estimate exceeds the whole token budget is let through when the window is empty, since waiting
would never help. Waiters are served first come, first served (an ``asyncio.Lock`` is FIFO).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from adaptlab.teacher.base import TeacherRequest

CHARS_PER_TOKEN = 4  # rough average for English text with BPE tokenizers


def estimate_request_tokens(request: TeacherRequest) -> int:
    """Upper-ish estimate of the tokens a request will use: prompt characters / 4 + max_tokens."""
    prompt_chars = sum(len(message.content) for message in request.messages)
    return prompt_chars // CHARS_PER_TOKEN + request.sampling.max_tokens


@dataclass
class Reservation:
    """One request's place in the window: when it started and how many tokens it counts for."""

    started_at: float
    tokens: int

    def reconcile(self, actual_tokens: int) -> None:
        """Replace the estimate with the real usage (ignored when the server reported none)."""
        if actual_tokens > 0:
            self.tokens = actual_tokens


class RateLimiter:
    """Sliding-window limiter for requests and tokens per window; ``None`` disables a limit."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.window_s = window_s
        self._clock = clock
        self._window: deque[Reservation] = deque()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    @property
    def enabled(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    async def acquire(self, estimated_tokens: int) -> Reservation:
        """Wait until a request estimated at ``estimated_tokens`` fits in the window, then reserve it."""
        if not self.enabled:
            return Reservation(self._clock(), estimated_tokens)
        async with self._loop_lock():
            while True:
                now = self._clock()
                self._forget_before(now - self.window_s)
                if self._fits(estimated_tokens):
                    reservation = Reservation(now, estimated_tokens)
                    self._window.append(reservation)
                    return reservation
                await asyncio.sleep(max(self._window[0].started_at + self.window_s - now, 1e-3))

    def _fits(self, estimated_tokens: int) -> bool:
        if not self._window:
            return True
        if self.requests_per_minute is not None and len(self._window) + 1 > self.requests_per_minute:
            return False
        if self.tokens_per_minute is not None:
            reserved = sum(reservation.tokens for reservation in self._window)
            if reserved + estimated_tokens > self.tokens_per_minute:
                return False
        return True

    def _forget_before(self, cutoff: float) -> None:
        while self._window and self._window[0].started_at <= cutoff:
            self._window.popleft()

    def _loop_lock(self) -> asyncio.Lock:
        """A lock for the running event loop (a new one if the limiter outlives an ``asyncio.run``)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock
