"""The shapes SFT data comes in, each turned into the canonical example of :mod:`adaptlab.lm.sft_examples`.

Users bring data in the shape their tools write (LLaMA-Factory's ``dataset_info`` formats, axolotl's ``type:``,
OpenAI's fine-tuning files). One record of each shape, field names as given here (a file's own column names are
mapped onto them by the ``dataset:`` block's ``columns``, :mod:`adaptlab.lm.dataset_block`):

* ``messages``: ``{"messages": [{"role", "content", "tool_calls"?}, ...], "tools"?: [...]}``, OpenAI's messages
  with the ``tool`` role and assistant tool calls; taken as they are.
* ``sharegpt``: ``{"conversations": [{"from": ..., "value": ...}, ...], "system"?, "tools"?}``. ``from`` is
  ``human``/``user`` -> user, ``gpt``/``assistant`` -> assistant, ``system`` -> system,
  ``observation``/``tool`` -> tool (a tool's result), and ``function_call`` -> an assistant message whose
  ``value`` is the call as JSON (``{"name": ..., "arguments": {...}}``, or a list of them), as LLaMA-Factory
  writes it. Other ``from`` values are an error unless the block's ``roles`` maps them.
* ``alpaca``: ``{"instruction", "input"?, "output", "system"?, "history"?}``. The user turn is
  ``instruction + "\\n" + input`` (just the instruction when ``input`` is empty), the assistant turn ``output``;
  ``history`` is a list of ``[user, assistant]`` pairs that come first, and ``system`` an opening system message.
* ``prompt_completion``: ``{"prompt", "completion"}`` (+ ``weights`` / ``token_weights``), for a base model
  without a chat template.
* ``text``: ``{"text"}``, a plain document: the input of continual pretraining (``mode: cpt``).

``auto`` picks the shape of each record by its fields, in the order above (``messages``, then ``conversations``,
``instruction``, ``prompt``/``completion``, ``text``), so one file may mix chat and plain examples. The list
fields (``messages``, ``conversations``, ``history``, ``tools``) may be JSON strings, as a CSV cell holds them.
Every shape but ``text`` becomes a conversation, so the assistant-only targets and the end-of-turn rule of
:mod:`adaptlab.lm.sft_data` hold for all of them.
"""

from __future__ import annotations

from typing import Any

from adaptlab.lm.sft_examples import json_value, present

# every field a record of each shape may have (the keys `columns:` may map); the first ones are required
FIELDS = {
    "messages": ("messages", "tools"),
    "sharegpt": ("conversations", "system", "tools"),
    "alpaca": ("instruction", "output", "input", "system", "history"),
    "prompt_completion": ("prompt", "completion", "weights", "token_weights"),
    "text": ("text",),
}
REQUIRED = {"messages": 1, "sharegpt": 1, "alpaca": 2, "prompt_completion": 2, "text": 1}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "observation": "tool", "tool": "tool", "function_call": "function_call"}
ROLE_TARGETS = ("system", "user", "assistant", "tool", "function_call")  # what `roles:` may map a `from` value to


def detect_format(record: dict[str, Any]) -> str:
    """The shape of one record by its fields (module docstring); ValueError names the fields it has."""
    for fmt, keys in (("messages", ("messages",)), ("sharegpt", ("conversations",)), ("alpaca", ("instruction",)),
                      ("prompt_completion", ("prompt", "completion")), ("text", ("text",))):
        if any(record.get(key) is not None for key in keys):
            return fmt
    raise ValueError(f"cannot tell the format of this record from its fields ({', '.join(sorted(record)) or 'none'})"
                     f"; it needs one of messages, conversations, instruction, prompt/completion or text. Set the "
                     "block's format and map your columns onto its fields with columns")


def _require(record: dict[str, Any], fmt: str, columns_key: str) -> None:
    for name in FIELDS[fmt][:REQUIRED[fmt]]:
        if record.get(name) is None:
            raise ValueError(f"a {fmt} record needs {name!r}, and this one has {', '.join(sorted(record)) or 'none'}"
                             f"; map your column onto it with {columns_key}, e.g. {{{name}: your_column}}")


def _list(record: dict[str, Any], name: str, fmt: str) -> list[Any]:
    value = record.get(name)
    value = json_value(value, name) if value not in (None, "") else []  # an empty CSV cell: no history
    if not isinstance(value, list):
        raise ValueError(f"{fmt}: {name!r} must be a list, got {type(value).__name__}")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    return value


def from_sharegpt(record: dict[str, Any], roles: dict[str, str], roles_key: str) -> dict[str, Any]:
    """ShareGPT turns as messages (module docstring); an unknown ``from`` names the turn and how to map it."""
    known = {**SHAREGPT_ROLES, **roles}
    system = record.get("system")
    messages = [{"role": "system", "content": _text(system, "system")}] if system else []
    for k, turn in enumerate(_list(record, "conversations", "sharegpt")):
        turn = present(turn)
        speaker = turn.get("from") if isinstance(turn, dict) else None
        if speaker not in known:
            raise ValueError(f"conversations[{k}].from = {speaker!r} is not a ShareGPT role ({', '.join(known)}); "
                             f"map it with {roles_key}, e.g. {{{speaker}: assistant}}")
        value = _text(turn.get("value"), f"conversations[{k}].value")
        if known[speaker] == "function_call":
            messages.append({"role": "assistant", "content": "", "tool_calls": value})
        else:
            messages.append({"role": known[speaker], "content": value})
    return {"messages": messages, "tools": record.get("tools")}


def from_alpaca(record: dict[str, Any]) -> dict[str, Any]:
    """An Alpaca record as a conversation: system, the history's pairs, then instruction (+ input) and output."""
    system = record.get("system")
    messages = [{"role": "system", "content": _text(system, "system")}] if system else []
    for k, pair in enumerate(_list(record, "history", "alpaca")):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"history[{k}] must be a [user, assistant] pair, got {pair!r:.80}")
        messages += [{"role": "user", "content": _text(pair[0], f"history[{k}][0]")},
                     {"role": "assistant", "content": _text(pair[1], f"history[{k}][1]")}]
    instruction, extra = _text(record["instruction"], "instruction"), _text(record.get("input") or "", "input")
    messages += [{"role": "user", "content": f"{instruction}\n{extra}" if extra else instruction},
                 {"role": "assistant", "content": _text(record["output"], "output")}]
    return {"messages": messages}


def to_example(record: dict[str, Any], fmt: str, roles: dict[str, str] | None = None,
               block_key: str = "dataset") -> dict[str, Any]:
    """The canonical chat or plain example of one record in shape ``fmt`` (not ``text``).

    ``block_key`` names the ``dataset:`` block in messages (``dataset`` or ``eval_dataset``)."""
    record = present(record)
    _require(record, fmt, f"{block_key}.columns")
    if fmt == "sharegpt":
        return from_sharegpt(record, roles or {}, f"{block_key}.roles")
    if fmt == "alpaca":
        return from_alpaca(record)
    if fmt == "messages":
        return {"messages": _list(record, "messages", fmt), "tools": record.get("tools")}
    return {key: record[key] for key in FIELDS["prompt_completion"] if key in record}


def to_text(record: dict[str, Any], block_key: str = "dataset") -> str:
    """The document of a ``text`` record."""
    record = present(record)
    _require(record, "text", f"{block_key}.columns")
    return _text(record["text"], "text")
