"""SFT examples: the JSONL formats of ``lm train`` (mode sft) and ``fractal sft``, read and validated.

Input is JSONL, one example per line, in one of two formats:

* **chat**: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``, rendered with the
  tokenizer's chat template; the targets are the assistant turns, each with the end of turn the template
  writes after it (end-of-turn token, EOS, newline), so the model learns to stop.
* **plain**: ``{"prompt": str, "completion": str}`` for a tokenizer without a chat template (a base model):
  ``[BOS] prompt completion [EOS]`` as for a pretraining document (:func:`adaptlab.lm.packing.encode_document`:
  BOS when the tokenizer has one, its ``eos_token``, else its ``sep_token``, appended as an id); the targets are
  the completion and the EOS.

**Loss weights** (optional) sit next to the text they weigh: on an assistant message, or on a plain row (then
they weigh its completion). Two forms, one per message:

* per span (sentence): ``"weights": [{"start": 0, "end": 9, "weight": 0.9}, ...]``, character offsets
  ``[start, end)`` into the content, sorted and not overlapping, each weight a finite number >= 0. A target
  token belongs to the first span that ends after the token starts, so the whitespace between two spans takes
  the following span's weight; tokens after the last span, and the end of turn, weigh 1. This is the rule of
  FRACTAL's sentence scores (``adaptlab fractal sft`` writes its examples this way).
* per token: ``"token_weights": [0.9, 0.9, 1.0, ...]``, one weight per token that overlaps the content, in
  order, as *this* tokenizer splits the rendered conversation (count them with the same tokenizer and chat
  template); the count is checked, and a mismatch is an error naming the line and both counts. The end of turn
  weighs 1.

A token of weight 0 is not a target (label -100). A weighted turn whose content tokens all weigh 0 loses its
end of turn too: a response judged wholly bad is not taught, its ending included. Rows carry a ``weights``
column (aligned with ``labels``; 1 on the targets of unweighted turns) only when some example of the file has
weights, and :class:`~adaptlab.lm.packing.PackedCollator` pads it with 0. The trainer's loss is then
``sum w_t CE_t / sum w_t`` over every target token of the optimizer step (:mod:`adaptlab.tuning.trainer`).

Every problem names the file:line (:class:`~adaptlab.errors.DataError`); :mod:`adaptlab.lm.sft_data` turns the
examples into training rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.data.records import iter_json_lines
from adaptlab.errors import DataError

ROLES = ("system", "user", "assistant")
Messages = list[dict[str, str]]
Where = tuple[Path, int]
MEMORY: Where = (Path("<memory>"), 0)


@dataclass
class Weights:
    """The loss weights of one target text: character ``spans`` ``(start, end, weight)``, or ``per_token``."""

    spans: list[tuple[int, int, float]] | None = None
    per_token: list[float] | None = None


@dataclass
class SFTExample:
    """One validated example: a conversation (chat) or a prompt and completion (plain), with optional weights.

    ``weights[i]`` weighs assistant message ``i`` (chat) or, under key 0, the completion (plain).
    """

    where: Where
    messages: Messages | None = None
    prompt: str | None = None
    completion: str | None = None
    weights: dict[int, Weights] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ reading


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def parse_weights(obj: dict[str, Any], text: str, what: str) -> Weights | None:
    """The ``weights`` or ``token_weights`` of ``obj`` (about ``text``), validated; ValueError says what is wrong."""
    if "weights" in obj and "token_weights" in obj:
        raise ValueError(f"{what} has both 'weights' (spans) and 'token_weights'; give one of them")
    if "token_weights" in obj:
        values = obj["token_weights"]
        if not isinstance(values, list) or not all(_number(v) for v in values):
            raise ValueError(f"{what}: 'token_weights' must be a list of finite numbers >= 0")
        return Weights(per_token=[float(v) for v in values])
    if "weights" not in obj:
        return None
    spans, previous_end = [], 0
    if not isinstance(obj["weights"], list):
        raise ValueError(f"{what}: 'weights' must be a list of {{\"start\": int, \"end\": int, \"weight\": number}}")
    for k, span in enumerate(obj["weights"]):
        if not isinstance(span, dict) or set(span) != {"start", "end", "weight"} or not all(
                isinstance(span[key], int) and not isinstance(span[key], bool) for key in ("start", "end")):
            raise ValueError(f"{what}: weights[{k}] must be {{\"start\": int, \"end\": int, \"weight\": number}}, "
                             f"got {span!r:.100}")
        start, end, weight = span["start"], span["end"], span["weight"]
        if not previous_end <= start < end <= len(text):
            raise ValueError(f"{what}: weights[{k}] = [{start}, {end}) is out of order, overlapping, empty or "
                             f"outside the text (length {len(text)}); spans are sorted, disjoint character offsets")
        if not _number(weight):
            raise ValueError(f"{what}: weights[{k}].weight = {weight!r} is not a finite number >= 0")
        spans.append((start, end, float(weight)))
        previous_end = end
    return Weights(spans=spans)


def parse_example(obj: Any, where: Where = MEMORY) -> SFTExample:
    """One line (or an example built in memory) validated; a :class:`DataError` names the file:line."""
    try:
        return _parse(obj, where)
    except ValueError as exc:
        raise DataError(str(exc), *where) from None


def _parse(obj: Any, where: Where) -> SFTExample:
    if isinstance(obj, dict) and "messages" not in obj and ("prompt" in obj or "completion" in obj):
        if not isinstance(obj.get("prompt"), str) or not isinstance(obj.get("completion"), str):
            raise ValueError('a plain example is {"prompt": str, "completion": str}')
        weights = parse_weights(obj, obj["completion"], "the completion")
        return SFTExample(where, prompt=obj["prompt"], completion=obj["completion"],
                          weights={0: weights} if weights else {})
    messages = obj.get("messages") if isinstance(obj, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ValueError('expected {"messages": [{"role": ..., "content": ...}, ...]} with at least one message, '
                         'or {"prompt": ..., "completion": ...} (is this a corpus file? corpora go through '
                         "`adaptlab lm prepare` and mode: cpt)")
    example = SFTExample(where, messages=[])
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES \
                or not isinstance(message.get("content"), str):
            raise ValueError(f"message {n} must be {{\"role\": one of {list(ROLES)}, \"content\": str}}; "
                             f"got {message!r:.120}")
        weights = parse_weights(message, message["content"], f"message {n}")
        if weights is not None and message["role"] != "assistant":
            raise ValueError(f"message {n} ({message['role']}) has weights, but only assistant messages are targets")
        if weights is not None:
            example.weights[n] = weights
        example.messages.append({"role": message["role"], "content": message["content"]})
    return example


def read_examples(path: str | Path) -> list[SFTExample]:
    """Every example of an SFT JSONL file; malformed lines name file:line."""
    path = Path(path)
    if path.is_dir():
        raise DataError("sft mode reads a JSONL file of {\"messages\": [...]}, not a directory "
                        "(a prepared corpus directory is for mode: cpt)", path)
    return [parse_example(obj, (path, lineno)) for lineno, obj in iter_json_lines(path)]
