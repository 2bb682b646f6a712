"""Pull one JSON value out of an LLM's free-text answer, without ever evaluating code.

Teachers wrap JSON in prose, fence it in Markdown, break it off at ``max_tokens`` or write it
the way Python prints it. :func:`extract_json` finds the intended value when one is there and
otherwise raises :class:`JSONExtractionError` with a short reason that a rejects file can count
("truncated JSON (unbalanced brackets)", "expected an object, got a list", ...).

Attempts, in order; the first value that parses *and* matches ``expect`` wins:

1. the whole answer, stripped, as one JSON document (any JSON value, scalars included);
2. the body of each Markdown fenced block (````` ```json ... ``` `````, any or no language tag),
   in order, as one document -- so the first fenced block that parses is preferred;
3. a scan of each fenced body, then of the whole answer, for object/array starts: at each
   ``{`` or ``[`` that can begin JSON (``{`` followed by a quote or ``}``; ``[`` followed by a
   value; single quotes count so that Python-style output is reported as invalid JSON rather
   than missed), :meth:`json.JSONDecoder.raw_decode` reads one value. Prose before and after is
   ignored, and a stray ``[1]`` before the real object is skipped when ``expect=dict``;
4. only if all of that failed, step 3 again with light repairs applied to each candidate:
   trailing commas before ``}`` / ``]`` dropped, smart quotes ``“ ”`` turned into ``"`` where
   they delimit keys or strings (a string opened by a smart quote ends at the next smart quote
   and plain ``"`` inside it are escaped; smart quotes *inside* a normal string stay), the Python
   literals ``True`` / ``False`` / ``None`` outside strings turned into ``true`` / ``false`` /
   ``null``, and raw newlines or tabs inside strings allowed.

Scanning rules. The extent of a candidate is found by bracket counting that skips string
contents. The brackets inside a candidate, whether it parsed or not, are never tried on their
own: a fragment of a broken or unwanted value is not the answer. A candidate whose brackets are
still open at the end of the text means the answer was cut off; everything after it lies inside
it, so scanning stops there. Cost: every character is visited O(1) times per pass, plus one
parse per candidate.

Errors, most telling first: "empty response"; "truncated JSON (unbalanced brackets)";
"invalid JSON: <strict decoder message> near '<excerpt>'" (a candidate that even the repairs
could not fix); "expected an object, got a list" (values parsed, none of the wanted type);
"no JSON object or array found".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["JSONExtractionError", "extract_json"]

ExpectedType = type | tuple[type, ...] | None

_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)
_OPENING = re.compile(r"[\[{]")
_OBJECT_START = re.compile(r"\{\s*(?:[\"'“”}]|$)")
_ARRAY_START = re.compile(r"\[\s*(?:[\[{\"'“”\]\-0-9]|(?:true|false|null|True|False|None)\b|$)")
_WORD = re.compile(r"[A-Za-z_]\w*")
_NON_SPACE = re.compile(r"\S")
_PYTHON_LITERALS = {"True": "true", "False": "false", "None": "null"}
_SMART_QUOTES = "“”"
_TYPE_NAMES = {
    dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
    bool: "a boolean", type(None): "null",
}
_DECODER = json.JSONDecoder()
_LENIENT_DECODER = json.JSONDecoder(strict=False)


class JSONExtractionError(ValueError):
    """No JSON value of the expected type could be read from a teacher's answer."""


def extract_json(text: str, expect: ExpectedType = None) -> Any:
    """Return the first JSON value in ``text`` that matches ``expect`` (see the module docstring).

    ``expect`` is a type or tuple of types for :func:`isinstance` (``bool`` only counts as ``int``
    when ``bool`` is expected too); ``None`` accepts any value. Raises :class:`JSONExtractionError`.
    """
    if not text or not text.strip():
        raise JSONExtractionError("empty response")
    search = _Search(expect)
    fences = [m.group(1) for m in _FENCE.finditer(text)]
    for document in [text, *fences]:
        try:
            value = json.loads(document.strip())
        except ValueError:
            continue
        if search.accepts(value):
            return value
    for repair in (False, True):
        for region in [*fences, text]:
            found = search.scan(region, repair)
            if found:
                return found[0]
    raise JSONExtractionError(search.failure_reason())


