"""CoNLL / BIO token files <-> canonical records.

Reading accepts IOB2 (``B-X I-X``), IOB1 (``I-X`` may open a span; ``B-X`` only separates two
adjacent spans of one type), IOBES (``S-X``, ``E-X``; also ``U-``/``L-`` of BILOU) and bare types
(``X`` for every word of the span: adjacent words with the same bare type form one span). Writing
always produces IOB2. The token column is the first field, the tag the last; the separator is a
tab or any run of spaces.

Tokens are joined by single spaces to form the record text, so ``offsets[i]`` of token ``i`` is
known exactly; the original tokens are kept in ``meta["tokens"]`` only when asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from adaptlab.data.records import Record, Span, read_text_lines
from adaptlab.data.words import word_offsets, words_in_spans
from adaptlab.errors import DataError
from adaptlab.runs import atomic_write_text

OUTSIDE = "O"
PREFIXES = {"B", "I", "E", "S", "L", "U"}


def split_tag(tag: str) -> tuple[str | None, str | None]:
    """``"B-HABITAT" -> ("B", "HABITAT")``, ``"O" -> (None, None)``, ``"SPECIES" -> (None, "SPECIES")``."""
    if tag == OUTSIDE:
        return None, None
    if len(tag) > 2 and tag[1] in "-_" and tag[0] in PREFIXES:
        return tag[0], tag[2:]
    return None, tag


def tags_to_spans(tags: list[str]) -> list[tuple[int, int, str]]:
    """Decode any supported scheme into ``(first_token, last_token_exclusive, type)`` spans.

    Rules: a span opens at ``B``/``S``/``U``, at a bare type, or at an ``I``/``E``/``L`` whose type
    differs from the open span (IOB1 and the common "I after O" error both open a span there).
    A span closes after ``E``/``S``/``L``/``U``, at ``O``, or when another span opens.
    """
    spans: list[tuple[int, int, str]] = []
    start, label = None, None

    def close(end: int) -> None:
        nonlocal start, label
        if start is not None:
            spans.append((start, end, label))
        start, label = None, None

    for i, tag in enumerate(tags):
        prefix, typ = split_tag(tag)
        if typ is None:
            close(i)
            continue
        continues = label == typ and (prefix in ("I", "E", "L") or (prefix is None and start is not None))
        if not continues:
            close(i)
            start, label = i, typ
        if prefix in ("E", "S", "L", "U"):
            close(i + 1)
    close(len(tags))
    return spans


def spans_to_iob2(n_tokens: int, token_spans: Iterable[tuple[int, int, str]]) -> list[str]:
    tags = [OUTSIDE] * n_tokens
    for start, end, label in token_spans:
        tags[start] = f"B-{label}"
        for k in range(start + 1, end):
            tags[k] = f"I-{label}"
    return tags


def tokens_to_record(tokens: list[str], tags: list[str], meta: dict | None = None) -> Record:
    """Join tokens with single spaces and turn token spans into character spans."""
    offsets, pos = [], 0
    for tok in tokens:
        offsets.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    text = " ".join(tokens)
    spans = [Span(offsets[s][0], offsets[e - 1][1], label) for s, e, label in tags_to_spans(tags)]
    return Record(text=text, spans=spans, meta=dict(meta or {}))


def iob2_word_tags(record: Record, offsets: list[tuple[int, int]]) -> list[str]:
    """IOB2 tag of each word (given by character offsets) from the record's spans."""
    tags, previous = [], -1
    for idx in words_in_spans(offsets, record.spans):
        tags.append(OUTSIDE if idx == -1 else ("I-" if idx == previous else "B-") + record.spans[idx].label)
        previous = idx
    return tags


def record_to_tokens(record: Record) -> tuple[list[str], list[str]]:
    """Split a record into words (see :mod:`adaptlab.data.words`) with IOB2 tags."""
    offsets = word_offsets(record.text)
    return [record.text[s:e] for s, e in offsets], iob2_word_tags(record, offsets)


def read_conll(path: str | Path) -> list[Record]:
    """Strict reader: every non-blank line must be ``token<whitespace>tag``.

    Messy files (lines with several words, missing tags, stray tags) are rejected with file:line;
    ``adaptlab data inspect`` lists their problems and ``adaptlab data convert`` repairs them.
    """
    records: list[Record] = []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0

    def flush() -> None:
        if tokens:
            records.append(tokens_to_record(tokens, tags, {"source": f"{path}:{first_line}"}))
        tokens.clear()
        tags.clear()

    for lineno, line in enumerate(read_text_lines(path), start=1):
        if not line.strip() or line.startswith("-DOCSTART-"):
            flush()
            continue
        fields = line.split()
        if len(fields) != 2:
            raise DataError(
                f"expected 2 columns (token and tag), found {len(fields)}: {line.strip()!r}. "
                "Run `adaptlab data inspect` to list such lines and `adaptlab data convert` to repair them",
                path,
                lineno,
            )
        if not tokens:
            first_line = lineno
        tokens.append(fields[0])
        tags.append(fields[1])
    flush()
    return records


def write_conll(records: Iterable[Record], path: str | Path) -> Path:
    """Write IOB2 ``token\\ttag`` lines, one blank line between records."""
    blocks = []
    for record in records:
        tokens, tags = record_to_tokens(record)
        blocks.append("".join(f"{t}\t{g}\n" for t, g in zip(tokens, tags)))
    return atomic_write_text(path, "\n".join(blocks))
