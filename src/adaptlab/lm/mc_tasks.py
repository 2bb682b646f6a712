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
For item ``x`` with rendered prompt ``P`` and rendered choices ``C_1..C_k``::

    LL_i   = Σ_t log p(c_t | P, c_<t)           over the tokens c_t of C_i
    acc    = mean over items of [argmax_i LL_i == answer]
    acc_norm = mean over items of [argmax_i LL_i / len(C_i.lstrip()) == answer]

``len`` counts characters (leading whitespace not counted), which equals lm-evaluation-harness's
``len(choice)`` normalisation when the choice template is its target delimiter followed by
``{choice}``. Ties go to the lower index. Tasks whose choices come from the header also get
macro-F1 over those choices (fin-harness reports it for chabsa).

Tokenization boundary (as lm-evaluation-harness): trailing whitespace of the prompt is moved to the
start of the continuation, then ``prompt + continuation`` is tokenized as one string (no special
tokens, BOS prefixed if the tokenizer has one, else EOS, as in :mod:`adaptlab.metrics.lm`) and the
continuation starts after as many tokens as the prompt alone has. When the tokenizer merged text
across the boundary (the prompt's tokens are not a prefix of the whole), the continuation starts
at the first token that differs, so it still covers the whole choice; such requests are counted
in ``boundary_mismatches``. A request longer than ``max_length`` loses tokens from the left of the
prompt and is counted in ``truncated_items``. Requests are sorted by length and right-padded into
batches of ``batch_size`` forward passes; log-probabilities are ``log_softmax`` in float32 of the
continuation positions only, summed in float64. Models that take ``logits_to_keep`` (transformers'
causal LMs) compute logits only from the batch's earliest continuation position on, which keeps
the vocabulary-sized logits small for long prompts.
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.data.records import iter_json_lines
from adaptlab.errors import ConfigError, DataError
from adaptlab.metrics.classification import classification_prf
from adaptlab.metrics.lm import context_prefix_ids, right_pad

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
    prompt: str  # rendered prompt
    continuations: list[str]  # rendered choice texts, in choice order
    choices: list[str]  # raw choice texts
    answer: int


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
    item_id = obj.get("id", f"line {line}")
    return MCItem(line=line, id=str(item_id), prompt=prompt, continuations=continuations, choices=list(choices),
                  answer=obj["answer"])


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
class ChoiceRequest:
    """One (item, choice) pair as token ids; ``ids[start:]`` is the scored continuation."""

    item: int
    choice: int
    ids: list[int]
    start: int


def build_requests(tokenizer, task: MCTask, max_length: int) -> tuple[list[ChoiceRequest], int, int]:
    """Token requests of every (item, choice), boundary mismatches and truncated items (module docstring)."""
    prefix_ids = context_prefix_ids(tokenizer)
    requests, mismatches, truncated_items = [], 0, set()
    for item_index, item in enumerate(task.items):
        context = item.prompt.rstrip()
        moved = item.prompt[len(context):]  # trailing whitespace joins the continuation (lm-eval convention)
        context_ids = prefix_ids + tokenizer(context, add_special_tokens=False)["input_ids"]
        for choice_index, continuation in enumerate(item.continuations):
            whole = prefix_ids + tokenizer(context + moved + continuation, add_special_tokens=False)["input_ids"]
            start = len(context_ids)
            if whole[:start] != context_ids:
                mismatches += 1
                start = next((i for i, (a, b) in enumerate(zip(whole, context_ids)) if a != b), len(whole))
            if start < 1:
                raise DataError("the prompt renders to no token and the tokenizer has no BOS/EOS token to predict "
                                "the choice from; give the prompt template some text", task.path, item.line)
            if start >= len(whole):
                raise DataError(f"choice {choice_index} ({continuation!r}) adds no token after the prompt",
                                task.path, item.line)
            if len(whole) > max_length:
                cut = len(whole) - max_length
                if start - cut < 1:
                    raise DataError(f"choice {choice_index} is {len(whole) - start} tokens long, which leaves no "
                                    f"prompt within max_length {max_length}; raise mc.max_length", task.path, item.line)
                whole, start = whole[cut:], start - cut
                truncated_items.add(item_index)
            requests.append(ChoiceRequest(item_index, choice_index, whole, start))
    return requests, mismatches, len(truncated_items)


def choice_loglikelihoods(model, tokenizer, requests: list[ChoiceRequest], batch_size: int, device=None,
                          advance: Callable[[int], None] | None = None) -> list[float]:
    """Σ log p(continuation tokens | prefix) for each request, batched (longest first) and right-padded."""
    import torch

    device = device if device is not None else next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    slices_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].ids))
    scores = [0.0] * len(requests)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for first in range(0, len(order), batch_size):
                batch = [requests[i] for i in order[first:first + batch_size]]
                input_ids, attention_mask = right_pad([r.ids for r in batch], pad_id)
                width = input_ids.shape[1]
                # only positions from the earliest continuation on need logits (vocab-sized rows are the big ones)
                keep = width - min(r.start for r in batch) + 1 if slices_logits else width
                options = {"logits_to_keep": keep} if slices_logits else {}
                logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                               use_cache=False, **options).logits
                offset = width - keep  # logits[:, j] belong to position offset + j
                for row, (index, request) in enumerate(zip(order[first:first + batch_size], batch)):
                    # logits at position p predict the token at p + 1
                    begin, end = request.start - 1 - offset, len(request.ids) - 1 - offset
                    log_probs = torch.log_softmax(logits[row, begin:end].float(), dim=-1)
                    targets = torch.tensor(request.ids[request.start:], device=log_probs.device).unsqueeze(-1)
                    scores[index] = float(log_probs.gather(-1, targets).double().sum())
                if advance is not None:
                    advance(len(batch))
    finally:
        model.train(was_training)
    return scores


