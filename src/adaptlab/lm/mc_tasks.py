"""Multiple-choice tasks scored by log-likelihood: a JSONL task format, its loader and the scorer.

Why: domain benchmarks such as japanese-lm-fin-harness (chabsa, cma_basics, cpa_audit, fp2,
security_sales_1) are lm-evaluation-harness ``multiple_choice`` tasks: the model is not asked to
write an answer, each choice is scored by how likely the model finds it after the prompt. This
module lets a user write such a task as one small JSONL file, without lm-eval's Python hooks.

Task file (UTF-8 JSONL, one JSON object per line, blank lines ignored)
------------------------------------------------------------------------
The first line may be a **header**, an object whose only key is ``task``: ``{"task": {...}}``, with
these keys (all optional)::

    prompt   the prompt template; default "{context}\\nQuestion: {question}\\nAnswer:"
    choice   the choice template: the text scored after the prompt; default " {choice}"
    choices  choices shared by every item (a classification task such as chabsa's positive/negative)

Every other line is an **item**::

    answer   0-based index of the right choice (required)
    choices  list of at least 2 distinct, non-empty strings (required unless the header has choices)
    question the question (required when the prompt template uses {question}, as the default does)
    context  optional text before the question; "" when absent
    id       optional identifier kept in the predictions; default "line N"
    ...      any other field (string or number) can be used in the prompt template as {field}

Templates use Python ``str.format`` syntax with named fields (``{{`` and ``}}`` are literal braces).
The prompt template may use the item's fields and two built-ins: ``{choices_list}`` ("- a\\n- b")
and ``{choices_lettered}`` ("A. a\\nB. b"). Leading newlines of a rendered prompt are removed, so the
default template also reads well for items without context. The choice template may use
``{choice}`` (the choice text), ``{letter}`` (A, B, ...) and ``{index}`` (0, 1, ...). Examples:
chabsa is ``prompt: "Sentence: {sentence}\\nTarget: {target}\\nSentiment:"`` with header
``choices: ["positive", "negative"]``; a lettered exam question (cma_basics, fp2) is
``prompt: "{question}\\n{choices_lettered}\\nAnswer:"`` with ``choice: " {letter}"``.

Every mistake is a :class:`DataError` naming ``file:line``: an answer out of range, fewer than two
choices, a missing field, a placeholder that is neither a built-in nor a field of any item.

Scoring
-------
Every choice is one log-likelihood request, scored exactly as lm-evaluation-harness scores a
``multiple_choice`` task with ``--model hf`` (:mod:`adaptlab.metrics.loglikelihood`: tokenization with
the tokenizer's own special tokens, trailing whitespace of the prompt moved to the choice, the
choice's tokens sliced off the tokenized whole). Each rendered choice is ``delimiter + text``, where
``delimiter`` is the whitespace all rendered choices of the item start with (lm-eval's
``target_delimiter``, " " for the default template) and ``text`` is lm-eval's choice. For item ``x``
with rendered prompt ``P``::

    LL_i     = Σ_t log p(c_t | P, c_<t)        over the tokens c_t of choice i
    acc      = mean over items of [argmax_i LL_i == answer]
    acc_norm = mean over items of [argmax_i LL_i / len(text_i) == answer]     (len in characters)

Ties go to the lower index (numpy's argmax, as lm-eval). Tasks whose choices come from the header
also get macro-F1 over those choices (fin-harness reports it for chabsa). Requests whose prompt
tokens are not a prefix of the tokenized prompt + choice are counted in ``boundary_mismatches``;
items with a request longer than ``max_length + 1`` tokens (the prompt loses its start) in
``truncated_items``. ``max_length`` defaults to the model's context window, as lm-eval's.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.data.records import iter_json_lines
from adaptlab.errors import ConfigError, DataError
from adaptlab.metrics.classification import classification_prf
from adaptlab.metrics.loglikelihood import Request, context_length, encode_pair, loglikelihoods

DEFAULT_PROMPT = "{context}\nQuestion: {question}\nAnswer:"
DEFAULT_CHOICE = " {choice}"
HEADER_KEYS = ("prompt", "choice", "choices")
PROMPT_BUILTINS = ("choices_list", "choices_lettered")
CHOICE_PLACEHOLDERS = ("choice", "letter", "index")
OPTIONAL_FIELDS = {"context": ""}


@dataclass
class MCItem:
    line: int
    id: str
    prompt: str  # rendered prompt: lm-eval's context
    delimiter: str  # lm-eval's target_delimiter: what every scored choice starts with
    choices: list[str]  # lm-eval's choices, in order; choice i is scored as delimiter + choices[i]
    answer: int

    @property
    def continuations(self) -> list[str]:
        return [self.delimiter + choice for choice in self.choices]


@dataclass
class MCTask:
    name: str
    path: str
    prompt_template: str
    choice_template: str
    shared_choices: list[str] | None
    items: list[MCItem]


def template_fields(template: str, where: str, path: str | Path, line: int | None) -> list[str]:
    """Named placeholders of a ``str.format`` template; positional or attribute fields are errors."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise DataError(f"{where} template {template!r} is not valid ({exc}); write literal braces as {{{{ }}}}",
                        path, line) from None
    fields = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        if not field.isidentifier():
            raise DataError(f"{where} template placeholder {{{field}}} is not a plain field name", path, line)
        fields.append(field)
    return fields


