"""Backend registry rules and prompt template loading."""

from __future__ import annotations

import pytest
import yaml

from adaptlab.errors import ConfigError
from adaptlab.teacher.base import Message
from adaptlab.teacher.config import TeacherConfig
from adaptlab.teacher.prompts import load_prompt
from adaptlab.teacher.registry import build_teacher, open_cache
from adaptlab.teacher.replay import RecordingTeacher


def test_record_needs_a_real_backend_and_a_cassette(tmp_path):
    with pytest.raises(ConfigError, match="real backend"):
        build_teacher(TeacherConfig(backend="replay", record=True, cassette=str(tmp_path / "c.jsonl")))
    with pytest.raises(ConfigError, match="teacher.cassette"):
        build_teacher(TeacherConfig(backend="openai", base_url="http://127.0.0.1:9/v1", record=True))
    teacher = build_teacher(TeacherConfig(backend="openai", base_url="http://127.0.0.1:9/v1", record=True,
                                          cassette=str(tmp_path / "c.jsonl")))
    assert isinstance(teacher, RecordingTeacher) and teacher.backend == "openai"


def test_cache_is_off_for_replay_and_recording(tmp_path):
    path = str(tmp_path / "cache.sqlite")
    assert open_cache(TeacherConfig(backend="replay", cache_path=path)) is None
    assert open_cache(TeacherConfig(record=True, cache_path=path)) is None
    assert open_cache(TeacherConfig(cache=False, cache_path=path)) is None
    cache = open_cache(TeacherConfig(cache_path=path))
    assert cache is not None and len(cache) == 0
    cache.close()


def test_packaged_conversation_template_renders_every_turn():
    template = load_prompt("universalner", "adaptlab.ie")
    messages = template.render(text="Olms live in caves.", entity_type="habitat")
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1] == Message("user", "Text: Olms live in caves.")
    assert messages[-1].content == "What describes habitat in the text?"


@pytest.mark.parametrize(("content", "message"), [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "last message"),
    ({"messages": [{"role": "robot", "content": "a"}]}, "messages\\[0\\]"),
    ({"user": "x", "temperature": 0}, "unknown keys"),
    ({"system": "only a system text"}, "'user'"),
    ("- a list", "mapping"),
])
def test_malformed_templates_are_config_errors(tmp_path, content, message):
    (tmp_path / "custom.yaml").write_text(yaml.safe_dump(content))
    with pytest.raises(ConfigError, match=message):
        load_prompt("custom", "adaptlab.synth", tmp_path)


def test_literal_dollar_and_missing_folder(tmp_path):
    (tmp_path / "custom.yaml").write_text(yaml.safe_dump({"user": "Costs $$5 for $item"}))
    assert load_prompt("custom", "adaptlab.synth", tmp_path).render(item="x")[0].content == "Costs $5 for x"
    with pytest.raises(ConfigError, match="does not exist"):
        load_prompt("subjects", "adaptlab.synth", tmp_path / "nope")
    assert load_prompt("subjects", "adaptlab.synth", tmp_path).source.endswith("prompts/subjects.yaml")
