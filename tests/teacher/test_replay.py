"""Cassettes: replay hits and misses, malformed lines, and recording a cassette that then replays."""

from __future__ import annotations

import asyncio
import json

import pytest

from adaptlab.errors import ConfigError, DataError
from adaptlab.teacher.base import Message, Teacher, TeacherError, TeacherRequest, TeacherResponse, Usage, cache_key
from adaptlab.teacher.config import TeacherConfig
from adaptlab.teacher.replay import RecordingTeacher, ReplayTeacher, write_cassette
from adaptlab.teacher.runner import run_requests


def _request(text: str, tag: str = "") -> TeacherRequest:
    return TeacherRequest(messages=(Message("system", "Annotate."), Message("user", text)), tag=tag)


class EchoTeacher(Teacher):
    backend = "echo"

    def __init__(self):
        super().__init__("echo-1")
        self.calls = 0
        self.closed = False

    async def complete(self, request: TeacherRequest) -> TeacherResponse:
        self.calls += 1
        return TeacherResponse(f"answer to {request.messages[-1].content}", Usage(7, 2), model=self.model)

    async def aclose(self) -> None:
        self.closed = True


def test_replay_hit_and_last_line_wins(tmp_path):
    path = tmp_path / "cassette.jsonl"
    first, second = _request("a", tag="t-a"), _request("b")
    write_cassette([(first, TeacherResponse("old")), (second, TeacherResponse("B")),
                    (first, TeacherResponse("new", Usage(3, 1)))], path)
    teacher = ReplayTeacher(path)
    assert len(teacher) == 2
    assert asyncio.run(teacher.complete(first)) == TeacherResponse("new", Usage(3, 1))
    assert asyncio.run(teacher.complete(second)).text == "B"
    line = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert line["request_hash"] == first.hash and line["tag"] == "t-a"
    assert line["request"] == first.hashed_fields()
    assert teacher.describe()["entries"] == 2


def test_replay_miss_names_hash_cassette_and_remedy(tmp_path):
    path = tmp_path / "cassette.jsonl"
    write_cassette([(_request("a"), TeacherResponse("A"))], path)
    missing = _request("never recorded", tag="doc-7")
    with pytest.raises(TeacherError) as info:
        asyncio.run(ReplayTeacher(path).complete(missing))
    message = str(info.value)
    assert missing.hash in message
    assert str(path) in message
    assert "doc-7" in message and "never recorded" in message
    assert "teacher.record=true" in message


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ('{"request_hash": "abc", "response": {"text": "x"', "not valid JSON"),
        ('["a list"]', "not an object"),
        ('{"response": {"text": "x"}}', "request_hash"),
        ('{"request_hash": "abc", "response": {"usage": {}}}', "'text'"),
        ('{"request_hash": "abc", "response": {"text": "x", "usage": {"prompt_tokens": "many"}}}', "malformed"),
    ],
)
def test_malformed_line_reports_path_and_line_number(tmp_path, bad_line, fragment):
    path = tmp_path / "cassette.jsonl"
    write_cassette([(_request("a"), TeacherResponse("A"))], path)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n" + bad_line + "\n")  # a blank line 2 is skipped; the bad line is line 3
    with pytest.raises(DataError) as info:
        ReplayTeacher(path)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: ")
    assert fragment in str(info.value)


def test_missing_cassette_and_missing_config_key(tmp_path):
    with pytest.raises(DataError, match="cassette not found"):
        ReplayTeacher(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="teacher.cassette"):
        ReplayTeacher.from_config(TeacherConfig(backend="replay"))
    path = write_cassette([(_request("a"), TeacherResponse("A"))], tmp_path / "c.jsonl")
    teacher = ReplayTeacher.from_config(TeacherConfig(backend="replay", model="m", cassette=str(path)))
    assert (teacher.backend, teacher.model, len(teacher)) == ("replay", "m", 1)


def test_recording_then_replaying_through_the_runner(tmp_path):
    cassette = tmp_path / "rec" / "cassette.jsonl"
    requests = [_request(f"sentence {i}", tag=f"t{i}") for i in range(4)]
    config = TeacherConfig(concurrency=2, cache=False)

    inner = EchoTeacher()
    recorder = RecordingTeacher(inner, cassette)
    assert (recorder.backend, recorder.model) == ("echo", "echo-1")
    assert cache_key(recorder.backend, recorder.model, requests[0]) == cache_key("echo", "echo-1", requests[0])
    recorded, _ = run_requests(recorder, config, requests, progress=False)
    asyncio.run(recorder.aclose())
    assert inner.closed and inner.calls == 4 and recorder.recorded == 4
    assert len(cassette.read_text(encoding="utf-8").splitlines()) == 4
    assert recorder.describe()["recording_to"] == str(cassette)

    replayed, stats = run_requests(ReplayTeacher(cassette), config, requests, progress=False)
    assert [o.response for o in replayed] == [o.response for o in recorded]
    assert stats.answered == 4 and stats.failed == 0


def test_recording_after_interrupted_line_starts_a_fresh_line(tmp_path):
    cassette = tmp_path / "cassette.jsonl"
    write_cassette([(_request("a"), TeacherResponse("A"))], cassette)
    with cassette.open("a", encoding="utf-8") as fh:
        fh.write('{"request_hash": "partial')  # a recording killed mid-write
    recorder = RecordingTeacher(EchoTeacher(), cassette)
    asyncio.run(recorder.complete(_request("b")))
    lines = cassette.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["request_hash"] == _request("b").hash
    with pytest.raises(DataError) as info:  # the partial line is reported, not silently skipped
        ReplayTeacher(cassette)
    assert info.value.line == 2