def _letter(index: int) -> str:
    return chr(ord("A") + index) if index < 26 else str(index)


def _read_header(obj: Any, path: str, line: int) -> dict[str, Any]:
    header = obj["task"]
    if not isinstance(header, dict):
        raise DataError('the header must be {"task": {"prompt": ..., "choice": ..., "choices": [...]}}', path, line)
    unknown = sorted(set(header) - set(HEADER_KEYS))
    if unknown:
        raise DataError(f"unknown header key(s) {unknown}; allowed: {list(HEADER_KEYS)}", path, line)
    for key in ("prompt", "choice"):
        if key in header and not isinstance(header[key], str):
            raise DataError(f"header {key!r} must be a template string", path, line)
    if "choices" in header:
        _check_choices(header["choices"], "header choices", path, line)
    return header


def _check_choices(choices: Any, what: str, path: str, line: int) -> list[str]:
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise DataError(f"{what} must be a list of strings", path, line)
    if len(choices) < 2:
        raise DataError(f"{what} has {len(choices)} choice(s); a multiple-choice item needs at least 2", path, line)
    if any(not c.strip() for c in choices):
        raise DataError(f"{what} contains an empty choice", path, line)
    if len(set(choices)) != len(choices):
        raise DataError(f"{what} repeats a choice ({choices}); choices must be distinct", path, line)
    return choices


def _check_item(obj: Any, shared: list[str] | None, path: str, line: int) -> list[str]:
    if not isinstance(obj, dict):
        raise DataError("an item must be a JSON object with 'answer', 'choices' and the template's fields", path, line)
    if "choices" in obj:
        choices = _check_choices(obj["choices"], "choices", path, line)
    elif shared is not None:
        choices = shared
    else:
        raise DataError("missing field 'choices' (or give shared choices in the header)", path, line)
    if "answer" not in obj:
        raise DataError("missing field 'answer' (0-based index of the right choice)", path, line)
    answer = obj["answer"]
    if not isinstance(answer, int) or isinstance(answer, bool):
        raise DataError(f"'answer' must be an integer index, got {answer!r}", path, line)
    if not 0 <= answer < len(choices):
        raise DataError(f"answer {answer} is out of range: there are {len(choices)} choices (0..{len(choices) - 1})",
                        path, line)
    return choices


def _render_item(obj: dict, line: int, choices: list[str], prompt_template: str, prompt_fields: list[str],
                 choice_template: str, path: str) -> MCItem:
    values: dict[str, Any] = {**OPTIONAL_FIELDS, **obj}
    for field in prompt_fields:
        if field in PROMPT_BUILTINS:
            continue
        if field not in values:
            raise DataError(f"missing field {field!r} used by the prompt template {prompt_template!r}", path, line)
        if not isinstance(values[field], str | int | float) or isinstance(values[field], bool):
            raise DataError(f"field {field!r} must be a string or a number to fill the prompt template", path, line)
    values["choices_list"] = "\n".join(f"- {c}" for c in choices)
    values["choices_lettered"] = "\n".join(f"{_letter(i)}. {c}" for i, c in enumerate(choices))
    prompt = prompt_template.format_map(values).lstrip("\n")
    continuations = [choice_template.format(choice=c, letter=_letter(i), index=i) for i, c in enumerate(choices)]
    if any(not c.strip() for c in continuations):
        raise DataError(f"the choice template {choice_template!r} renders a choice to blank text", path, line)
    delimiter = os.path.commonprefix([c[:len(c) - len(c.lstrip())] for c in continuations])
    item_id = obj.get("id", f"line {line}")
    return MCItem(line=line, id=str(item_id), prompt=prompt, delimiter=delimiter,
                  choices=[c[len(delimiter):] for c in continuations], answer=obj["answer"])


