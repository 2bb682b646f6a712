"""Checks that decide whether a synthetic record is kept: schema conformance and near-duplicates.

:func:`record_problems` lists *every* problem of a record, each a :class:`Problem` whose ``kind``
is one of the module constants in :data:`PROBLEM_KINDS` (stable strings that rejects files and
reports count by) and whose ``detail`` names the offending spans or relation. ``str(problem)``
reads "kind: detail".

:class:`NearDuplicateFilter` keeps a teacher from padding a data set with the same sentence
reworded by one word. Texts are normalised to their words (NFC, casefolded, punctuation removed) and
compared as sets of word 3-gram shingles (texts of fewer than three words: their word set)::

    J(A, B) = |A ∩ B| / |A ∪ B|        near-duplicate  <=>  J >= threshold

Texts with the same normalised words are always duplicates (so two texts without words are
too). Changing one word in the middle of an n-word text removes up to 3 of its n - 2 shingles
and adds as many, so J = (n - 5) / (n + 1): about 0.92 at n = 70, 0.83 at n = 30.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass

from adaptlab.data.records import Record, Span
from adaptlab.synth.schema import Schema

__all__ = [
    "DUPLICATE_RELATION", "EMPTY_SPAN", "EMPTY_TEXT", "OVERLAPPING_SPANS", "PROBLEM_KINDS",
    "RELATION_ARGUMENT_MISSING", "RELATION_TYPE_MISMATCH", "SELF_RELATION", "SPAN_OUTSIDE_TEXT", "UNKNOWN_ENTITY_LABEL",
    "UNKNOWN_RELATION_LABEL", "UNTRIMMED_SPAN", "NearDuplicateFilter", "Problem", "jaccard_similarity",
    "record_problems", "word_shingles",
]

EMPTY_TEXT = "empty text"
UNKNOWN_ENTITY_LABEL = "unknown entity label"
SPAN_OUTSIDE_TEXT = "span outside text"
EMPTY_SPAN = "empty span"
UNTRIMMED_SPAN = "untrimmed span"
OVERLAPPING_SPANS = "overlapping spans"
UNKNOWN_RELATION_LABEL = "unknown relation label"
RELATION_ARGUMENT_MISSING = "relation argument missing"
RELATION_TYPE_MISMATCH = "relation type mismatch"
SELF_RELATION = "self relation"
DUPLICATE_RELATION = "duplicate relation"
PROBLEM_KINDS = (
    EMPTY_TEXT, UNKNOWN_ENTITY_LABEL, SPAN_OUTSIDE_TEXT, EMPTY_SPAN, UNTRIMMED_SPAN, OVERLAPPING_SPANS,
    UNKNOWN_RELATION_LABEL, RELATION_ARGUMENT_MISSING, RELATION_TYPE_MISMATCH, SELF_RELATION, DUPLICATE_RELATION,
)

_PUNCTUATION = re.compile(r"[^\w\s]")


@dataclass(frozen=True)
class Problem:
    """One reason to reject a record: ``kind`` (one of :data:`PROBLEM_KINDS`) and a human detail."""

    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


def record_problems(record: Record, schema: Schema) -> list[Problem]:
    """Every way ``record`` breaks ``schema`` or the record invariants; empty when it is clean.

    Spans: label in the schema, ``0 <= start < end <= len(text)``, no whitespace at either edge,
    no two spans overlapping. Relations: label in the schema, head and tail name existing spans,
    distinct, with the entity types the relation type declares, and no relation repeated.
    """
    problems: list[Problem] = []
    text = record.text
    if not text.strip():
        problems.append(Problem(EMPTY_TEXT))
    entity_names = schema.entity_names
    for i, span in enumerate(record.spans):
        problems.extend(_span_problems(i, span, text, entity_names))
    problems.extend(_overlap_problems(record))
    problems.extend(_relation_problems(record, schema))
    return problems


def _span_problems(index: int, span: Span, text: str, entity_names: list[str]) -> list[Problem]:
    problems = []
    where = f"span {index} [{span.start}, {span.end}]"
    if span.label not in entity_names:
        problems.append(Problem(UNKNOWN_ENTITY_LABEL, f"{span.label!r} (schema: {', '.join(entity_names)})"))
    if span.start < 0 or span.end > len(text):
        problems.append(Problem(SPAN_OUTSIDE_TEXT, f"{where} (text length {len(text)})"))
    elif span.start >= span.end:
        problems.append(Problem(EMPTY_SPAN, f"{where} (end must be greater than start)"))
    else:
        covered = text[span.start : span.end]
        if covered != covered.strip():
            problems.append(Problem(UNTRIMMED_SPAN, f"{where} {covered!r} starts or ends with whitespace"))
    return problems


def _overlap_problems(record: Record) -> list[Problem]:
    """One problem per overlapping pair of in-range, non-empty spans, in text order."""
    n = len(record.text)
    usable = sorted(
        (span.start, span.end, i) for i, span in enumerate(record.spans) if 0 <= span.start < span.end <= n
    )
    problems = []
    for k, (start_a, end_a, i) in enumerate(usable):
        for start_b, end_b, j in usable[k + 1 :]:
            if start_b >= end_a:
                break
            a, b = record.spans[i], record.spans[j]
            problems.append(Problem(
                OVERLAPPING_SPANS,
                f"{record.span_text(a)!r} [{start_a}, {end_a}] and {record.span_text(b)!r} [{start_b}, {end_b}]",
            ))
    return problems


def _relation_problems(record: Record, schema: Schema) -> list[Problem]:
    problems = []
    relation_names = [r.name for r in schema.relations]
    known = ", ".join(relation_names) if relation_names else "none declared"
    n_spans = len(record.spans)
    first_seen: dict[tuple[int, int, str], int] = {}
    for k, relation in enumerate(record.relations):
        where = f"relation {k} {relation.label!r}"
        missing = [
            f"{role} index {index}" for role, index in (("head", relation.head), ("tail", relation.tail))
            if not 0 <= index < n_spans
        ]
        if missing:
            detail = f"{where}: {', '.join(missing)} (there are {n_spans} spans)"
            problems.append(Problem(RELATION_ARGUMENT_MISSING, detail))
        elif relation.head == relation.tail:
            problems.append(Problem(SELF_RELATION, f"{where} links span {relation.head} to itself"))
        declared = schema.relation(relation.label)
        if declared is None:
            problems.append(Problem(UNKNOWN_RELATION_LABEL, f"{relation.label!r} (schema: {known})"))
        elif not missing:
            got = (record.spans[relation.head].label, record.spans[relation.tail].label)
            if got != (declared.head, declared.tail):
                problems.append(Problem(
                    RELATION_TYPE_MISMATCH,
                    f"{declared.name} needs {declared.head} -> {declared.tail}, got {got[0]} -> {got[1]}",
                ))
        key = (relation.head, relation.tail, relation.label)
        if key in first_seen:
            problems.append(Problem(DUPLICATE_RELATION, f"relation {k} repeats relation {first_seen[key]} {list(key)}"))
        else:
            first_seen[key] = k
    return problems


def word_shingles(text: str) -> frozenset[tuple[str, ...]]:
    """Word 3-grams of the casefolded, punctuation-free text; its word set if it has fewer than 3 words."""
    words = _words(text)
    if len(words) < 3:
        return frozenset((word,) for word in words)
    return frozenset(zip(words, words[1:], words[2:]))


def jaccard_similarity(a: str, b: str) -> float:
    """``|A ∩ B| / |A ∪ B|`` of the two texts' :func:`word_shingles`; 1.0 for equal normalised texts."""
    if _words(a) == _words(b):
        return 1.0
    shingles_a, shingles_b = word_shingles(a), word_shingles(b)
    return len(shingles_a & shingles_b) / len(shingles_a | shingles_b)


