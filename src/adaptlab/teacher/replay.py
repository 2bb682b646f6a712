"""Replay recorded teacher answers from a cassette, and record cassettes from a real backend.

A cassette is a JSONL file, one answer per line::

    {"request_hash": "<64 hex>", "request": {<TeacherRequest.hashed_fields()>},
     "response": {<TeacherResponse.to_json()>}, "tag": "<request tag>"}

Replay is looked up by ``request_hash`` alone (:attr:`TeacherRequest.hash` does not depend on the
backend or model), so a cassette recorded against one server replays anywhere, offline, for free:
tests, CI, demos and exact reruns of a generation. If a line appears twice the last one wins, which
lets a recording be appended to. ``request`` and ``tag`` are kept for people reading the cassette.

Recording wraps a real backend (:class:`RecordingTeacher`) and appends every answer as it arrives,
flushed line by line, so an interrupted recording keeps everything it received.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from adaptlab.errors import ConfigError, DataError
from adaptlab.runs import atomic_write_text
from adaptlab.teacher.base import Teacher, TeacherError, TeacherRequest, TeacherResponse
from adaptlab.teacher.config import TeacherConfig


def cassette_line(request: TeacherRequest, response: TeacherResponse) -> str:
    """One cassette line (JSON, no trailing newline) for an answered request."""
    entry = {
        "request_hash": request.hash,
        "request": request.hashed_fields(),
        "response": response.to_json(),
        "tag": request.tag,
    }
    return json.dumps(entry, ensure_ascii=False)


def write_cassette(entries: Iterable[tuple[TeacherRequest, TeacherResponse]], path: str | Path) -> Path:
    """Write ``(request, response)`` pairs as a new cassette at ``path`` (atomically)."""
    text = "".join(cassette_line(request, response) + "\n" for request, response in entries)
    return atomic_write_text(path, text)


def read_cassette(path: str | Path) -> dict[str, TeacherResponse]:
    """Map request hash -> recorded response; the last line wins for a hash recorded twice."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            "cassette not found. Record one by running with teacher.record=true and a real backend, "
            "or set teacher.cassette to an existing cassette file.",
            path,
        )
    answers: dict[str, TeacherResponse] = {}
    line_number = 0
    try:
        with path.open(encoding="utf-8") as fh:
            for line_number, line in enumerate(fh, start=1):
                if line.strip():
                    request_hash, response = _parse_line(line, path, line_number)
                    answers[request_hash] = response
    except UnicodeDecodeError:
        raise DataError("cassette is not UTF-8 text; is this the right file?", path, line_number + 1) from None
    return answers


def _parse_line(line: str, path: Path, line_number: int) -> tuple[str, TeacherResponse]:
    expected = 'expected {"request_hash": "...", "response": {"text": "...", ...}, ...}'
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"cassette line is not valid JSON ({exc.msg}); {expected}. "
                        "Fix or delete the line (an interrupted recording can leave a partial last line).",
                        path, line_number) from None
    if not isinstance(entry, dict):
        raise DataError(f"cassette line is a {type(entry).__name__}, not an object; {expected}", path, line_number)
    request_hash = entry.get("request_hash")
    response = entry.get("response")
    if not isinstance(request_hash, str) or not request_hash:
        raise DataError(f"cassette line has no string 'request_hash'; {expected}", path, line_number)
    if not isinstance(response, dict) or "text" not in response:
        raise DataError(f"cassette line has no 'response' object with a 'text'; {expected}", path, line_number)
    try:
        return request_hash, TeacherResponse.from_json(response)
    except (TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"cassette line has a malformed 'response' ({exc}); {expected}", path, line_number) from None


class ReplayTeacher(Teacher):
    """Answers every request from a cassette; a request that is not in it is an error, never a guess."""

    backend = "replay"

    def __init__(self, cassette_path: str | Path, model: str = "replay"):
        super().__init__(model)
        self.cassette_path = Path(cassette_path)
        self._answers = read_cassette(self.cassette_path)

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> ReplayTeacher:
        if not cfg.cassette:
            raise ConfigError(
                "teacher.cassette is not set: the replay backend answers from a recorded cassette (JSONL). "
                "Set teacher.cassette=PATH, or record one with a real backend and teacher.record=true."
            )
        return cls(cfg.cassette, model=cfg.model)

    def __len__(self) -> int:
        return len(self._answers)

    async def complete(self, request: TeacherRequest) -> TeacherResponse:
        response = self._answers.get(request.hash)
        if response is None:
            raise TeacherError(
                f"request {request.describe()} (hash {request.hash}) is not in cassette {self.cassette_path}. "
                "Replay needs exactly the prompts, schema, sampling and seeds that were recorded: use the "
                "same config and data, or record the missing answers with a real backend and teacher.record=true."
            )
        return response

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "cassette": str(self.cassette_path), "entries": len(self._answers)}


class RecordingTeacher(Teacher):
    """Forwards requests to ``inner`` and appends each answer to the cassette at ``cassette_path``.

    ``backend`` and ``model`` are the inner teacher's, so cache keys and reports are those of the
    real backend.
    """

    def __init__(self, inner: Teacher, cassette_path: str | Path):
        super().__init__(inner.model)
        self.inner = inner
        self.backend = inner.backend
        self.cassette_path = Path(cassette_path)
        self.cassette_path.parent.mkdir(parents=True, exist_ok=True)
        self.recorded = 0
        self._terminate_partial_last_line()

    async def complete(self, request: TeacherRequest) -> TeacherResponse:
        response = await self.inner.complete(request)
        with self.cassette_path.open("a", encoding="utf-8") as fh:
            fh.write(cassette_line(request, response) + "\n")
            fh.flush()
        self.recorded += 1
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def cache_key(self, request: TeacherRequest) -> str:
        return self.inner.cache_key(request)

    def prepare_json_schema(self, schema: dict[str, Any], where: str) -> None:
        self.inner.prepare_json_schema(schema, where)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "recording_to": str(self.cassette_path)}

    def _terminate_partial_last_line(self) -> None:
        """Start appending on a fresh line even if an earlier recording was killed mid-line."""
        if not self.cassette_path.is_file() or self.cassette_path.stat().st_size == 0:
            return
        with self.cassette_path.open("rb") as fh:
            fh.seek(-1, 2)
            ends_with_newline = fh.read(1) == b"\n"
        if not ends_with_newline:
            with self.cassette_path.open("a", encoding="utf-8") as fh:
                fh.write("\n")