def count_requests(task: MCTask) -> int:
    return sum(len(item.continuations) for item in task.items)


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)  # the first of equal maxima


def score_mc_task(model, tokenizer, task: MCTask, batch_size: int = 8, max_length: int = 1024, device=None,
                  advance: Callable[[int], None] | None = None) -> dict[str, Any]:
    """acc, acc_norm (and macro-F1 for shared choices) of ``model`` on ``task``; see the module docstring.

    Returns ``{"acc", "acc_norm", "items", "correct", "correct_norm", "truncated_items",
    "boundary_mismatches", ["macro_f1", "macro_f1_norm"], "predictions": [{"id", "answer", "pred",
    "pred_norm", "loglikelihoods"}]}``.
    """
    if batch_size < 1 or max_length < 2:
        raise ConfigError(f"mc batch_size must be >= 1 and max_length >= 2 (got {batch_size}, {max_length})")
    requests, mismatches, truncated = build_requests(tokenizer, task, max_length)
    scores = choice_loglikelihoods(model, tokenizer, requests, batch_size, device, advance)
    per_item: list[list[float]] = [[0.0] * len(item.continuations) for item in task.items]
    for request, score in zip(requests, scores):
        per_item[request.item][request.choice] = score
    predictions = []
    for item, lls in zip(task.items, per_item):
        normalised = [ll / len(c.lstrip()) for ll, c in zip(lls, item.continuations)]
        predictions.append({"id": item.id, "answer": item.answer, "pred": _argmax(lls),
                            "pred_norm": _argmax(normalised), "loglikelihoods": lls})
    correct = sum(p["pred"] == p["answer"] for p in predictions)
    correct_norm = sum(p["pred_norm"] == p["answer"] for p in predictions)
    result: dict[str, Any] = {
        "acc": correct / len(predictions), "acc_norm": correct_norm / len(predictions), "items": len(predictions),
        "correct": correct, "correct_norm": correct_norm, "truncated_items": truncated,
        "boundary_mismatches": mismatches,
    }
    if task.shared_choices is not None:
        labels = task.shared_choices
        gold = [labels[p["answer"]] for p in predictions]
        for key, pred in (("macro_f1", "pred"), ("macro_f1_norm", "pred_norm")):
            result[key] = classification_prf(gold, [labels[p[pred]] for p in predictions], labels)["macro"]["f1"]
    result["predictions"] = predictions
    return result
