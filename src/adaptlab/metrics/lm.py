"""Perplexity of a causal language model on held-out text.

Why: perplexity on held-out domain (and general) text is the cheapest signal that a merged or
continually pretrained model still models language, and it is what the merge coefficient search
ranks candidates by. It must be exact and comparable between candidates that share a tokenizer.

Formula. Over every scored token ``t`` of every window of every document::

    nll_per_token = Σ_t −log p(x_t | context_t) / N        N = number of scored tokens
    perplexity    = exp(nll_per_token)

The sums are over tokens, not an average of per-window or per-document means, so long documents
weigh by their length. Log-probabilities come from ``log_softmax`` of the logits in float32; the
sum is accumulated in float64.

Documents. Each document is scored separately (no context leaks from one document into the next,
and the result does not depend on document order). It is tokenized without the tokenizer's
special tokens and prefixed with the tokenizer's BOS token (else its EOS token, the usual document
separator in pretraining), so that its first token is predicted too; a tokenizer with neither
leaves the first token as context only. A document with nothing to predict (empty after
tokenization, or one token and no prefix) is counted in ``skipped_documents``.

Windows. A document longer than ``max_length`` is scored with a sliding window: the first window
is ``tokens[0:max_length]``; each next one ends ``stride`` tokens further and is ``max_length``
long, and only the tokens past the previous window's end are scored. Every token is therefore
scored exactly once, whatever the stride (the token count does not depend on it), and each scored
token sees at least ``max_length − stride`` tokens of context. ``stride`` defaults to
``max_length − 1``: consecutive windows share one token, the cheapest setting; a smaller stride
costs more forward passes and gives more context. When a document fits in ``max_length``, one
window scores it and ``stride`` does not matter.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from adaptlab.data.records import read_text_lines
from adaptlab.errors import ConfigError, DataError

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


def plan_windows(length: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, score_from)`` windows over a sequence of ``length`` tokens (see module docstring).

    The window's input is ``tokens[begin:end]``; tokens at positions ``score_from .. end−1`` are
    scored. The scored ranges tile ``1 .. length−1`` exactly once.
    """
    if length < 2:
        return []
    end = min(max_length, length)
    windows = [(0, end, 1)]
    while end < length:
        new_end = min(end + stride, length)
        windows.append((new_end - max_length, new_end, end))
        end = new_end
    return windows


def _check_arguments(max_length: int, stride: int | None, batch_size: int) -> int:
    if max_length < 2:
        raise ConfigError(f"max_length must be at least 2 tokens (got {max_length})")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1 (got {batch_size})")
    if stride is None:
        return max_length - 1
    if not 1 <= stride <= max_length - 1:
        raise ConfigError(
            f"stride must be between 1 and max_length − 1 = {max_length - 1} (got {stride}); every scored "
            "token needs at least one token of context in its window")
    return stride


def context_prefix_ids(tokenizer) -> list[int]:
    """The token that starts every scored text: BOS, else EOS (the usual document separator), else none."""
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [prefix] if prefix is not None else []


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


def _document_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    prefix = context_prefix_ids(tokenizer)
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return [(prefix if ids else []) + list(ids) for ids in encoded]


def perplexity(
    model,
    tokenizer,
    texts: list[str] | str,
    max_length: int = 512,
    stride: int | None = None,
    batch_size: int = 4,
    device=None,
) -> dict[str, Any]:
    """Token-level perplexity of a causal LM on ``texts`` (a list of documents, or one document).

    Returns ``{"perplexity", "nll_per_token", "tokens", "windows", "documents", "skipped_documents"}``
    where ``tokens`` is the number of scored tokens and ``windows`` the number of forward rows.
    The model is put in eval mode (and restored afterwards); no gradients are kept.
    """
    import torch

    stride = _check_arguments(max_length, stride, batch_size)
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise DataError("no texts to score: give at least one non-empty document")
    documents = _document_ids(tokenizer, list(texts))
    windows = [(ids, w) for ids in documents for w in plan_windows(len(ids), max_length, stride)]
    scored_documents = sum(1 for ids in documents if len(ids) >= 2)
    if not windows:
        raise DataError(f"none of the {len(texts)} texts has a token to predict: each is empty after "
                        "tokenization (or one token long, with no BOS/EOS token to predict it from)")

    device = device if device is not None else next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    try:
        with torch.no_grad():
            for first in range(0, len(windows), batch_size):
                batch = windows[first:first + batch_size]
                input_ids, attention_mask = right_pad([ids[begin:end] for ids, (begin, end, _) in batch], pad_id)
                input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
                logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
                for row, (_, (begin, end, score_from)) in enumerate(batch):
                    first_target, stop = score_from - begin, end - begin
                    # logits at position p predict the token at p + 1
                    row_logits = logits[row, first_target - 1:stop - 1].float()
                    targets = input_ids[row, first_target:stop]
                    nll = torch.nn.functional.cross_entropy(row_logits, targets, reduction="sum")
                    total_nll += float(nll.double())
                    total_tokens += stop - first_target
    finally:
        model.train(was_training)

    nll_per_token = total_nll / total_tokens
    return {
        "perplexity": math.inf if nll_per_token > _LARGEST_EXP_ARGUMENT else math.exp(nll_per_token),
        "nll_per_token": nll_per_token,
        "tokens": total_tokens,
        "windows": len(windows),
        "documents": scored_documents,
        "skipped_documents": len(documents) - scored_documents,
    }
