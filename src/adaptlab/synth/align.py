"""Map the entity strings a teacher proposes to character offsets in its sentence.

Teachers answer ``{"text": ..., "entities": [["sea turtles", "SPECIES"], ...]}``; they copy
entity strings loosely (other case, collapsed whitespace, quotes around them) and name the same
string more than once. Offsets computed here become the spans of canonical records, so every
entity either gets a span that round-trips (``sentence[span.start:span.end]``) or a reason why not.

Rules, applied by :func:`align_entity_strings`:

* **Unicode.** Offsets index the sentence exactly as passed (Python code points, so an emoji
  before an entity counts as one). The sentence must be NFC-normalised -- call
  :func:`normalise_sentence` (NFC + strip) on it first; a non-NFC sentence raises ``ValueError``
  rather than yield offsets into a different string. Entity strings are NFC-normalised here, so
  ``e`` + U+0301 in an entity matches ``é`` in the sentence. Entity strings are stripped of
  surrounding whitespace and quotes (``"'`` and typographic quotes).
* **Matching.** Exact occurrences first (method ``"exact"``). If none is usable, a whitespace-
  and case-insensitive match (method ``"fuzzy"``): the entity's whitespace-split tokens,
  ``re.escape``-d, joined by ``\\s+``, with ``re.IGNORECASE`` -- so tabs, newlines and non-breaking
  spaces inside an entity still match.
* **Word boundaries.** An occurrence must not cut a word: where the entity's first (last)
  character is a word character, the sentence character just before (after) it must not be
  one. Word characters are ``str.isalnum()`` or combining marks, so neither "ant" in "plants"
  nor "caf" in "café" nor "q" in "q" + U+0301 (which NFC cannot compose) is accepted.
  Occurrences only inside longer words give the reason "only found inside a longer word".
* **Repeats and overlaps.** Each occurrence goes to at most one entity and assigned spans never
  overlap. Entities are assigned longest first (length with whitespace collapsed; ties in input
  order), each taking the leftmost exact occurrence that overlaps no span assigned before it,
  else the leftmost such fuzzy one. So the k-th mention of a string takes the k-th free
  occurrence, and "sea turtles" is placed before "sea" whichever the teacher listed first. If no
  free occurrence is left: "mentioned N times but occurs only M times in the sentence" when the
  string (compared case- and whitespace-insensitively, any label) is named more often than it
  occurs, else "every occurrence overlaps another entity (e.g. 'sea turtles')".
* Otherwise: "not in the sentence"; an entity that is empty after stripping: "empty entity
  string". Results come back in input order.

Cost per entity: one regex search from each match start in the sentence (overlapping occurrences
count), plus an overlap check against the spans already assigned -- trivial at sentence length.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from adaptlab.data.records import Span

__all__ = [
    "EMPTY_ENTITY", "INSIDE_LONGER_WORD", "NOT_FOUND", "Alignment", "align_entity_strings", "clean_entity_string",
    "normalise_sentence",
]

AlignMethod = Literal["exact", "fuzzy"]

_QUOTES = "\"'`“”‘’«»„‚"

NOT_FOUND = "not in the sentence"
INSIDE_LONGER_WORD = "only found inside a longer word"
EMPTY_ENTITY = "empty entity string"


@dataclass(frozen=True)
class Alignment:
    """Where one proposed entity sits in the sentence; ``span`` is ``None`` with a ``reason`` if nowhere."""

    entity_text: str
    label: str
    span: Span | None
    method: AlignMethod | None
    reason: str | None


def normalise_sentence(text: str) -> str:
    """NFC-normalise and strip a sentence; apply before alignment so offsets index this string."""
    return unicodedata.normalize("NFC", text).strip()


def clean_entity_string(entity_text: str) -> str:
    """NFC-normalise an entity string and strip surrounding whitespace and quotes (repeatedly)."""
    cleaned = unicodedata.normalize("NFC", entity_text)
    while True:
        stripped = cleaned.strip().strip(_QUOTES)
        if stripped == cleaned:
            return cleaned
        cleaned = stripped


def align_entity_strings(sentence: str, entities: Sequence[tuple[str, str]]) -> list[Alignment]:
    """Align each ``(entity_text, label)`` to a span of ``sentence`` (see the module docstring)."""
    if not unicodedata.is_normalized("NFC", sentence):
        raise ValueError("sentence is not NFC-normalised; pass it through normalise_sentence() first")
    cleaned = [clean_entity_string(text) for text, _ in entities]
    mentions = Counter(_mention_key(text) for text in cleaned if text)
    order = sorted(range(len(entities)), key=lambda i: -len(_mention_key(cleaned[i])))
    assigned: dict[int, Span] = {}
    results: dict[int, Alignment] = {}
    for i in order:
        entity_text, label = entities[i]
        text = cleaned[i]
        if not text:
            results[i] = Alignment(entity_text, label, None, None, EMPTY_ENTITY)
            continue
        span, method, reason = _place(sentence, text, label, mentions[_mention_key(text)], assigned)
        if span is not None:
            assigned[i] = span
        results[i] = Alignment(entity_text, label, span, method, reason)
    return [results[i] for i in range(len(entities))]


def _place(
    sentence: str, text: str, label: str, mention_count: int, assigned: dict[int, Span]
) -> tuple[Span | None, AlignMethod | None, str | None]:
    exact_pattern = re.compile(re.escape(text))
    fuzzy_pattern = re.compile(r"\s+".join(re.escape(token) for token in text.split()), re.IGNORECASE)
    fuzzy_any = _occurrences(sentence, fuzzy_pattern)
    if not fuzzy_any:
        return None, None, NOT_FOUND
    fuzzy = [o for o in fuzzy_any if _on_word_boundaries(sentence, *o)]
    if not fuzzy:
        return None, None, INSIDE_LONGER_WORD
    exact = [o for o in _occurrences(sentence, exact_pattern) if _on_word_boundaries(sentence, *o)]
    taken = list(assigned.values())
    for method, occurrences in (("exact", exact), ("fuzzy", fuzzy)):
        for start, end in occurrences:
            span = Span(start, end, label)
            if not any(span.overlaps(other) for other in taken):
                return span, method, None
    if mention_count > len(fuzzy):
        return None, None, f"mentioned {mention_count} times but occurs only {len(fuzzy)} times in the sentence"
    start, end = fuzzy[0]
    blocker = next(other for other in taken if other.overlaps(Span(start, end, label)))
    return None, None, f"every occurrence overlaps another entity (e.g. {sentence[blocker.start:blocker.end]!r})"


def _occurrences(sentence: str, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """Every ``(start, end)`` match of ``pattern``, overlapping ones included (one per start)."""
    found = []
    position = 0
    while (match := pattern.search(sentence, position)) is not None:
        found.append((match.start(), match.end()))
        position = match.start() + 1
    return found


def _on_word_boundaries(sentence: str, start: int, end: int) -> bool:
    cuts_left = start > 0 and _is_word_char(sentence[start - 1]) and _is_word_char(sentence[start])
    cuts_right = end < len(sentence) and _is_word_char(sentence[end - 1]) and _is_word_char(sentence[end])
    return not (cuts_left or cuts_right)


def _is_word_char(char: str) -> bool:
    return char.isalnum() or unicodedata.category(char).startswith("M")


def _mention_key(text: str) -> str:
    """Case- and whitespace-insensitive key, the same equivalence the fuzzy match uses."""
    return " ".join(text.casefold().split())