class NearDuplicateFilter:
    """Accepts texts one at a time, rejecting each that is a near-duplicate of one accepted earlier.

    An inverted index maps every shingle to the ids of the accepted texts that contain it, so a new
    text is compared only with texts sharing at least one shingle, and the intersection sizes fall
    out of counting postings: checking a text with shingle set S costs O(Σ_{s∈S} |postings(s)|),
    not O(accepted texts). Memory is O(total shingles accepted).
    """

    def __init__(self, threshold: float = 0.9):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._by_words: dict[tuple[str, ...], int] = {}
        self._postings: defaultdict[tuple[str, ...], list[int]] = defaultdict(list)
        self._sizes: list[int] = []

    def __len__(self) -> int:
        """Number of texts accepted so far."""
        return len(self._sizes)

    def check_and_add(self, text: str) -> int | None:
        """Id (order of acceptance, from 0) of the most similar accepted near-duplicate, else accept ``text``.

        Ties go to the earliest accepted text. A rejected text is not added.
        """
        words = tuple(_words(text))
        if words in self._by_words:
            return self._by_words[words]
        shingles = word_shingles(text)
        shared: Counter[int] = Counter()
        for shingle in shingles:
            shared.update(self._postings.get(shingle, ()))
        scored = (
            (intersection / (len(shingles) + self._sizes[other] - intersection), -other)
            for other, intersection in shared.items()
        )
        best = max(scored, default=None)
        if best is not None and best[0] >= self.threshold:
            return -best[1]
        new_id = len(self._sizes)
        self._by_words[words] = new_id
        self._sizes.append(len(shingles))
        for shingle in shingles:
            self._postings[shingle].append(new_id)
        return None


def _words(text: str) -> list[str]:
    return _PUNCTUATION.sub("", unicodedata.normalize("NFC", text).casefold()).split()
