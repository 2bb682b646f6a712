"""ResponseCache: round trip, persistence across reopen, and a clear error for a file that is not SQLite."""

from __future__ import annotations

import json
import sqlite3

import pytest

from adaptlab.teacher.base import Message, TeacherError, TeacherRequest, TeacherResponse, Usage, cache_key
from adaptlab.teacher.cache import ResponseCache


def _request(text: str = "Which species live in the Arctic?") -> TeacherRequest:
    return TeacherRequest(messages=(Message("system", "You annotate."), Message("user", text)), tag="t1")


def test_round_trip_and_persistence(tmp_path):
    path = tmp_path / "nested" / "dir" / "cache.sqlite"
    request = _request()
    response = TeacherResponse("polar bear", Usage(12, 3), model="gpt-x", finish_reason="stop")
    key = cache_key("openai", "gpt-x", request)

    with ResponseCache(path) as cache:
        assert cache.get(key) is None
        assert len(cache) == 0
        cache.put(key, "openai", "gpt-x", request, response)
        assert cache.get(key) == response
        assert len(cache) == 1
        cache.put(key, "openai", "gpt-x", request, response)  # replacing keeps one row
        assert len(cache) == 1

    with ResponseCache(path) as reopened:
        assert reopened.get(key) == response
        assert reopened.get(cache_key("openai", "other-model", request)) is None

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    backend, model, request_hash, request_json = conn.execute(
        "SELECT backend, model, request_hash, request_json FROM responses").fetchone()
    conn.close()
    assert (backend, model, request_hash) == ("openai", "gpt-x", request.hash)
    assert json.loads(request_json) == request.hashed_fields()


def test_put_is_committed_immediately(tmp_path):
    """A second connection sees the answer without the first one closing (nothing lost on a kill)."""
    path = tmp_path / "cache.sqlite"
    cache = ResponseCache(path)
    request = _request()
    cache.put("k", "openai", "m", request, TeacherResponse("x"))
    other = ResponseCache(path)
    assert other.get("k") == TeacherResponse("x")
    other.close()
    cache.close()


def test_corrupt_file_names_path_and_remedy(tmp_path):
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not a database, just some text that is long enough to have a header" * 20)
    with pytest.raises(TeacherError) as info:
        ResponseCache(path)
    message = str(info.value)
    assert str(path) in message
    assert "Delete or move" in message


def test_closed_cache_refuses_use(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.close()
    with pytest.raises(RuntimeError, match="closed"):
        cache.get("k")
