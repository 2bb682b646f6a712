"""Log-likelihood of continuations under a causal LM, by lm-evaluation-harness's conventions.

Why: multiple-choice accuracy and perplexity are only comparable with published numbers (the
fin-harness tables, the Open LLM Leaderboard) when they are computed the way lm-evaluation-harness
(lm-eval, 0.4.x, ``--model hf``) computes them. Every rule below is lm-eval's; the parity benchmark
(``benchmarks/lm_eval_parity.py``) and ``tests/metrics/test_lm_eval_parity.py`` run lm-eval beside
this module and compare per-request log-likelihoods.

Tokenization (:func:`encode`). A text is tokenized with the tokenizer's own special tokens
(``add_special_tokens`` left at its default), so a Llama tokenizer prepends BOS and a Qwen2 or
SmolLM2 tokenizer adds nothing; a text that already starts with the prefix token's text gets none.

Pairs (:func:`encode_pair`). For a context ``c`` and continuation ``x``: trailing whitespace of ``c``
moves to the start of ``x``; ``c + x`` and ``c`` are tokenized; the continuation is the tokens of
``c + x`` after the first ``len(tokens(c))``. When the tokenizer merges text across the boundary
those are not exactly the tokens of ``x`` (a *boundary mismatch*; lm-eval slices all the same, so
do we, and we count them). An empty context becomes the prefix token (BOS, else EOS), with ``x``
tokenized without special tokens; if ``x`` itself starts with that token, its first token is the
context instead.

Scoring (:func:`loglikelihoods`). For each request the input is
``(context + continuation)[-(max_length + 1):][:-1]`` (the left is cut when too long) and

    LL = Σ_t log softmax(logits)_t[x_t]       over the continuation's tokens x_t

from the last ``len(continuation)`` positions of the input. Requests are sorted longest first and
right-padded into batches; log-probabilities are float32 ``log_softmax``, summed in float64 (lm-eval
sums in float32: the two agree to ~1e-6). Requests whose model inputs are identical share one forward
pass: the choices of a multiple-choice item that are one token long all read the item's prompt (lm-eval
caches these the same way). Models that take ``logits_to_keep`` compute logits only from the batch's
earliest continuation position on.

Rolling windows (:func:`rolling_windows`), for perplexity. A document's tokens ``t_1..t_n`` are
scored in windows of at most ``max_length`` input tokens: the first predicts ``t_1..t_m``
(``m = min(max_length, n)``) from the prefix token; each later one predicts the next ``stride``
tokens (fewer at the end) from the ``max_length`` tokens before its last target, so the last window
still has a full context. ``stride = max_length`` (the default) is lm-eval's
``loglikelihood_rolling`` (``context_len = 1``); a smaller stride gives every token at least
``max_length − stride`` tokens of context at the cost of more windows. Every token is scored once.

The one deliberate difference: a tokenizer with neither BOS nor EOS (lm-eval cannot score rolling
log-likelihoods with it at all) leaves a document's first token as context, unscored.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adaptlab.errors import DataError

DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer gives a length
TOKENIZER_UNSET_LENGTH = 1000000000000000019884624838656  # transformers' "no limit" model_max_length
POSITION_ATTRIBUTES = ("n_positions", "max_position_embeddings", "n_ctx")


@dataclass(frozen=True)
class Request:
    """Token ids of a context and the continuation scored after it."""

    context: list[int]
    continuation: list[int]


def context_length(config: Any, tokenizer: Any) -> int:
    """The model's context window as lm-eval resolves it: config positions, tokenizer limit, else 2048."""
    config = getattr(config, "text_config", None) or config
    for attribute in POSITION_ATTRIBUTES:
        value = getattr(config, attribute, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit != TOKENIZER_UNSET_LENGTH:
        return int(limit)
    return DEFAULT_MAX_LENGTH


def prefix_token_id(tokenizer) -> int | None:
    """The token placed before a text that has no context: BOS, else EOS, else none."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def encode(tokenizer, text: str, add_special_tokens: bool | None = None) -> list[int]:
    """Token ids of ``text`` with the tokenizer's default special tokens (see the module docstring)."""
    if add_special_tokens is None:
        prefix = prefix_token_id(tokenizer)
        add_special_tokens = prefix is None or not text.startswith(tokenizer.decode(prefix))
    return list(tokenizer(text, add_special_tokens=add_special_tokens, verbose=False)["input_ids"])


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[Request, bool]:
    """The request for ``continuation`` after ``context``, and whether the context's tokens prefix the whole."""
    if context == "":
        tokens = encode(tokenizer, continuation, add_special_tokens=False)
        prefix = prefix_token_id(tokenizer)
        if prefix is None:
            raise DataError("an empty context needs a BOS or EOS token to condition on, and the tokenizer has neither")
        if tokens and tokens[0] == prefix:
            return Request(tokens[:1], tokens[1:]), True
        return Request([prefix], tokens), True
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = encode(tokenizer, context + continuation)
    context_ids = encode(tokenizer, context)
    return Request(context_ids, whole[len(context_ids):]), whole[:len(context_ids)] == context_ids


def rolling_windows(tokens: Sequence[int], prefix: int | None, max_length: int,
                    stride: int | None = None) -> list[Request]:
    """Disjoint-target windows over ``tokens`` (module docstring); their continuations tile the tokens once."""
    stride = max_length if stride is None else stride
    tokens = list(tokens)
    if prefix is None:  # nothing to predict the first token from: it is context only
        if len(tokens) < 2:
            return []
        first = min(max_length + 1, len(tokens))
        windows = [Request(tokens[:1], tokens[1:first])]
    else:
        if not tokens:
            return []
        first = min(max_length, len(tokens))
        windows = [Request([prefix], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        end = min(predicted + stride, len(tokens))
        start = max(end - max_length - 1, 0)
        windows.append(Request(tokens[start:predicted], tokens[predicted:end]))
        predicted = end
    return windows


def right_pad(rows: list[list[int]], pad_id: int):
    """``(input_ids, attention_mask)`` LongTensors of ``rows`` right-padded to the longest."""
    import torch

    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, :len(ids)] = 1
    return input_ids, attention_mask


def model_input(request: Request, max_length: int) -> list[int]:
    """``(context + continuation)[-(max_length + 1):][:-1]``: what the model reads for ``request``."""
    return (request.context + request.continuation)[-(max_length + 1):][:-1]


def loglikelihoods(model, requests: Sequence[Request], max_length: int, batch_size: int, pad_id: int = 0,
                   device=None, advance: Callable[[int], None] | None = None) -> list[float]:
    """Σ log p(continuation | context) of each request (module docstring); the model is left in its mode."""
    import torch

    for request in requests:
        if not request.continuation:
            raise DataError("a continuation has no token to score")
        if len(request.continuation) > max_length:
            raise DataError(f"a continuation of {len(request.continuation)} tokens does not fit max_length "
                            f"{max_length}; raise max_length")
    device = device if device is not None else next(model.parameters()).device
    slices_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    sharing: dict[tuple[int, ...], list[int]] = {}  # model input -> the requests that read it
    for index, request in enumerate(requests):
        sharing.setdefault(tuple(model_input(request, max_length)), []).append(index)
    inputs = sorted(sharing, key=lambda ids: -len(ids))
    scores = [0.0] * len(requests)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for first in range(0, len(inputs), batch_size):
                batch = inputs[first:first + batch_size]
                input_ids, attention_mask = right_pad([list(ids) for ids in batch], pad_id)
                width = input_ids.shape[1]
                start = min(len(ids) - len(requests[i].continuation) for ids in batch for i in sharing[ids])
                keep = width - start if slices_logits else width
                options = {"logits_to_keep": keep} if slices_logits else {}
                logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                               use_cache=False, **options).logits
                offset = width - keep  # logits[:, j] belong to input position offset + j
                for row, ids in enumerate(batch):
                    for index in sharing[ids]:
                        # the last len(continuation) input positions predict the continuation
                        continuation = requests[index].continuation
                        begin = len(ids) - len(continuation) - offset
                        log_probs = torch.log_softmax(logits[row, begin:len(ids) - offset].float(), dim=-1)
                        targets = torch.tensor(continuation, device=log_probs.device).unsqueeze(-1)
                        scores[index] = float(log_probs.gather(-1, targets).double().sum())
                if advance is not None:
                    advance(sum(len(sharing[ids]) for ids in batch))
    finally:
        model.train(was_training)
    return scores
