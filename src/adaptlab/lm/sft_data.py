"""SFT data: examples (:mod:`adaptlab.lm.sft_examples`) to training rows, for ``lm train`` and ``fractal sft``.

``lm train`` reads its examples through the ``dataset:`` block (:mod:`adaptlab.lm.dataset_block`: files, saved
datasets, the hub; messages, ShareGPT, Alpaca, prompt/completion), ``fractal sft`` builds them in memory.

Targets: the assistant turns of a chat example with the end of turn the template writes after each (end-of-turn
token, EOS, newline), so the model learns to stop; or the completion of a plain example and its EOS. Loss
weights go to their tokens by the rules in :mod:`adaptlab.lm.sft_examples`; a token of weight 0 is not a
target (label -100).

Where are the assistant tokens? Chat templates rarely mark them (``{% generation %}`` is missing from most
templates), so they are found by rendering prefixes of the conversation (with the example's ``tools``, passed to
every rendering). For assistant message ``i``::

    before_i  = render(messages[:i], add_generation_prompt=True)    # ends with the assistant header
    through_i = render(messages[:i + 1])                            # adds the content and the end of turn
    full      = render(messages)

and the assistant characters are ``full[len(before_i):len(through_i)]``: its text and its tool calls, as the
template writes them; ``system``, ``user`` and ``tool`` turns (a tool's result) are never targets. This holds
only when the template is prefix-consistent (``full`` starts with ``through_i``, which starts with
``before_i``); a template that is not (e.g. one that rewrites earlier turns) is an error naming the line, never
a silent mislabel. ``full`` is tokenized once, as at inference, and a token is a target when its character
offsets overlap an assistant span (a fast tokenizer is needed for the offsets). Weights need the content's
place inside that span: the content verbatim, or stripped of surrounding whitespace (templates that ``trim``
it); a template that changes it otherwise is an error for a weighted message.

Examples longer than ``max_length`` tokens are cut at the end; the cut examples, tokens and target tokens are
counted, and an example left without any target token is skipped and counted, never silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adaptlab.errors import DataError, ModelError
from adaptlab.lm.dataset_block import DatasetBlock, read_sft_examples
from adaptlab.lm.packing import IGNORE_INDEX
from adaptlab.lm.sft_examples import MEMORY, Messages, SFTExample, Weights, Where


@dataclass
class SFTStats:
    """What happened to the examples of one SFT file (counts; ``weight_sum`` over the kept target tokens)."""

    conversations: int = 0
    examples: int = 0
    assistant_turns: int = 0
    tokens: int = 0
    target_tokens: int = 0
    zero_weight_tokens: int = 0
    weight_sum: float = 0.0
    truncated_conversations: int = 0
    truncated_tokens: int = 0
    truncated_target_tokens: int = 0
    skipped_no_assistant: int = 0
    skipped_all_weights_zero: int = 0
    skipped_no_target_after_truncation: int = 0
    turns_without_special_end_token: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_chat_template(tokenizer: Any, source: str) -> None:
    """Chat examples need a chat template; say how to get one."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(
            f"the tokenizer {source} has no chat template, and chat examples ({{\"messages\": ...}}) are formatted "
            "with it. Use the tokenizer of an instruct model (config key 'tokenizer'), add a 'chat_template' to its "
            "tokenizer_config.json, or give plain {\"prompt\": ..., \"completion\": ...} examples."
        )


def require_fast_tokenizer(tokenizer: Any, source: str) -> None:
    """Targets and weights are placed by character offsets, which only a fast tokenizer gives."""
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"the tokenizer {source} is a slow (Python) tokenizer; SFT needs a fast one for "
                         "character offsets (install `tokenizers` and save the tokenizer with use_fast=True)")


# ------------------------------------------------------------------------------------------------ rendering


@dataclass
class Target:
    """A target stretch of the rendered text: ``[start, end)`` with the content at ``content`` and its weights."""

    start: int
    end: int
    content: tuple[int, int] = (0, 0)  # the content's [start, end) in the text
    lead: int = 0  # characters the template stripped from the content's start (spans are offsets into it)
    weights: Weights | None = None


def _render(tokenizer: Any, messages: Messages, generation_prompt: bool, where: Where, tools: Any = None) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    except Exception as exc:  # jinja2 TemplateError, or a template's own raise_exception(...)
        raise DataError(f"the chat template cannot render this conversation: {exc}", *where) from None


