"""The ``openai`` backend: any OpenAI-compatible chat-completions server through the official client.

One backend serves OpenAI, vLLM, SGLang, Ollama, llama.cpp's server and TGI; only ``base_url``,
``model`` and the key variable change. The client is built with ``max_retries=0`` because the
runner owns retries, backoff and rate limits for every backend alike.

Keys: the key is read from the environment variable named by ``teacher.api_key_env`` and is never
written to messages, logs, :meth:`OpenAICompatTeacher.describe` or exceptions (server error texts
that echo it are redacted). Local servers usually need no key: when the variable is unset and
``base_url`` points at localhost / 127.0.0.1 / ::1, the placeholder key ``"EMPTY"`` is sent (the
convention of vLLM's docs).

Structured output (``teacher.structured_output``), used when a request carries a JSON schema:

- ``json_schema``: always send ``response_format={"type": "json_schema", ...}``; a server that refuses
  it is a :class:`TeacherError`.
- ``off``: never send it; prompts ask for JSON and callers extract it from free text.
- ``auto``: send it; the first 400 that mentions response_format / json_schema marks this server as
  lacking support (logged once) and the request is sent again without it, as are all later ones.

Each answer records whether the schema was sent (``constrained``). Servers may also accept
``response_format`` and ignore it (``transformers serve`` 5.x does): the runner checks every answer
against its schema and counts those as ``schema_ignored`` (see :mod:`adaptlab.teacher.runner`).

Error mapping (what the runner retries): 429 -> :class:`TransientTeacherError` with the
``retry-after`` hint; 408, 409 and >= 500 -> transient (the statuses the openai client itself
retries); timeouts and dropped connections -> transient; 401/403/404 and other 4xx ->
:class:`TeacherError` saying what to check.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlparse

import openai
from openai.types.chat import ChatCompletion

from adaptlab.runs import get_logger
from adaptlab.teacher.base import (
    Teacher,
    TeacherError,
    TeacherRequest,
    TeacherResponse,
    TransientTeacherError,
    Usage,
    cache_key,
)
from adaptlab.teacher.config import TeacherConfig

PLACEHOLDER_KEY = "EMPTY"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
TRANSIENT_STATUSES = frozenset({408, 409})
SCHEMA_REFUSAL_WORDS = ("response_format", "json_schema")
NON_JSON_QUOTE = 120  # characters of a non-JSON answer quoted in the error


def is_local_url(base_url: str | None) -> bool:
    """True when ``base_url`` points at this machine (where servers usually run without a key)."""
    return bool(base_url) and urlparse(base_url).hostname in LOCAL_HOSTS


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds; HTTP dates are ignored)."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        raw = headers.get(name) if headers is not None else None
        if raw is None:
            continue
        try:
            return max(0.0, float(raw) * scale)
        except ValueError:
            continue
    return None


class OpenAICompatTeacher(Teacher):
    """A teacher behind an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    backend = "openai"

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        api_key_env: str,
        base_url: str | None = None,
        structured_output: str = "auto",
        timeout_s: float = 120.0,
    ):
        super().__init__(model)
        self.api_key_env = api_key_env
        self.structured_output = structured_output
        self._api_key = api_key
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s)
        self.base_url = str(self._client.base_url)
        self.json_schema_unsupported = False

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> OpenAICompatTeacher:
        api_key = _read_api_key(cfg.api_key_env, cfg.base_url)
        return cls(
            cfg.model,
            api_key=api_key,
            api_key_env=cfg.api_key_env,
            base_url=cfg.base_url,
            structured_output=cfg.structured_output,
            timeout_s=cfg.timeout_s,
        )

    async def complete(self, request: TeacherRequest) -> TeacherResponse:
        send_schema = request.json_schema is not None and (
            self.structured_output == "json_schema"
            or (self.structured_output == "auto" and not self.json_schema_unsupported)
        )
        try:
            try:
                return await self._create(request, send_schema)
            except openai.BadRequestError as exc:
                if not (send_schema and self.structured_output == "auto" and _refuses_schema(exc)):
                    raise
                self._note_schema_unsupported(exc)
                return await self._create(request, send_schema=False)
        except openai.OpenAIError as exc:
            raise self._map_error(exc) from None  # the original may quote the key; it is not chained

    async def _create(self, request: TeacherRequest, send_schema: bool) -> TeacherResponse:
        sampling = request.sampling
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
        if send_schema:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.json_schema, "strict": False},
            }
        try:
            completion = await self._client.chat.completions.create(**kwargs)
        except json.JSONDecodeError as exc:  # a JSON content type with another body
            raise TransientTeacherError(f"{self.base_url} answered {request.describe()} with a body that is not "
                                        f"JSON ({exc.msg}): {exc.doc[:NON_JSON_QUOTE]!r}") from None
        if not isinstance(completion, ChatCompletion):  # the client hands back other content types as text
            raise TransientTeacherError(f"{self.base_url} answered {request.describe()} with a body that is not "
                                        f"JSON: {str(completion)[:NON_JSON_QUOTE]!r}")
        if not completion.choices:
            raise TransientTeacherError(f"{self.base_url} answered with no choices for {request.describe()}")
        choice = completion.choices[0]
        usage = completion.usage
        return TeacherResponse(
            text=choice.message.content or "",
            usage=Usage(
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            ),
            model=completion.model or self.model,
            finish_reason=choice.finish_reason,
            constrained=send_schema if request.json_schema is not None else None,
        )

    def _note_schema_unsupported(self, exc: openai.BadRequestError) -> None:
        if not self.json_schema_unsupported:
            self.json_schema_unsupported = True
            get_logger().info(
                "teacher %s at %s refused response_format json_schema (%s); sending free-text requests "
                "from now on (set teacher.structured_output: off to skip the first try)",
                self.model, self.base_url, self._server_message(exc),
            )

    def _map_error(self, exc: openai.OpenAIError) -> Exception:
        where = f"model {self.model!r} at {self.base_url}"
        if isinstance(exc, openai.APITimeoutError):
            return TransientTeacherError(f"timeout waiting for {where}", status=None)
        if isinstance(exc, openai.APIConnectionError):
            return TransientTeacherError(f"connection to {where} failed: {self._redact(str(exc))}", status=None)
        if not isinstance(exc, openai.APIStatusError):
            return TeacherError(f"request to {where} failed: {self._redact(str(exc))}")
        status = exc.status_code
        detail = self._server_message(exc)
        if isinstance(exc, openai.RateLimitError):
            hint = parse_retry_after(exc.response.headers)
            return TransientTeacherError(f"rate limited by {where} (429): {detail}", status=429, retry_after=hint)
        if status >= 500 or status in TRANSIENT_STATUSES:
            return TransientTeacherError(f"server error {status} from {where}: {detail}", status=status)
        if isinstance(exc, openai.AuthenticationError):
            return TeacherError(f"{where} rejected the API key (401): {detail}. Check the key in ${self.api_key_env}.")
        if isinstance(exc, openai.PermissionDeniedError):
            return TeacherError(
                f"{where} denied access (403): {detail}. Check that the key in ${self.api_key_env} may use this model."
            )
        if isinstance(exc, openai.NotFoundError):
            return TeacherError(
                f"model {self.model!r} not found at {self.base_url} (404): {detail}. "
                "Check teacher.model and teacher.base_url (it usually ends in /v1)."
            )
        if isinstance(exc, openai.BadRequestError) and _refuses_schema(exc):
            return TeacherError(
                f"{where} does not support response_format json_schema (400): {detail}. "
                "Set teacher.structured_output to auto or off."
            )
        return TeacherError(f"{where} refused the request ({status}): {detail}")

    def _server_message(self, exc: openai.APIStatusError) -> str:
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else None
        return self._redact(str(message) if message else exc.message)

    def _redact(self, text: str) -> str:
        if self._api_key and self._api_key != PLACEHOLDER_KEY:
            text = text.replace(self._api_key, "***")
        return text

    def cache_key(self, request: TeacherRequest) -> str:
        return cache_key(self.backend, self.model, request, endpoint=self.base_url.rstrip("/"))

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "structured_output": self.structured_output,
        }

    async def aclose(self) -> None:
        await self._client.close()


def _read_api_key(api_key_env: str, base_url: str | None) -> str:
    key = os.environ.get(api_key_env)
    if key:
        return key
    if is_local_url(base_url):
        return PLACEHOLDER_KEY
    raise TeacherError(
        f"environment variable {api_key_env} is not set (config key teacher.api_key_env names it). "
        f"Export your API key in {api_key_env}, or point teacher.api_key_env at the variable that holds it."
    )


def _refuses_schema(exc: openai.APIStatusError) -> bool:
    text = f"{exc.message} {exc.body}".lower()
    return any(word in text for word in SCHEMA_REFUSAL_WORDS)
