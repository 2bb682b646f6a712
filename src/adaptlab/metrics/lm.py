r"""Perplexity of a causal language model on held-out text, by lm-evaluation-harness's rules.

Why: perplexity on held-out domain (and general) text is the cheapest signal that a merged or
continually pretrained model still models language, and it is what the merge coefficient search
ranks candidates by. It must be exact, comparable between candidates that share a tokenizer, and
equal to what lm-evaluation-harness reports for the same text (``loglikelihood_rolling``).

Documents. Each document is scored separately (no context leaks from one into the next, and the
result does not depend on their order): it is tokenized with the tokenizer's own special tokens and
cut into rolling windows after the prefix token (BOS, else EOS), exactly as lm-eval does
(:mod:`adaptlab.metrics.loglikelihood`: ``encode``, ``rolling_windows``). ``max_length`` is the
model's input length per window (default: the model's context window, as lm-eval resolves it);
``stride`` (default ``max_length``, lm-eval's) is how many tokens each later window predicts.

Formulas, over the documents ``d`` with summed log-likelihood ``LL_d``, scored tokens ``N_d``,
words ``W_d = len(re.split(r"\s+", d))`` and UTF-8 bytes ``B_d`` (lm-eval's counts)::

    nll_per_token   = −Σ LL_d / Σ N_d          perplexity      = exp(nll_per_token)
    word_perplexity = exp(−Σ LL_d / Σ W_d)     byte_perplexity = exp(−Σ LL_d / Σ B_d)
    bits_per_byte   = −Σ LL_d / Σ B_d / ln 2

Sums run over tokens, words or bytes, not over per-document means, so long documents weigh by
their length. ``word_perplexity``, ``byte_perplexity`` and ``bits_per_byte`` are the numbers lm-eval's
perplexity tasks (wikitext) report; ``perplexity`` is per token of this model's tokenizer, so only
models that share a tokenizer compare on it. A document with no token to predict (empty after
tokenization) is counted in ``skipped_documents``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adaptlab.data.records import read_text_lines
from adaptlab.errors import ConfigError, DataError
from adaptlab.metrics.loglikelihood import context_length, encode, loglikelihoods, prefix_token_id, rolling_windows

_LARGEST_EXP_ARGUMENT = 709.0  # math.exp overflows beyond ~709.78; a broken model gets perplexity inf


def read_text_file(path: str | Path) -> list[str]:
    """Documents of a UTF-8 text file: one per paragraph, paragraphs separated by blank lines.

    Lines inside a paragraph are joined with ``\\n`` (a file with no blank lines is one document,
    scored with the sliding window). Raises :class:`DataError` for a missing, non-UTF-8 or empty file.
    """
    documents: list[str] = []
    paragraph: list[str] = []
    for line in read_text_lines(path) + [""]:
        if line.strip():
            paragraph.append(line)
        elif paragraph:
            documents.append("\n".join(paragraph))
            paragraph = []
    if not documents:
        raise DataError("file has no text (only blank lines)", path)
    return documents


def _check_arguments(max_length: int, stride: int | None, batch_size: int) -> None:
    if max_length < 1:
        raise ConfigError(f"max_length must be at least 1 token (got {max_length})")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1 (got {batch_size})")
    if stride is not None and not 1 <= stride <= max_length:
        raise ConfigError(f"stride must be between 1 and max_length = {max_length} (got {stride})")


def _exp(value: float) -> float:
    return math.inf if value > _LARGEST_EXP_ARGUMENT else math.exp(value)


def perplexity(
    model,
    tokenizer,
    texts: list[str] | str,
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    device=None,
    advance: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Perplexities of a causal LM on ``texts`` (a list of documents, or one document); module docstring.

    Returns ``{"perplexity", "nll_per_token", "word_perplexity", "byte_perplexity", "bits_per_byte",
    "tokens", "words", "bytes", "windows", "documents", "skipped_documents", "max_length",
    "document_loglikelihoods"}``; ``tokens`` counts scored tokens and ``windows`` forward rows.
    ``advance(n)`` is called after every batch of ``n`` windows. The model's train/eval mode is kept.
    """
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise DataError("no texts to score: give at least one non-empty document")
    max_length = max_length if max_length is not None else context_length(model.config, tokenizer)
    _check_arguments(max_length, stride, batch_size)
    prefix = prefix_token_id(tokenizer)
    windows_of = [rolling_windows(encode(tokenizer, text), prefix, max_length, stride) for text in texts]
    requests = [window for windows in windows_of for window in windows]
    if not requests:
        raise DataError(f"none of the {len(texts)} texts has a token to predict: each is empty after "
                        "tokenization (or one token long, with no BOS/EOS token to predict it from)")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = iter(loglikelihoods(model, requests, max_length, batch_size, pad_id, device, advance))
    per_document = [sum(next(scores) for _ in windows) for windows in windows_of]
    scored = [(text, ll, windows) for text, ll, windows in zip(texts, per_document, windows_of) if windows]
    total_ll = sum(ll for _, ll, _ in scored)
    tokens = sum(len(w.continuation) for _, _, windows in scored for w in windows)
    words = sum(len(re.split(r"\s+", text)) for text, _, _ in scored)
    size = sum(len(text.encode("utf-8")) for text, _, _ in scored)
    return {
        "perplexity": _exp(-total_ll / tokens),
        "nll_per_token": -total_ll / tokens,
        "word_perplexity": _exp(-total_ll / words),
        "byte_perplexity": _exp(-total_ll / size) if size else None,  # None: only empty documents were scored
        "bits_per_byte": -total_ll / size / math.log(2) if size else None,
        "tokens": tokens,
        "words": words,
        "bytes": size,
        "windows": len(requests),
        "documents": len(scored),
        "skipped_documents": len(texts) - len(scored),
        "max_length": max_length,
        "document_loglikelihoods": per_document,
    }