@dataclass
class _Search:
    """Tries candidates against ``expect`` and remembers why each failed, for the error message."""

    expect: ExpectedType
    wrong_type: Any = None
    saw_wrong_type: bool = False
    saw_truncated: bool = False
    first_invalid: str | None = None

    def accepts(self, value: Any) -> bool:
        if _matches(value, self.expect):
            return True
        if not self.saw_wrong_type:
            self.saw_wrong_type, self.wrong_type = True, value
        return False

    def scan(self, text: str, repair: bool) -> tuple[Any] | None:
        """Scan ``text`` for object/array candidates; return ``(value,)`` for the first accepted one."""
        position = 0
        while True:
            start = _next_start(text, position)
            if start is None:
                return None
            extent = _candidate_extent(text, start, repair)
            if extent is None:
                self.saw_truncated = True
                return None
            end, candidate = extent
            try:
                value = _LENIENT_DECODER.decode(candidate) if repair else _DECODER.raw_decode(text, start)[0]
            except json.JSONDecodeError:
                if repair and self.first_invalid is None:
                    self.first_invalid = _strict_error(text, start)
            else:
                if self.accepts(value):
                    return (value,)
            position = end

    def failure_reason(self) -> str:
        if self.saw_truncated:
            return "truncated JSON (unbalanced brackets)"
        if self.first_invalid is not None:
            return self.first_invalid
        if self.saw_wrong_type:
            return f"expected {_describe_expected(self.expect)}, got {_type_name(type(self.wrong_type))}"
        return "no JSON object or array found"


def _strict_error(text: str, start: int) -> str:
    """The strict decoder's complaint about the candidate at ``start``, with a short excerpt."""
    try:
        _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        excerpt = text[max(start, exc.pos - 15) : exc.pos + 15]
        return f"invalid JSON: {exc.msg} near {excerpt!r}"
    return "invalid JSON"


def _next_start(text: str, position: int) -> int | None:
    """Index of the next ``{`` or ``[`` at or after ``position`` that can begin a JSON value."""
    while (opening := _OPENING.search(text, position)) is not None:
        start = opening.start()
        pattern = _OBJECT_START if text[start] == "{" else _ARRAY_START
        if pattern.match(text, start):
            return start
        position = start + 1
    return None


def _candidate_extent(text: str, start: int, repair: bool) -> tuple[int, str] | None:
    """``(end, candidate)`` where ``text[start:end]`` has balanced brackets outside strings.

    With ``repair`` the returned candidate has the module's light repairs applied; without, it is
    ``text[start:end]``. Returns ``None`` when the brackets are still open at the end of ``text``.
    """
    out: list[str] = []
    depth = 0
    closers = ""  # characters that end the current string; empty outside strings
    i, n = start, len(text)
    while i < n:
        ch = text[i]
        if closers:
            if ch == "\\":
                out.append(text[i : i + 2])
                i += 2
                continue
            if ch in closers:
                closers = ""
                ch = '"'
            elif ch == '"':  # a plain quote inside a smart-quoted string
                ch = '\\"'
        elif ch == '"' or (repair and ch in _SMART_QUOTES):
            closers = '"' if ch == '"' else _SMART_QUOTES
            ch = '"'
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                out.append(ch)
                return i + 1, ("".join(out) if repair else text[start : i + 1])
        elif repair and ch == "," and _next_non_space(text, i + 1) in ("}", "]"):
            ch = ""
        elif repair and ch.isalpha() and not text[i - 1].isalnum():
            word = _WORD.match(text, i)
            if word:
                out.append(_PYTHON_LITERALS.get(word.group(), word.group()))
                i += len(word.group())
                continue
        out.append(ch)
        i += 1
    return None


def _next_non_space(text: str, position: int) -> str:
    match = _NON_SPACE.search(text, position)
    return match.group() if match else ""


def _matches(value: Any, expect: ExpectedType) -> bool:
    if expect is None:
        return True
    wanted = expect if isinstance(expect, tuple) else (expect,)
    if isinstance(value, bool) and bool not in wanted:
        return False
    return isinstance(value, wanted)


def _type_name(kind: type) -> str:
    return _TYPE_NAMES.get(kind, kind.__name__)


def _describe_expected(expect: ExpectedType) -> str:
    wanted = expect if isinstance(expect, tuple) else (expect,)
    return " or ".join(_type_name(kind) for kind in wanted)
