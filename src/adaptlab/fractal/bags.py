"""Bags of sentences with response-level labels: FRACTAL's input format.

FRACTAL learns a sentence scorer from labels on whole responses (multiple-instance learning). A
*bag* is one response split into sentences (the instances) with one bag label; a *pair bag* is two
responses to the same context with a preference between them. One JSON object per line::

    {"id": "q1-r1", "context": "Who sang it?", "response": "Dave sang. Nobody else did.", "label": 1,
     "sentence_labels": [1, 0], "group": "q1"}
    {"id": "q1-r2", "context": null, "sentences": ["Dave sang.", "It was 1981."], "label": 0}
    {"id": "q1-pair", "context": "Who sang it?", "a": "Dave sang.", "b": ["It rained.", "Yes."],
     "preference": 1, "group": "q1"}

Rules (each broken rule raises :class:`DataError` naming file:line and the record id):

- exactly one of ``response`` (split here, offsets kept) or ``sentences`` (already split); both
  only together with ``offsets`` (``[[start, end], ...]`` into ``response``), which is what
  :func:`write_bags` writes so that a round trip keeps the exact split;
- at least one non-empty sentence; ``label`` and every ``sentence_labels[i]`` in [0, 1], with one
  sentence label per sentence; higher = better, i.e. the positive class of the bag label;
- ``preference`` in [0, 1] is the probability that ``a`` is preferred over ``b``: 1 = ``a``,
  0 = ``b``, 0.5 = tie. A pair side is a response string, a list of sentences, or an object
  ``{"response", "sentences", "offsets"}`` following the same rules as a bag;
- ids are unique within a file (bags and pairs together).

Sentences come from pysbd (rule-based, keeps character offsets). Surrounding whitespace is cut
from each sentence and its offsets are moved with it, so ``response[start:end] == sentence``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from adaptlab.data.records import iter_json_lines
from adaptlab.errors import DataError
from adaptlab.runs import atomic_write_text

BAG_FIELDS = {"id", "context", "response", "sentences", "offsets", "label", "sentence_labels", "group"}
PAIR_FIELDS = {"id", "context", "a", "b", "preference", "group"}


@dataclass
class Response:
    """One response as sentences; ``offsets[i]`` locates ``sentences[i]`` in ``text`` when known."""

    sentences: list[str]
    offsets: list[tuple[int, int]] | None = None
    text: str | None = None


@dataclass
class Bag:
    id: str
    context: str | None
    sentences: list[str]
    offsets: list[tuple[int, int]] | None
    label: float
    sentence_labels: list[float] | None = None
    group: str | None = None
    response: str | None = None


@dataclass
class PairBag:
    id: str
    context: str | None
    a: Response
    b: Response
    preference: float
    group: str | None = None


@lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False, char_span=True)


def split_sentences(text: str) -> list[tuple[str, int, int]]:
    """Split ``text`` into ``(sentence, start, end)`` with ``text[start:end] == sentence``.

    pysbd's own spans can drift when a sentence repeats, so each segment is located by searching
    from the end of the previous one; whitespace-only segments are skipped.
    """
    found: list[tuple[str, int, int]] = []
    cursor = 0
    for segment in _segmenter().segment(text):
        piece = segment.sent.strip()
        if not piece:
            continue
        start = text.find(piece, cursor)
        if start < 0:  # pysbd never rewrites text with clean=False; this guards our assumption
            raise ValueError(f"sentence splitter returned text not found in the input: {piece[:60]!r}")
        end = start + len(piece)
        found.append((piece, start, end))
        cursor = end
    return found


def overlaps_any(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    """Whether ``[start, end)`` shares a character with any ``[s, e)`` of ``spans``."""
    return any(s < end and start < e for s, e in spans)


def response_from_text(text: str) -> Response:
    split = split_sentences(text)
    return Response([s for s, _, _ in split], [(a, b) for _, a, b in split], text)


# ----------------------------------------------------------------------------------------------- reading


def _fail(message: str, path: Path, line: int, record_id: Any = None) -> DataError:
    who = f"record {record_id!r}: " if record_id is not None else ""
    return DataError(who + message, path, line)


def _unit_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} {value!r} is out of range; labels must be in [0, 1] (higher = better)")
    return float(value)


def _parse_response(obj: dict[str, Any], where: str) -> Response:
    """Build a Response from ``response`` / ``sentences`` / ``offsets`` keys; ValueError on a broken rule."""
    has_text, has_sentences = "response" in obj, "sentences" in obj
    if has_text == has_sentences and not (has_text and "offsets" in obj):
        raise ValueError(
            f"{where}: give exactly one of 'response' (a string, split here) or 'sentences' (a list), "
            "or both together with 'offsets'"
        )
    if "offsets" in obj and not (has_text and has_sentences):
        raise ValueError(f"{where}: 'offsets' needs both 'response' and 'sentences'")
    text = obj.get("response")
    if has_text and not isinstance(text, str):
        raise ValueError(f"{where}: 'response' must be a string, got {type(text).__name__}")
    if not has_sentences:
        response = response_from_text(text)
    else:
        sentences = obj["sentences"]
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise ValueError(f"{where}: 'sentences' must be a list of strings")
        if any(not s.strip() for s in sentences):
            raise ValueError(f"{where}: 'sentences' holds an empty sentence; remove it")
        response = Response(list(sentences), None, text)
        if has_text:
            response.offsets = _parse_offsets(obj["offsets"], sentences, text, where)
    if not response.sentences:
        raise ValueError(f"{where}: the bag has no sentences (empty or whitespace-only response); remove it")
    return response


def _parse_offsets(raw: Any, sentences: list[str], text: str, where: str) -> list[tuple[int, int]]:
    if not isinstance(raw, list) or len(raw) != len(sentences):
        raise ValueError(f"{where}: 'offsets' must be a list of [start, end] pairs, one per sentence")
    offsets = []
    for i, pair in enumerate(raw):
        ok = isinstance(pair, list) and len(pair) == 2 and all(type(v) is int for v in pair)
        if not ok or text[pair[0] : pair[1]] != sentences[i]:
            raise ValueError(f"{where}: offsets[{i}] = {pair!r} does not slice sentence {i} out of 'response'")
        offsets.append((pair[0], pair[1]))
    return offsets


def _parse_bag(obj: dict[str, Any]) -> Bag:
    unknown = set(obj) - BAG_FIELDS
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(BAG_FIELDS)}")
    if "label" not in obj:
        raise ValueError("missing field 'label' (the response-level label in [0, 1])")
    response = _parse_response(obj, "bag")
    labels = obj.get("sentence_labels")
    if labels is not None:
        if not isinstance(labels, list) or len(labels) != len(response.sentences):
            got = len(labels) if isinstance(labels, list) else type(labels).__name__
            raise ValueError(f"'sentence_labels' has {got} entries but the bag has {len(response.sentences)} "
                             "sentences; give one label per sentence")
        labels = [_unit_number(v, f"sentence_labels[{i}]") for i, v in enumerate(labels)]
    return Bag(
        id=obj["id"], context=obj["context"], sentences=response.sentences, offsets=response.offsets,
        label=_unit_number(obj["label"], "label"), sentence_labels=labels, group=obj.get("group"),
        response=response.text,
    )


def _parse_side(value: Any, side: str) -> Response:
    if isinstance(value, str):
        return _parse_response({"response": value}, f"pair side {side!r}")
    if isinstance(value, list):
        return _parse_response({"sentences": value}, f"pair side {side!r}")
    if isinstance(value, dict):
        unknown = set(value) - {"response", "sentences", "offsets"}
        if unknown:
            raise ValueError(f"pair side {side!r} has unknown field(s) {sorted(unknown)}")
        return _parse_response(value, f"pair side {side!r}")
    raise ValueError(f"pair side {side!r} must be a response string, a list of sentences or an object")


def _parse_pair(obj: dict[str, Any]) -> PairBag:
    unknown = set(obj) - PAIR_FIELDS
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; allowed in a pair: {sorted(PAIR_FIELDS)}")
    for name in ("a", "b", "preference"):
        if name not in obj:
            raise ValueError(f"missing field {name!r} in a pair record (needs 'a', 'b' and 'preference')")
    return PairBag(
        id=obj["id"], context=obj["context"], a=_parse_side(obj["a"], "a"), b=_parse_side(obj["b"], "b"),
        preference=_unit_number(obj["preference"], "preference"), group=obj.get("group"),
    )


def _parse_record(obj: Any) -> Bag | PairBag:
    if not isinstance(obj, dict):
        raise ValueError(f"each line must be a JSON object, got {type(obj).__name__}")
    for name in ("id", "context"):
        if name not in obj:
            raise ValueError(f"missing field {name!r} (use \"context\": null when there is none)")
    if not isinstance(obj["id"], str) or not obj["id"]:
        raise ValueError(f"'id' must be a non-empty string, got {obj['id']!r}")
    if obj["context"] is not None and not isinstance(obj["context"], str):
        raise ValueError("'context' must be a string or null")
    if obj.get("group") is not None and not isinstance(obj["group"], str):
        raise ValueError("'group' must be a string when given")
    return _parse_pair(obj) if ("a" in obj or "b" in obj) else _parse_bag(obj)


def read_bags(path: str | Path) -> tuple[list[Bag], list[PairBag]]:
    """Read a bag JSONL file into (bags, pairs); blank lines are ignored, anything malformed raises."""
    path = Path(path)
    bags: list[Bag] = []
    pairs: list[PairBag] = []
    first_line: dict[str, int] = {}
    for line_no, obj in iter_json_lines(path):
        record_id = obj.get("id") if isinstance(obj, dict) else None
        try:
            record = _parse_record(obj)
        except ValueError as exc:
            raise _fail(str(exc), path, line_no, record_id) from None
        if record.id in first_line:
            raise _fail(f"duplicate id (first used on line {first_line[record.id]}); ids must be unique",
                        path, line_no, record.id)
        first_line[record.id] = line_no
        (pairs if isinstance(record, PairBag) else bags).append(record)
    return bags, pairs


# ----------------------------------------------------------------------------------------------- writing


def _response_json(sentences: list[str], offsets: list[tuple[int, int]] | None, text: str | None) -> dict:
    if text is not None and offsets is not None:
        return {"response": text, "sentences": sentences, "offsets": [list(o) for o in offsets]}
    return {"sentences": sentences}


def bag_to_json(record: Bag | PairBag) -> dict[str, Any]:
    if isinstance(record, PairBag):
        return {"id": record.id, "context": record.context,
                "a": _response_json(record.a.sentences, record.a.offsets, record.a.text),
                "b": _response_json(record.b.sentences, record.b.offsets, record.b.text),
                "preference": record.preference, "group": record.group}
    out = {"id": record.id, "context": record.context,
           **_response_json(record.sentences, record.offsets, record.response), "label": record.label}
    if record.sentence_labels is not None:
        out["sentence_labels"] = record.sentence_labels
    if record.group is not None:
        out["group"] = record.group
    return out


def write_bags(records: Iterable[Bag | PairBag], path: str | Path) -> Path:
    """Write bags and pair bags as JSONL (atomically); :func:`read_bags` gives back the same records."""
    lines = [json.dumps(bag_to_json(r), ensure_ascii=False) for r in records]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


# ----------------------------------------------------------------------------------------------- counts


def describe_bags(bags: Iterable[Bag], pairs: Iterable[PairBag] = ()) -> dict[str, Any]:
    """Counts for logs and reports: bags, sentences, label distribution, sentence-label coverage."""
    bags, pairs = list(bags), list(pairs)
    with_labels = [b for b in bags if b.sentence_labels is not None]
    sentence_labels = [v for b in with_labels for v in b.sentence_labels]
    return {
        "bags": len(bags),
        "sentences": sum(len(b.sentences) for b in bags),
        "positive_bags": sum(b.label >= 0.5 for b in bags),
        "label_distribution": {str(k): v for k, v in sorted(Counter(b.label for b in bags).items())},
        "bags_with_sentence_labels": len(with_labels),
        "bags_without_sentence_labels": len(bags) - len(with_labels),
        "positive_sentences": sum(v >= 0.5 for v in sentence_labels),
        "labelled_sentences": len(sentence_labels),
        "pairs": len(pairs),
        "preference_distribution": {str(k): v for k, v in sorted(Counter(p.preference for p in pairs).items())},
    }
