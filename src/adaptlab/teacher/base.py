"""One small async interface for every teacher backend, and the request hash everything keys on.

A backend turns a :class:`TeacherRequest` (chat messages, sampling parameters, an optional JSON
schema for structured output) into a :class:`TeacherResponse` (text and token usage). Everything
else (caching, bounded concurrency, retries, rate limits, accounting) lives in
:mod:`adaptlab.teacher.runner` and works the same for every backend.

Backends raise :class:`TransientTeacherError` for failures worth retrying (HTTP 429, 5xx,
timeouts, dropped connections) and :class:`TeacherError` for the rest (bad key, unknown model,
a request missing from a replay cassette), which stop the run with a message for people.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

from adaptlab.errors import AdaptlabError


class TeacherError(AdaptlabError):
    """A teacher request failed for a reason that retrying will not fix."""


class TransientTeacherError(Exception):
    """A failure worth retrying with backoff: rate limited, server error, timeout, connection drop.

    ``retry_after`` (seconds) is the server's hint when it sent one.
    """

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters sent with a request; part of the request hash."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = 0


@dataclass(frozen=True)
class TeacherRequest:
    """One chat completion request.

    ``variant`` asks the same question again for a different sample (it changes the hash, so the
    cache keeps both answers). ``tag`` is a human-readable label for progress and rejects; it is
    not part of the hash.
    """

    messages: tuple[Message, ...]
    sampling: Sampling = Sampling()
    json_schema: dict[str, Any] | None = None
    variant: int = 0
    tag: str = field(default="", compare=False)

    def hashed_fields(self) -> dict[str, Any]:
        return {
            "messages": [asdict(m) for m in self.messages],
            "sampling": asdict(self.sampling),
            "json_schema": self.json_schema,
            "variant": self.variant,
        }

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON of messages, sampling, schema and variant (64 hex chars).

        Independent of the backend and model so that a cassette recorded from one server replays
        anywhere; the cache adds backend and model (see :func:`cache_key`).
        """
        return _sha256_json(self.hashed_fields())

    def describe(self, width: int = 80) -> str:
        """Short description for error messages: tag, hash prefix and the last user message."""
        last = next((m.content for m in reversed(self.messages) if m.role == "user"), "")
        last = " ".join(last.split())
        if len(last) > width:
            last = last[: width - 3] + "..."
        tag = f"{self.tag} " if self.tag else ""
        return f"{tag}[{self.hash[:12]}] {last!r}"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class TeacherResponse:
    """One answer. ``constrained`` says whether it was produced under the request's JSON schema
    (``hf_local``: constrained decoding; ``openai``: ``response_format`` json_schema sent); ``None``
    when the request had no schema or the answer predates the field (old caches and cassettes)."""

    text: str
    usage: Usage = Usage()
    model: str = ""
    finish_reason: str | None = None
    constrained: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TeacherResponse:
        usage = obj.get("usage") or {}
        return cls(
            text=str(obj["text"]),
            usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            model=str(obj.get("model", "")),
            finish_reason=obj.get("finish_reason"),
            constrained=obj.get("constrained"),
        )


class Teacher(ABC):
    """A teacher backend. Subclasses set ``backend`` and implement :meth:`complete`."""

    backend: str = ""

    def __init__(self, model: str):
        self.model = model

    @abstractmethod
    async def complete(self, request: TeacherRequest) -> TeacherResponse:
        """Answer one request; raise TransientTeacherError (retried) or TeacherError (fatal)."""

    async def aclose(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections, threads or models; called once when a run ends."""

    def cache_key(self, request: TeacherRequest) -> str:
        """The persistent cache key of this teacher's answer to ``request`` (see :func:`cache_key`)."""
        return cache_key(self.backend, self.model, request)

    def prepare_json_schema(self, schema: dict[str, Any], where: str) -> None:
        """Check before a run that ``schema`` (described by ``where``) can be used: a valid JSON Schema
        that answers are validated against; backends that decode under it also compile it here.
        Raises :class:`TeacherError` naming ``where``."""
        from adaptlab.teacher.schema_check import check_schema

        check_schema(schema, where)

    def describe(self) -> dict[str, Any]:
        """What the run report shows about this teacher. Never include secrets."""
        return {"backend": self.backend, "model": self.model}


def cache_key(backend: str, model: str, request: TeacherRequest, decoding: str | None = None,
              endpoint: str | None = None) -> str:
    """The persistent cache key: backend, model and the request hash.

    ``decoding`` names a decoding mode that changes the answer to the same request (``hf_local``'s
    ``"json_schema"`` constrained decoding); without it the key is what it always was, so caches
    written before constrained decoding existed still answer unconstrained requests. ``endpoint`` is the
    server (the openai backend's ``base_url``): two servers that serve a model under the same name are
    different teachers.
    """
    fields = {"backend": backend, "model": model, "request": request.hash}
    if decoding is not None:
        fields["decoding"] = decoding
    if endpoint is not None:
        fields["endpoint"] = endpoint
    return _sha256_json(fields)


def _sha256_json(obj: Any) -> str:
    canonical = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