def load_mc_task(path: str | Path, name: str | None = None) -> MCTask:
    """Read and validate a task file (format in the module docstring); every error names file:line."""
    path_str = str(path)
    lines = list(iter_json_lines(path))
    header: dict[str, Any] = {}
    header_line: int | None = None
    if lines and isinstance(lines[0][1], dict) and set(lines[0][1]) == {"task"}:
        header_line, obj = lines.pop(0)
        header = _read_header(obj, path_str, header_line)
    if not lines:
        raise DataError("the task has no items (one JSON object per line after the optional header)", path_str)
    prompt_template = header.get("prompt", DEFAULT_PROMPT)
    choice_template = header.get("choice", DEFAULT_CHOICE)
    shared = header.get("choices")
    template_line = header_line if header_line is not None else lines[0][0]
    unknown = [f for f in template_fields(choice_template, "choice", path_str, template_line)
               if f not in CHOICE_PLACEHOLDERS]
    if unknown:
        raise DataError(f"unknown placeholder {{{unknown[0]}}} in the choice template {choice_template!r}; "
                        f"use {', '.join('{' + p + '}' for p in CHOICE_PLACEHOLDERS)}", path_str, template_line)
    checked = [(line, obj, _check_item(obj, shared, path_str, line)) for line, obj in lines]
    prompt_fields = template_fields(prompt_template, "prompt", path_str, template_line)
    known = set(PROMPT_BUILTINS) | set(OPTIONAL_FIELDS) | {key for _, obj, _ in checked for key in obj}
    for field in prompt_fields:
        if field not in known:
            raise DataError(f"unknown placeholder {{{field}}} in the prompt template {prompt_template!r}: no item has "
                            f"a field {field!r} and it is not a built-in ({', '.join(PROMPT_BUILTINS)})",
                            path_str, template_line)
    items = [_render_item(obj, line, choices, prompt_template, prompt_fields, choice_template, path_str)
             for line, obj, choices in checked]
    return MCTask(name=name or Path(path).stem, path=path_str, prompt_template=prompt_template,
                  choice_template=choice_template, shared_choices=shared, items=items)


@dataclass
class ChoiceRequests:
    """Every (item, choice) of a task as a log-likelihood request, with the task's tokenization counts."""

    keys: list[tuple[int, int]]  # (item index, choice index) of each request
    requests: list[Request]
    boundary_mismatches: int
    truncated_items: int


def build_requests(tokenizer, task: MCTask, max_length: int) -> ChoiceRequests:
    """The requests of every (item, choice), by lm-eval's pairing (module docstring)."""
    keys, requests, mismatches, truncated = [], [], 0, set()
    for item_index, item in enumerate(task.items):
        for choice_index, continuation in enumerate(item.continuations):
            try:
                request, clean_boundary = encode_pair(tokenizer, item.prompt, continuation)
            except DataError as exc:
                raise DataError(str(exc), task.path, item.line) from None
            if not request.context or not request.continuation:
                missing = "the prompt renders to no token" if not request.context else \
                    f"choice {choice_index} ({continuation!r}) adds no token after the prompt"
                raise DataError(missing, task.path, item.line)
            if len(request.continuation) > max_length:
                raise DataError(f"choice {choice_index} is {len(request.continuation)} tokens long, more than "
                                f"max_length {max_length}; raise mc.max_length", task.path, item.line)
            mismatches += not clean_boundary
            if len(request.context) + len(request.continuation) > max_length + 1:
                truncated.add(item_index)
            keys.append((item_index, choice_index))
            requests.append(request)
    return ChoiceRequests(keys, requests, mismatches, len(truncated))


def count_requests(task: MCTask) -> int:
    return sum(len(item.choices) for item in task.items)


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)  # the first of equal maxima


def score_mc_task(model, tokenizer, task: MCTask, batch_size: int = 8, max_length: int | None = None, device=None,
                  advance: Callable[[int], None] | None = None) -> dict[str, Any]:
    """acc, acc_norm (and macro-F1 for shared choices) of ``model`` on ``task``; see the module docstring.

    Returns ``{"acc", "acc_norm", "items", "correct", "correct_norm", "truncated_items",
    "boundary_mismatches", "max_length", ["macro_f1", "macro_f1_norm"], "predictions": [{"id", "answer",
    "pred", "pred_norm", "loglikelihoods"}]}``.
    """
    max_length = max_length if max_length is not None else context_length(model.config, tokenizer)
    if batch_size < 1 or max_length < 1:
        raise ConfigError(f"mc batch_size and max_length must be >= 1 (got {batch_size}, {max_length})")
    built = build_requests(tokenizer, task, max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = loglikelihoods(model, built.requests, max_length, batch_size, pad_id, device, advance)
    per_item: list[list[float]] = [[0.0] * len(item.choices) for item in task.items]
    for (item_index, choice_index), score in zip(built.keys, scores):
        per_item[item_index][choice_index] = score
    predictions = []
    for item, lls in zip(task.items, per_item):
        normalised = [ll / len(choice) for ll, choice in zip(lls, item.choices)]
        predictions.append({"id": item.id, "answer": item.answer, "pred": _argmax(lls),
                            "pred_norm": _argmax(normalised), "loglikelihoods": lls})
    correct = sum(p["pred"] == p["answer"] for p in predictions)
    correct_norm = sum(p["pred_norm"] == p["answer"] for p in predictions)
    result: dict[str, Any] = {
        "acc": correct / len(predictions), "acc_norm": correct_norm / len(predictions), "items": len(predictions),
        "correct": correct, "correct_norm": correct_norm, "truncated_items": built.truncated_items,
        "boundary_mismatches": built.boundary_mismatches, "max_length": max_length,
    }
    if task.shared_choices is not None:
        labels = task.shared_choices
        gold = [labels[p["answer"]] for p in predictions]
        for key, pred in (("macro_f1", "pred"), ("macro_f1_norm", "pred_norm")):
            result[key] = classification_prf(gold, [labels[p[pred]] for p in predictions], labels)["macro"]["f1"]
    result["predictions"] = predictions
    return result
