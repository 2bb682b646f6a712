"""The model boundary of NER: records <-> word-level IOB2 label ids <-> subword features.

Records carry character spans; the token-classification model sees words (see
:mod:`adaptlab.data.words`) split into subwords. Only the first subword of each word carries a
label; the others get -100 and are ignored by the loss, so a word's prediction is read from its
first subword. That is the convention of the HF ``token-classification`` pipeline with
``aggregation_strategy="first"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adaptlab.data.formats.conll import OUTSIDE, iob2_word_tags, tags_to_spans
from adaptlab.data.records import Record, Span
from adaptlab.data.words import word_offsets

IGNORE_INDEX = -100


def bio_labels(entity_types: Sequence[str]) -> list[str]:
    """``["O", "B-A", "I-A", "B-B", ...]`` for sorted entity types: the model's label list."""
    labels = [OUTSIDE]
    for typ in sorted(set(entity_types)):
        labels += [f"B-{typ}", f"I-{typ}"]
    return labels


def entity_types(records: Sequence[Record]) -> list[str]:
    return sorted({s.label for r in records for s in r.spans})


@dataclass
class EncodedRecord:
    input_ids: list[int]
    attention_mask: list[int]
    labels: list[int]
    word_ids: list[int | None]
    offsets: list[tuple[int, int]]
    truncated_words: int


def encode_record(record: Record, tokenizer, label2id: dict[str, int] | None, max_length: int) -> EncodedRecord:
    """Tokenise a record's words; ``labels`` are first-subword label ids (or all -100 without labels)."""
    offsets = word_offsets(record.text)
    words = [record.text[s:e] for s, e in offsets]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    word_ids = enc.word_ids()
    kept = {w for w in word_ids if w is not None}
    tags = iob2_word_tags(record, offsets) if label2id is not None else None
    labels, previous = [], None
    for w in word_ids:
        if w is None or w == previous or tags is None:
            labels.append(IGNORE_INDEX)
        else:
            labels.append(label2id[tags[w]])
        previous = w
    return EncodedRecord(
        input_ids=list(enc["input_ids"]),
        attention_mask=list(enc["attention_mask"]),
        labels=labels,
        word_ids=word_ids,
        offsets=offsets,
        truncated_words=len(offsets) - (max(kept) + 1 if kept else 0),
    )


def decode_words(
    text: str,
    offsets: list[tuple[int, int]],
    tags: list[str],
    scores: list[float] | None = None,
) -> tuple[list[Span], list[float]]:
    """Word tags -> character spans (any I-after-O opens a span), with the mean word score per span."""
    spans, span_scores = [], []
    for start, end, label in tags_to_spans(tags):
        spans.append(Span(offsets[start][0], offsets[end - 1][1], label))
        if scores is not None:
            span_scores.append(round(sum(scores[start:end]) / (end - start), 4))
    return spans, span_scores


def allowed_transitions(labels: Sequence[str]) -> np.ndarray:
    """``A[i, j]`` is True when tag ``labels[j]`` may follow ``labels[i]`` in IOB2 (``I-X`` only after
    ``B-X`` or ``I-X``). Row ``len(labels)`` is the start state."""
    n = len(labels)
    allowed = np.ones((n + 1, n), dtype=bool)
    for j, tag in enumerate(labels):
        if tag.startswith("I-"):
            typ = tag[2:]
            for i, prev in enumerate(labels):
                allowed[i, j] = prev in (f"B-{typ}", f"I-{typ}")
            allowed[n, j] = False
    return allowed


def constrained_decode(log_probs: np.ndarray, allowed: np.ndarray) -> list[int]:
    """Most likely IOB2-valid tag sequence (Viterbi).

    Maximises ``sum_t log p_t(y_t)`` subject to ``allowed[y_{t-1}, y_t]`` (and the start row for
    ``y_0``). Independent per-word argmax can emit ``O I-X`` or ``B-X I-Y``, which strict span
    matching punishes twice (a wrong span and a missed one); the constraint removes those at no
    training cost. ``log_probs`` has shape (words, labels).
    """
    n_words, n_labels = log_probs.shape
    if n_words == 0:
        return []
    forbidden = np.where(allowed, 0.0, -np.inf)
    score = log_probs[0] + forbidden[n_labels]
    back = np.zeros((n_words, n_labels), dtype=np.int64)
    for t in range(1, n_words):
        candidates = score[:, None] + forbidden[:n_labels]  # (prev, next)
        back[t] = np.argmax(candidates, axis=0)
        score = candidates[back[t], np.arange(n_labels)] + log_probs[t]
    path = [int(np.argmax(score))]
    for t in range(n_words - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]
