"""Word segmentation shared by the CoNLL writer, the NER model boundary and token-level metrics.

Words are runs of letters/digits (with inner hyphens and apostrophes: ``mushroom-tongue``,
``Darwin's``) or single punctuation marks. Splitting punctuation off words lets span boundaries
that exclude a trailing comma or semicolon fall on word boundaries.
"""

from __future__ import annotations

import re

WORD_PATTERN = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")


def word_offsets(text: str) -> list[tuple[int, int]]:
    """Return ``(start, end)`` character offsets of the words of ``text``."""
    return [m.span() for m in WORD_PATTERN.finditer(text)]


def words_in_spans(offsets: list[tuple[int, int]], spans) -> list[int]:
    """For each word, the index of the span it overlaps (first match) or -1 for none.

    ``spans`` is any sequence of objects with ``start`` and ``end`` attributes.
    """
    owner = [-1] * len(offsets)
    order = sorted(range(len(spans)), key=lambda i: spans[i].start)
    for i in order:
        s = spans[i]
        for w, (ws, we) in enumerate(offsets):
            if owner[w] == -1 and ws < s.end and s.start < we:
                owner[w] = i
    return owner