def assistant_spans(tokenizer: Any, messages: Messages, where: Where = MEMORY,
                    tools: list[dict[str, Any]] | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the ``[start, end)`` character span of every assistant turn (module doc)."""
    full = _render(tokenizer, messages, False, where, tools)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True, where, tools)
        through = _render(tokenizer, messages[: i + 1], False, where, tools)
        if not through.startswith(before) or not full.startswith(through):
            raise DataError(
                f"the chat template is not prefix-consistent at assistant message {i}: rendering the conversation "
                "up to it does not give a prefix of the whole, so its tokens cannot be located; use a template "
                "that renders earlier turns the same way whatever follows", *where)
        spans.append((len(before), len(through)))
    return full, spans


def _place_content(text: str, target: Target, content: str, what: str, where: Where) -> Target:
    """Find the weighted ``content`` inside its target span (verbatim, or as the template trimmed it)."""
    at = text.find(content, target.start, target.end)
    if at < 0 and content.strip():
        stripped = content.strip()
        at = text.find(stripped, target.start, target.end)
        if at >= 0:
            target.lead = len(content) - len(content.lstrip())
            content = stripped
    if at < 0:
        raise DataError(f"the chat template changes the content of {what} (it is not found in the rendering), "
                        "so its weights cannot be placed on its tokens", *where)
    target.content = (at, at + len(content))
    return target


def _check_tool_calls(message: dict[str, Any], rendered: str, i: int, where: Where) -> None:
    """A template without tool support drops the calls, and the turn would teach an empty answer: refuse it."""
    for call in message.get("tool_calls", []):
        if call["function"]["name"] not in rendered:
            raise DataError(f"the chat template does not render the tool calls of assistant message {i} (the call to "
                            f"{call['function']['name']!r} is not in its rendering); use a tokenizer whose chat "
                            "template supports tools (tool_calls)", *where)


def render(tokenizer: Any, example: SFTExample) -> tuple[str, list[Target]]:
    """The text to tokenize and its target stretches: the assistant turns (chat), or the completion (plain)."""
    if example.messages is None:
        start = len(example.prompt)
        end = start + len(example.completion)
        return example.prompt + example.completion, [Target(start, end, (start, end), 0, example.weights.get(0))]
    text, spans = assistant_spans(tokenizer, example.messages, example.where, example.tools)
    turns = [i for i, m in enumerate(example.messages) if m["role"] == "assistant"]
    targets = []
    for i, (start, end) in zip(turns, spans, strict=True):
        _check_tool_calls(example.messages[i], text[start:end], i, example.where)
        target = Target(start, end, weights=example.weights.get(i))
        if target.weights is not None:
            target = _place_content(text, target, example.messages[i]["content"], f"assistant message {i}",
                                    example.where)
        targets.append(target)
    return text, targets


# ------------------------------------------------------------------------------------------------ encoding


def span_weight(spans: list[tuple[int, int, float]], offset: int) -> float:
    """The weight of a content token starting at character ``offset``: the first span ending after it, else 1."""
    for _, end, weight in spans:
        if end > offset:
            return weight
    return 1.0


def _weigh(target: Target, offsets: list[tuple[int, int]], tokens: list[int], where: Where) -> list[float]:
    """Weights of the ``tokens`` (indices into ``offsets``) of one target stretch, by the module's rules."""
    spec = target.weights
    if spec is None:
        return [1.0] * len(tokens)
    content_start, content_end = target.content
    in_content = [offsets[t][0] < content_end and offsets[t][1] > content_start for t in tokens]
    if spec.per_token is not None:
        if sum(in_content) != len(spec.per_token):
            raise DataError(f"{len(spec.per_token)} token_weights, but the content is {sum(in_content)} tokens "
                            "with this tokenizer; give one weight per content token", *where)
        given = iter(spec.per_token)
        weights = [next(given) if inside else 1.0 for inside in in_content]
    else:
        weights = [span_weight(spec.spans, offsets[t][0] - content_start + target.lead)
                   if offsets[t][0] < content_end else 1.0 for t in tokens]
    content = [w for w, inside in zip(weights, in_content, strict=True) if inside]
    if content and not any(content):
        return [0.0] * len(tokens)  # a turn judged wholly bad is not taught, its ending included
    return weights


def end_ids(tokenizer: Any) -> tuple[int | None, int]:
    """``(BOS or None, EOS)`` around a plain example, as :func:`adaptlab.lm.packing.encode_document` does."""
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if end is None:
        raise ModelError("the tokenizer has neither an eos_token nor a sep_token, so a plain completion cannot "
                         "end with a stop token; use a tokenizer with an EOS (or chat examples)")
    return tokenizer.bos_token_id, end


@dataclass
class EncodedExample:
    """Token ids, labels (-100 where not a target), weights (0 where not a target), which tokens are response
    (inside a target stretch, whatever their weight), and whether each stretch holds a special end token."""

    input_ids: list[int]
    labels: list[int]
    weights: list[float]
    response: list[bool]
    has_end: list[bool]

    def cut(self, length: int) -> None:
        self.input_ids, self.labels = self.input_ids[:length], self.labels[:length]
        self.weights, self.response = self.weights[:length], self.response[:length]


def encode_example(tokenizer: Any, example: SFTExample) -> EncodedExample:
    """Tokenize one example and give each token its label and weight (module docstring).

    A stretch without a special token (end-of-turn marker or EOS) among its targets teaches the model no way to
    stop; ``has_end`` lets the caller count them.
    """
    text, targets = render(tokenizer, example)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    offsets = [tuple(pair) for pair in encoding["offset_mapping"]]
    if example.messages is None:  # plain: [BOS] text [EOS], the EOS a target of the completion
        bos, eos = end_ids(tokenizer)
        input_ids.append(eos)
        offsets.append((len(text), len(text) + 1))
        targets[0].end += 1
        if bos is not None:
            input_ids.insert(0, bos)
            offsets.insert(0, (0, 0))
    special = set(tokenizer.all_special_ids)
    encoded = EncodedExample(input_ids, [IGNORE_INDEX] * len(input_ids), [0.0] * len(input_ids),
                             [False] * len(input_ids), [])
    for target in targets:
        tokens = [t for t, (start, end) in enumerate(offsets) if start < target.end and end > target.start]
        for t, weight in zip(tokens, _weigh(target, offsets, tokens, example.where), strict=True):
            encoded.response[t] = True
            if weight > 0:
                encoded.labels[t], encoded.weights[t] = input_ids[t], weight
        encoded.has_end.append(any(input_ids[t] in special for t in tokens))
    return encoded


def encode_examples(tokenizer: Any, examples: list[SFTExample], max_length: int,
                    progress_label: str = "encoding") -> tuple[list[dict], SFTStats]:
    """Rows ``{"input_ids", "position_ids", "labels"}`` (+ ``"weights"`` when some example is weighted), one
    example each as :class:`~adaptlab.lm.packing.PackedCollator` takes them, and what was cut or skipped.

    Nothing usable is not an error here (the caller says what it means); :func:`encode_sft_dataset` raises.
    """
    from rich.progress import track

    weighted = any(example.weights for example in examples)
    stats = SFTStats()
    rows = []
    for example in track(examples, description=progress_label, disable=len(examples) < 1000, transient=True):
        stats.conversations += 1
        if example.messages is not None and not any(m["role"] == "assistant" for m in example.messages):
            stats.skipped_no_assistant += 1
            continue
        encoded = encode_example(tokenizer, example)
        stats.assistant_turns += len(encoded.has_end)
        stats.turns_without_special_end_token += encoded.has_end.count(False)
        if all(label == IGNORE_INDEX for label in encoded.labels):
            stats.skipped_all_weights_zero += 1
            continue
        if len(encoded.input_ids) > max_length:
            stats.truncated_conversations += 1
            stats.truncated_tokens += len(encoded.input_ids) - max_length
            stats.truncated_target_tokens += sum(label != IGNORE_INDEX for label in encoded.labels[max_length:])
            encoded.cut(max_length)
        targets = sum(label != IGNORE_INDEX for label in encoded.labels)
        if targets == 0:
            stats.skipped_no_target_after_truncation += 1
            continue
        stats.examples += 1
        stats.tokens += len(encoded.input_ids)
        stats.target_tokens += targets
        stats.zero_weight_tokens += sum(r and w == 0 for r, w in zip(encoded.response, encoded.weights, strict=True))
        stats.weight_sum += sum(encoded.weights)
        row = {"input_ids": encoded.input_ids, "position_ids": list(range(len(encoded.input_ids))),
               "labels": encoded.labels}
        if weighted:
            row["weights"] = encoded.weights
        rows.append(row)
    return rows, stats


def check_tokenizer(tokenizer: Any, examples: list[SFTExample], source: str) -> None:
    """A fast tokenizer always, and a chat template when some example is a conversation."""
    require_fast_tokenizer(tokenizer, source)
    if any(example.messages is not None for example in examples):
        require_chat_template(tokenizer, source)


def encode_sft_dataset(tokenizer: Any, data: DatasetBlock | str | Path, max_length: int, source: str = "",
                       key: str = "dataset") -> tuple[list[dict], SFTStats]:
    """:func:`encode_examples` of every example of a ``dataset:`` block (or a file: the block ``{path: FILE}``);
    nothing usable is a :class:`DataError`. ``key`` names the block in messages."""
    block = data if isinstance(data, DatasetBlock) else DatasetBlock(path=str(data))
    examples = read_sft_examples(block, key)
    check_tokenizer(tokenizer, examples, source or str(getattr(tokenizer, "name_or_path", "")))
    rows, stats = encode_examples(tokenizer, examples, max_length, f"encoding {Path(block.path).name}")
    if not rows:
        raise DataError(f"no usable example ({stats.as_dict()}); each needs an assistant message (or completion) "
                        f"with a token of positive weight within max_length={max_length}", block.path)
    return rows, stats
