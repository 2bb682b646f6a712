"""SFT data: chat conversations rendered with the tokenizer's chat template, loss on assistant tokens only.

Input is JSONL, one ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`` per line.

Where are the assistant tokens? Chat templates rarely mark them (``{% generation %}`` is missing from most
templates), so they are found by rendering prefixes of the conversation. For assistant message ``i``::

    before_i  = render(messages[:i], add_generation_prompt=True)    # ends with the assistant header
    through_i = render(messages[:i + 1])                            # adds the content and the end of turn
    full      = render(messages)

and the assistant characters are ``full[len(before_i):len(through_i)]``. This holds only when the template is
prefix-consistent (``full`` starts with ``through_i``, which starts with ``before_i``); a template that is not
(e.g. one that rewrites earlier turns) is an error naming the line, never a silent mislabel. The span includes
whatever the template writes after the content up to the next message (end-of-turn token, EOS, newline), so the
model learns to stop. ``full`` is tokenized once, as at inference, and a token is a target when its character
offsets overlap an assistant span (a fast tokenizer is needed for the offsets).

Conversations longer than ``max_length`` tokens are cut at the end; the cut conversations, tokens and target
tokens are counted, and a conversation left without any target token is skipped and counted, never silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adaptlab.data.records import iter_json_lines
from adaptlab.errors import DataError, ModelError
from adaptlab.lm.packing import IGNORE_INDEX

ROLES = ("system", "user", "assistant")
Messages = list[dict[str, str]]


@dataclass
class SFTStats:
    """What happened to the conversations of one SFT file (all counts)."""

    conversations: int = 0
    examples: int = 0
    assistant_turns: int = 0
    tokens: int = 0
    target_tokens: int = 0
    truncated_conversations: int = 0
    truncated_tokens: int = 0
    truncated_target_tokens: int = 0
    skipped_no_assistant: int = 0
    skipped_no_target_after_truncation: int = 0
    turns_without_special_end_token: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def read_conversations(path: str | Path) -> list[tuple[int, Messages]]:
    """``(line number, messages)`` for every line of an SFT JSONL file; malformed lines name file:line."""
    path = Path(path)
    if path.is_dir():
        raise DataError("sft mode reads a JSONL file of {\"messages\": [...]}, not a directory "
                        "(a prepared corpus directory is for mode: cpt)", path)
    conversations = []
    for lineno, obj in iter_json_lines(path):
        messages = obj.get("messages") if isinstance(obj, dict) else None
        if not isinstance(messages, list) or not messages:
            raise DataError('expected {"messages": [{"role": ..., "content": ...}, ...]} with at least one message '
                            "(is this a corpus file? corpora go through `adaptlab lm prepare` and mode: cpt)",
                            path, lineno)
        for n, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES \
                    or not isinstance(message.get("content"), str):
                raise DataError(f"message {n} must be {{\"role\": one of {list(ROLES)}, \"content\": str}}; "
                                f"got {message!r:.120}", path, lineno)
        conversations.append((lineno, [{"role": m["role"], "content": m["content"]} for m in messages]))
    return conversations


def require_chat_template(tokenizer: Any, source: str) -> None:
    """sft mode needs a chat template and offsets (a fast tokenizer); say how to get them."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(
            f"the tokenizer {source} has no chat template, and sft mode formats conversations with it. Use the "
            "tokenizer of an instruct model (config key 'tokenizer'), or add a 'chat_template' to its "
            "tokenizer_config.json."
        )
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"the tokenizer {source} is a slow (Python) tokenizer; sft mode needs a fast one for "
                         "character offsets (install `tokenizers` and save the tokenizer with use_fast=True)")


def _render(tokenizer: Any, messages: Messages, generation_prompt: bool, where: tuple[Path, int]) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # jinja2 TemplateError, or a template's own raise_exception(...)
        raise DataError(f"the chat template cannot render this conversation: {exc}", *where) from None


def assistant_spans(tokenizer: Any, messages: Messages, where: tuple[Path, int]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the ``[start, end)`` character span of every assistant turn (module doc)."""
    full = _render(tokenizer, messages, False, where)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True, where)
        through = _render(tokenizer, messages[: i + 1], False, where)
        if not through.startswith(before) or not full.startswith(through):
            raise DataError(
                f"the chat template is not prefix-consistent at assistant message {i}: rendering the conversation "
                "up to it does not give a prefix of the whole, so its tokens cannot be located; use a template "
                "that renders earlier turns the same way whatever follows", *where)
        spans.append((len(before), len(through)))
    return full, spans


def encode_conversation(
    tokenizer: Any, messages: Messages, where: tuple[Path, int] = (Path("<memory>"), 0)
) -> tuple[list[int], list[int], list[bool]]:
    """``(input_ids, labels, turn_has_special_end)``: labels are the ids on assistant tokens, -100 elsewhere.

    ``turn_has_special_end[k]`` says whether assistant turn ``k``'s targets contain a special token (an
    end-of-turn marker or EOS); a turn without one teaches the model no way to stop.
    """
    text, spans = assistant_spans(tokenizer, messages, where)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    special = set(tokenizer.all_special_ids)
    labels = [IGNORE_INDEX] * len(input_ids)
    has_end = [False] * len(spans)
    for index, (token_start, token_end) in enumerate(encoding["offset_mapping"]):
        for k, (span_start, span_end) in enumerate(spans):
            if token_start < span_end and token_end > span_start:
                labels[index] = input_ids[index]
                has_end[k] = has_end[k] or input_ids[index] in special
                break
    return input_ids, labels, has_end


def encode_sft_file(tokenizer: Any, path: str | Path, max_length: int) -> tuple[list[dict], SFTStats]:
    """Rows ``{"input_ids", "position_ids", "labels"}`` (one conversation each, as :class:`PackedCollator` takes
    them) for every usable conversation of ``path``, and what was cut or skipped."""
    from rich.progress import track

    path = Path(path)
    stats = SFTStats()
    rows = []
    conversations = read_conversations(path)
    for lineno, messages in track(conversations, description=f"encoding {path.name}",
                                  disable=len(conversations) < 1000, transient=True):
        stats.conversations += 1
        if not any(m["role"] == "assistant" for m in messages):
            stats.skipped_no_assistant += 1
            continue
        input_ids, labels, has_end = encode_conversation(tokenizer, messages, (path, lineno))
        stats.assistant_turns += len(has_end)
        stats.turns_without_special_end_token += has_end.count(False)
        if len(input_ids) > max_length:
            stats.truncated_conversations += 1
            stats.truncated_tokens += len(input_ids) - max_length
            stats.truncated_target_tokens += sum(label != IGNORE_INDEX for label in labels[max_length:])
            input_ids, labels = input_ids[:max_length], labels[:max_length]
        targets = sum(label != IGNORE_INDEX for label in labels)
        if targets == 0:
            stats.skipped_no_target_after_truncation += 1
            continue
        stats.examples += 1
        stats.tokens += len(input_ids)
        stats.target_tokens += targets
        rows.append({"input_ids": input_ids, "position_ids": list(range(len(input_ids))), "labels": labels})
    if not rows:
        raise DataError(f"no usable conversation ({stats.as_dict()}); each needs an assistant message whose tokens "
                        f"fit within max_length={max_length}", path)
    return rows, stats
