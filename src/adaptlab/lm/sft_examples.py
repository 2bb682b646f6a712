"""SFT examples: the two canonical shapes of ``lm train`` (mode sft) and ``fractal sft``, validated.

Every outside shape (ShareGPT, Alpaca, a file's own column names; :mod:`adaptlab.lm.sft_formats`, read by the
``dataset:`` block of :mod:`adaptlab.lm.dataset_block`) becomes one of these two before it is encoded:

* **chat**: ``{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...], "tools": [...]}``
  (OpenAI's messages), rendered with the tokenizer's chat template; the targets are the assistant turns, each
  with the end of turn the template writes after it (end-of-turn token, EOS, newline), so the model learns to
  stop. Tool use is passed to the template the way transformers documents it: an assistant message may carry
  ``"tool_calls": [{"type": "function", "function": {"name": str, "arguments": {...}}}]`` (its ``content`` may
  then be empty or null), a ``tool`` message holds a tool's result (optional ``name``, ``tool_call_id``), and the
  optional ``tools`` (JSON schemas of the functions) go to ``apply_chat_template(tools=...)``. ``arguments`` and
  ``tools`` given as JSON strings (OpenAI's API, many hub datasets) are parsed, since templates expect objects.
  Tool results are context, never targets; an assistant's tool call is a target like its text.
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

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.errors import DataError

ROLES = ("system", "user", "assistant", "tool")
Messages = list[dict[str, Any]]
# (file, line) of an example for DataError; a source without lines (Parquet, a dataset) names "file row N", no line
Where = tuple[Path | str, int | None]
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
    tools: list[dict[str, Any]] | None = None  # JSON schemas for the chat template's ``tools``


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
    obj = present(obj)
    if isinstance(obj, dict) and "messages" not in obj and ("prompt" in obj or "completion" in obj):
        if not isinstance(obj.get("prompt"), str) or not isinstance(obj.get("completion"), str):
            raise ValueError('a plain example is {"prompt": str, "completion": str}')
        weights = parse_weights(obj, obj["completion"], "the completion")
        return SFTExample(where, prompt=obj["prompt"], completion=obj["completion"],
                          weights={0: weights} if weights else {})
    messages = obj.get("messages") if isinstance(obj, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ValueError('expected {"messages": [{"role": ..., "content": ...}, ...]} with at least one message, '
                         'or {"prompt": ..., "completion": ...} (is this a corpus file? plain text trains in '
                         "mode: cpt)")
    example = SFTExample(where, messages=[], tools=parse_tools(obj.get("tools")))
    for n, message in enumerate(messages):
        message = present(message)
        example.messages.append(_message(message, n))
        weights = parse_weights(message, example.messages[-1]["content"], f"message {n}")
        if weights is not None and message["role"] != "assistant":
            raise ValueError(f"message {n} ({message['role']}) has weights, but only assistant messages are targets")
        if weights is not None:
            example.weights[n] = weights
    return example


def present(obj: Any) -> Any:
    """``obj`` without its null keys: Arrow-backed data (Parquet, datasets) gives every row every column."""
    return {k: v for k, v in obj.items() if v is not None} if isinstance(obj, dict) else obj


def _message(message: Any, n: int) -> dict[str, Any]:
    """One message in the shape chat templates take: role, content, and tool calls / the tool call answered."""
    role = message.get("role") if isinstance(message, dict) else None
    calls = message.get("tool_calls") if role == "assistant" else None
    content = message.get("content", "" if calls else None) if isinstance(message, dict) else None
    if role not in ROLES or not isinstance(content, str):
        raise ValueError(f"message {n} must be {{\"role\": one of {list(ROLES)}, \"content\": str}} (an assistant "
                         f"message with tool_calls may have no content); got {message!r:.120}")
    if "tool_calls" in message and role != "assistant":
        raise ValueError(f"message {n} ({role}) has tool_calls; only assistant messages call tools")
    out: dict[str, Any] = {"role": role, "content": content}
    if calls is not None:
        out["tool_calls"] = parse_tool_calls(calls, f"message {n}")
    for key in ("name", "tool_call_id"):
        if role == "tool" and isinstance(message.get(key), str):
            out[key] = message[key]
    return out


def json_value(value: Any, what: str) -> Any:
    """``value``, or the JSON it holds when it is a string."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is a string but not JSON ({exc.msg} at column {exc.colno})") from None


def parse_tool_calls(value: Any, what: str) -> list[dict[str, Any]]:
    """Tool calls as transformers' templates take them: ``[{"type": "function", "function": {"name": str,
    "arguments": dict}}]`` (+ ``id`` when given). A call may also be given flat, ``{"name", "arguments"}``, as
    ShareGPT's ``function_call`` turns hold it, and a JSON string stands for what it encodes. Null arguments are
    left out: Arrow-backed data gives every call every argument any call has, as null."""
    value = json_value(value, f"{what}: tool_calls")
    calls = value if isinstance(value, list) else [value]
    parsed = []
    for k, call in enumerate(calls):
        function = present(call.get("function", call)) if isinstance(call, dict) else None
        arguments = json_value(function.get("arguments", {}), f"{what}: tool call {k} arguments") if function else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                or not isinstance(arguments, dict):
            raise ValueError(f"{what}: tool call {k} must be {{\"function\": {{\"name\": str, \"arguments\": "
                             f"object or JSON string}}}}; got {call!r:.120}")
        entry: dict[str, Any] = {"type": "function", "function": {"name": function["name"],
                                                                  "arguments": present(arguments)}}
        if isinstance(call.get("id"), str):
            entry["id"] = call["id"]
        parsed.append(entry)
    if not parsed:
        raise ValueError(f"{what}: tool_calls is empty; leave the key out instead")
    return parsed


def parse_tools(value: Any) -> list[dict[str, Any]] | None:
    """The function schemas of a conversation (a list of objects, or its JSON string), or None."""
    if value is None:
        return None
    tools = json_value(value, "tools")
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise ValueError(f"tools must be a list of JSON schemas (objects); got {value!r:.120}")
    return tools or None
