"""Backends registered by name; the ``teacher.backend`` config key picks one.

Adding a backend touches one place: write a :class:`~adaptlab.teacher.base.Teacher` subclass with
a ``from_config(cfg)`` classmethod and add its import path here. Imports are lazy so that, e.g.,
the replay backend never loads transformers.
"""

from __future__ import annotations

import asyncio
from importlib import import_module
from typing import Any

from adaptlab import interrupts
from adaptlab.errors import AdaptlabError, ConfigError
from adaptlab.teacher.base import Teacher
from adaptlab.teacher.cache import ResponseCache
from adaptlab.teacher.config import TeacherConfig

BACKENDS: dict[str, str] = {
    "openai": "adaptlab.teacher.openai_compat:OpenAICompatTeacher",
    "hf_local": "adaptlab.teacher.hf_local:HFLocalTeacher",
    "replay": "adaptlab.teacher.replay:ReplayTeacher",
}


def build_teacher(cfg: TeacherConfig) -> Teacher:
    """The configured backend; with ``record: true`` its answers are also written to the cassette."""
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"teacher.backend {cfg.backend!r} is not one of {sorted(BACKENDS)}")
    if cfg.record and cfg.backend == "replay":
        raise ConfigError("teacher.record=true needs a real backend (openai or hf_local), not replay")
    if cfg.record and not cfg.cassette:
        raise ConfigError("teacher.record=true needs teacher.cassette: the file to write answers to")
    module, _, name = BACKENDS[cfg.backend].partition(":")
    teacher = getattr(import_module(module), name).from_config(cfg)
    if cfg.record:
        from adaptlab.teacher.replay import RecordingTeacher

        teacher = RecordingTeacher(teacher, cfg.cassette)
    return teacher


def open_cache(cfg: TeacherConfig) -> ResponseCache | None:
    """The persistent answer cache, or None when ``teacher.cache`` is off.

    Always off for replay (the cassette is the cache) and when recording: a cached answer never
    reaches the recorder, so the cassette would have holes.
    """
    if not cfg.cache or cfg.backend == "replay" or cfg.record:
        return None
    cache = ResponseCache(cfg.cache_path)
    interrupts.note(f"answers received so far stay in the teacher cache {cfg.cache_path}; the same command reuses them")
    return cache


def prepare_schemas(teacher: Teacher, schemas: list[tuple[dict[str, Any], str]]) -> None:
    """Check (and, for constrained decoding, compile) each ``(schema, where)`` before a run writes anything.

    On failure the teacher is closed and the error, which names ``where``, propagates.
    """
    try:
        for schema, where in schemas:
            teacher.prepare_json_schema(schema, where)
    except AdaptlabError:
        asyncio.run(teacher.aclose())
        raise
