"""An OpenAI-compatible chat-completions server on 127.0.0.1 for tests and benchmarks.

Why: the ``openai`` backend, the runner's retries and the cache must be exercised over real HTTP
with the real ``openai`` client, but without network access, keys or cost. The stub answers
``POST /v1/chat/completions`` with ``responder(body)`` as the assistant message and can inject the
faults real servers produce, reproducibly.

Per request, in this order:

1. ``api_key`` set and ``Authorization: Bearer <key>`` differs -> 401 (OpenAI error JSON; like
   OpenAI's own message it echoes the key received, so clients must redact it).
2. sleep ``latency_s``.
3. one uniform draw ``u`` from ``random.Random(seed)`` (under a lock, exactly one draw per request,
   so N sequential requests always get the same faults): ``u < p_429`` -> 429 with header
   ``retry-after: retry_after_s``; ``u < p_429 + p_500`` -> 500; ``u < p_429 + p_500 + p_malformed``
   -> the answer's content is replaced by :func:`corrupt_content` of it (truncated JSON);
   ``u < p_429 + p_500 + p_malformed + p_disconnect`` -> the server sends the status line, the
   headers (with the full ``Content-Length``) and the first half of the body, then closes the
   connection: a server that dies mid-answer. It is counted under status 0;
   ``u < ... + p_html`` -> 200 with an HTML page as the body (what a proxy in front of a dead server sends).
4. ``known_models`` given and ``body["model"]`` not in it -> 404 ``model_not_found``.
5. ``response_format.type == "json_schema"`` while ``supports_json_schema`` is False -> 400 saying
   response_format is unsupported (what vLLM/llama.cpp builds without guided decoding answer).
6. otherwise 200 with a ``chat.completion`` object. Usage counts words: ``prompt_tokens`` = words in
   all message contents, ``completion_tokens`` = words in the content.

:attr:`StubServer.stats` counts requests received, answers by status code, 200 answers per
:func:`body_fingerprint` (to check that a rerun sends no repeated requests), malformed answers,
and the maximum number of requests in flight at once (to check concurrency limits).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HTML_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
FINGERPRINT_FIELDS = ("messages", "model", "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "n")


def body_fingerprint(body: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the messages and sampling fields of a request body.

    ``response_format`` and transport options are left out: the same question asked with and
    without a schema is the same request for duplicate counting.
    """
    fields = {key: body.get(key) for key in FINGERPRINT_FIELDS}
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def corrupt_content(text: str) -> str:
    """The deterministic corruption of a malformed answer: its first half ("{" when empty)."""
    return text[: len(text) // 2] if text else "{"


def _count_words(text: str) -> int:
    return len(text.split())


@dataclass
class _Answer:
    """One HTTP answer: status, JSON payload, extra headers; ``malformed`` marks corrupted content."""

    status: int
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    malformed: bool = False
    disconnect: bool = False
    html: bool = False


class StubStats:
    """Thread-safe counters of what the server received and answered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.by_status: Counter[int] = Counter()
        self.answered_by_fingerprint: Counter[str] = Counter()
        self.malformed = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def request_started(self) -> None:
        with self._lock:
            self.received += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def request_finished(self, status: int, fingerprint: str, malformed: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            self.by_status[status] += 1
            if status == 200:
                self.answered_by_fingerprint[fingerprint] += 1
                self.malformed += int(malformed)

    @property
    def answered(self) -> int:
        """Number of 200 answers."""
        with self._lock:
            return self.by_status[200]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "received": self.received,
                "by_status": dict(self.by_status),
                "answered_by_fingerprint": dict(self.answered_by_fingerprint),
                "malformed": self.malformed,
                "max_in_flight": self.max_in_flight,
            }


class StubServer:
    """A threaded OpenAI-compatible stub; use as a context manager, point clients at :attr:`base_url`."""

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], str],
        latency_s: float = 0.0,
        p_429: float = 0.0,
        p_500: float = 0.0,
        p_malformed: float = 0.0,
        p_disconnect: float = 0.0,
        p_html: float = 0.0,
        seed: int = 0,
        supports_json_schema: bool = True,
        api_key: str | None = None,
        retry_after_s: float = 0.05,
        known_models: Collection[str] | None = None,
    ):
        faults = (p_429, p_500, p_malformed, p_disconnect, p_html)
        if min(faults) < 0 or sum(faults) > 1:
            raise ValueError("p_429, p_500, p_malformed, p_disconnect and p_html must be >= 0 and sum to at most 1")
        self.responder = responder
        self.latency_s = latency_s
        self.p_429 = p_429
        self.p_500 = p_500
        self.p_malformed = p_malformed
        self.p_disconnect = p_disconnect
        self.p_html = p_html
        self.supports_json_schema = supports_json_schema
        self.api_key = api_key
        self.retry_after_s = retry_after_s
        self.known_models = set(known_models) if known_models is not None else None
        self.stats = StubStats()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._completion_ids = itertools.count(1)

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("StubServer is not started; use it as a context manager or call start()")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> StubServer:
        handler = type("BoundStubHandler", (_StubHandler,), {"stub": self})
        self._httpd = _QuietThreadingServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="adaptlab-stub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def draw_fault(self) -> str | None:
        """One uniform draw per request: "429", "500", "malformed", "disconnect", "html" or None (module doc)."""
        with self._rng_lock:
            u = self._rng.random()
        if u < self.p_429:
            return "429"
        if u < self.p_429 + self.p_500:
            return "500"
        if u < self.p_429 + self.p_500 + self.p_malformed:
            return "malformed"
        if u < self.p_429 + self.p_500 + self.p_malformed + self.p_disconnect:
            return "disconnect"
        if u < self.p_429 + self.p_500 + self.p_malformed + self.p_disconnect + self.p_html:
            return "html"
        return None

    def handle(self, body: dict[str, Any], authorization: str | None) -> _Answer:
        """Decide the answer to one request body (see the module docstring). Does not touch stats."""
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            received = (authorization or "").removeprefix("Bearer ")
            message = f"Incorrect API key provided: {received}."
            return _Answer(401, _error(message, "invalid_request_error", "invalid_api_key"))
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        fault = self.draw_fault()
        if fault == "429":
            payload = _error("Rate limit reached; retry later.", "requests", "rate_limit_exceeded")
            return _Answer(429, payload, {"retry-after": str(self.retry_after_s)})
        if fault == "500":
            return _Answer(500, _error("The server had an error while processing your request.", "server_error", None))
        if fault == "html":
            return _Answer(200, {}, html=True)
        model = str(body.get("model", ""))
        if self.known_models is not None and model not in self.known_models:
            message = f"The model `{model}` does not exist."
            return _Answer(404, _error(message, "invalid_request_error", "model_not_found"))
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema" and not self.supports_json_schema:
            message = "response_format of type json_schema is unsupported by this server"
            return _Answer(400, _error(message, "invalid_request_error", None, param="response_format"))
        content = self.responder(body)
        if fault == "malformed":
            content = corrupt_content(content)
        return _Answer(200, self._completion(body, model, content), malformed=fault == "malformed",
                       disconnect=fault == "disconnect")

    def _completion(self, body: dict[str, Any], model: str, content: str) -> dict[str, Any]:
        prompt_words = sum(_count_words(str(m.get("content") or "")) for m in body.get("messages", []))
        completion_words = _count_words(content)
        return {
            "id": f"chatcmpl-stub-{next(self._completion_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_words,
                "completion_tokens": completion_words,
                "total_tokens": prompt_words + completion_words,
            },
        }


def _error(message: str, kind: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _QuietThreadingServer(ThreadingHTTPServer):
    """A deep listen backlog (the default 5 drops bursts of connections, which the kernel retries
    after 1-3 s) and no tracebacks when a client goes away mid-answer (a killed generator)."""

    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            super().handle_error(request, client_address)


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects
    disable_nagle_algorithm = True  # headers and body go out as two writes; Nagle would delay the body ~40 ms
    stub: StubServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, _error(f"unknown path {self.path}", "invalid_request_error", None), {})
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            self._send(400, _error(f"request body is not JSON: {exc}", "invalid_request_error", None), {})
            return
        self.stub.stats.request_started()
        try:
            answer = self.stub.handle(body, self.headers.get("Authorization"))
        except Exception as exc:  # a broken responder is answered, not hidden in a server thread's traceback
            answer = _Answer(500, _error(f"stub responder raised {exc!r}", "server_error", None))
        status = 0 if answer.disconnect else answer.status
        self.stub.stats.request_finished(status, body_fingerprint(body), answer.malformed)
        self._send(answer.status, answer.payload, answer.headers, cut_off=answer.disconnect, html=answer.html)

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str], cut_off: bool = False,
              html: bool = False) -> None:
        data = HTML_PAGE if html else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if html else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if cut_off:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks print their own results."""
