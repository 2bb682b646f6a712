"""Relation clauses of an annotation schema, and one span-boundary convention.

Some datasets write their sentences as clauses ``SUBJECT VERB [ADVERB] PREP OBJECT`` joined by
``;``: in the biospecies data, ``Alabama waterdog live in rivers of Alabama; Alabama waterdog feed
on insects; ...``, where the subject is a SPECIES mention and the verb fixes the object's type
(``live`` -> HABITAT, ``feed`` -> FEEDING). This module knows no dataset: a :class:`ClauseGrammar`
says which entity type is the subject and which verb forms state which relation (and so which
object type). It is built from the schema's relation verbs
(:meth:`adaptlab.synth.schema.Schema.clause_grammar`), so only a caller that names a schema (or a
preset such as ``biospecies``) gets clause-level repairs. :func:`split_clauses` finds the clauses
from the words (and, only as a last resort, the tags), so repairs and checks can say "this span
starts one token before its clause" instead of guessing from tags alone.

Annotators use two conventions for the linking preposition (``live [in rivers]`` vs ``live in
[rivers]``) and are inconsistent about punctuation (``[Alabama,]``) and a scientific name in
parentheses after the common name. A model trained on a mix learns neither, and a strict
span-level metric counts every disagreement twice (a false positive and a false negative).
:func:`normalise_boundaries` rewrites spans to ONE convention:

1. ``preposition_outside``: the linking preposition is outside the object span.
   Why outside: the preposition belongs to the relation (``live_in``, ``feed_on``, ``breed_by``),
   not to the place, food or method; it is the convention of the majority of biospecies clauses;
   and an extractor that outputs triples keeps it on the relation, where RE data puts it too.
2. ``parenthetical_in_species``: a name in parentheses right after a subject span
   (``Alabama waterdog (Necturus alabamensis)``) is inside the span. Why: it names the same
   subject, so it is part of the mention, and the majority of annotated clauses include it.
3. ``punctuation_outside``: leading and trailing punctuation (``,;:.!?`` and unbalanced brackets)
   is outside every span. Why: it is not part of any name, and the word segmentation used at the
   model boundary (:mod:`adaptlab.data.words`) splits it into its own word anyway, so including it
   would only make boundaries depend on tokenisation.

Rules 1 and 2 need clauses, so they apply only with a grammar; rule 3 applies to any data.
:func:`clause_conventions` classifies each clause as ``inside`` / ``outside`` / ``n/a`` for the
preposition so a benchmark can report results per original convention.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from adaptlab.data.records import Record, Span

# English function words of the clause pattern; the verbs and types come from the schema.
LINK_PREPOSITIONS = frozenset(
    "in on by through along at among within near around under off upon from".split()
)
# Adverbs that may stand between a verb and its preposition ("feed mainly on") or before the verb.
VERB_ADVERBS = frozenset(
    "mainly primarily only mostly exclusively largely typically usually chiefly also often generally "
    "presumably probably likely".split()
)
TRAILING_PUNCT = ",;:.!? "
CORE = re.compile(r"^\W+|\W+$")


def core(word: str) -> str:
    """Lower-cased word without surrounding punctuation: ``"(Necturus" -> "necturus"``."""
    return CORE.sub("", word).lower()


def ends_clause(word: str) -> bool:
    """True for a word that closes a clause: ``;`` or ``.`` alone or at the end of a longer word
    (abbreviations such as ``St.`` or ``D.C.`` do not count)."""
    if word in (";", "."):
        return True
    if word.endswith(";"):
        return True
    return word.endswith(".") and len(word) > 3 and not re.search(r"(?:\b[A-Z]\.|St\.)$", word)


@dataclass(frozen=True)
class ClauseGrammar:
    """What makes a relation clause ``SUBJECT VERB [ADVERB] PREP OBJECT`` in one schema.

    ``verbs`` maps each lower-case verb form (``live``, ``lives``) to its relation and the entity
    type of its object (``("live_in", "HABITAT")``); ``subject_type`` is the type of the mention the
    clause is about. The prepositions and adverbs are English function words shared by all schemas.
    """

    subject_type: str
    verbs: Mapping[str, tuple[str, str]]
    prepositions: frozenset[str] = field(default=LINK_PREPOSITIONS)
    adverbs: frozenset[str] = field(default=VERB_ADVERBS)

    def is_adverb(self, word: str) -> bool:
        return core(word) in self.adverbs

    @property
    def entity_types(self) -> set[str]:
        """The subject type and every object type: the labels the clause rules read and write."""
        return {self.subject_type, *(object_type for _, object_type in self.verbs.values())}


@dataclass(frozen=True)
class Clause:
    """Token indices of one clause: subject ``[start, verb)``, object ``[object_start, end)``."""

    start: int
    verb: int
    prep: int | None
    end: int
    relation: str
    object_type: str

    @property
    def object_start(self) -> int:
        return (self.prep if self.prep is not None else self.verb) + 1


def _verb_candidates(words: list[str], grammar: ClauseGrammar) -> list[tuple[int, int | None]]:
    found = []
    for i, word in enumerate(words):
        if core(word) not in grammar.verbs or i + 1 >= len(words):
            continue
        p = i + 1
        if grammar.is_adverb(words[p]) and p + 1 < len(words):
            p += 1
        if core(words[p]) in grammar.prepositions:
            found.append((i, p))
    return found


def split_clauses(words: list[str], grammar: ClauseGrammar, tags: list[str] | None = None) -> list[Clause]:
    """Find the relation clauses of one sequence.

    A clause verb is a relation verb of ``grammar`` followed (after at most one adverb) by a
    linking preposition. Later verbs count only when their relation is new in the sequence, the
    word before them repeats the first subject or is tagged with the subject type, or a clause-final ``;``/``.``
    separates them from the previous clause: this keeps ``... and their larvae feed on leaves``
    inside a feeding object. A clause starts after the last clause-final punctuation before its
    verb; within that range, at the last repetition of the first subject's first two words; with
    no such punctuation and no repetition, at the first ``B-`` tag of the subject type, else at the
    verb (an empty subject, as in ``... of Madeira. feed on nectar``).
    """
    tags = tags or ["O"] * len(words)
    verbs, subject_type = grammar.verbs, grammar.subject_type
    candidates = _verb_candidates(words, grammar)
    if not candidates:
        return []
    accepted = [candidates[0]]
    first_verb = candidates[0][0]
    subject_words = {core(w) for w in words[:first_verb] if core(w)}
    for verb, prep in candidates[1:]:
        seen = {verbs[core(words[v])][0] for v, _ in accepted}
        before = words[verb - 1]
        if (verbs[core(words[verb])][0] not in seen or core(before) in subject_words
                or tags[verb - 1].endswith(subject_type)
                or any(ends_clause(words[j]) for j in range(accepted[-1][1] + 1, verb))):
            accepted.append((verb, prep))
    n_key = min(2, first_verb)
    key = [core(w) for w in words[:n_key]]
    starts = [0]
    for k in range(1, len(accepted)):
        low, verb = accepted[k - 1][1] + 1, accepted[k][0]
        after_stop = next((j + 1 for j in range(verb - 1, low - 1, -1) if ends_clause(words[j])), None)
        low = after_stop if after_stop is not None else low
        start = None
        if n_key:
            start = next((j for j in range(verb - n_key, low - 1, -1)
                          if [core(w) for w in words[j:j + n_key]] == key), None)
        if start is None and after_stop is None:
            start = next((j for j in range(low, verb) if tags[j] == f"B-{subject_type}"), verb)
        starts.append(start if start is not None else low)
    clauses = []
    for k, (verb, prep) in enumerate(accepted):
        end = starts[k + 1] if k + 1 < len(accepted) else len(words)
        relation, object_type = verbs[core(words[verb])]
        clauses.append(Clause(starts[k], verb, prep, end, relation, object_type))
    return clauses


def record_words_tags(record: Record) -> tuple[list[str], list[tuple[int, int]], list[str]]:
    """Whitespace words of a canonical record (text = words joined by spaces), their offsets, and
    IOB2 tags from the spans (a word belongs to the first span it overlaps)."""
    words, offsets, pos = [], [], 0
    for word in record.text.split(" "):
        words.append(word)
        offsets.append((pos, pos + len(word)))
        pos += len(word) + 1
    tags = ["O"] * len(words)
    owner = [-1] * len(words)
    for k, span in sorted(enumerate(record.spans), key=lambda p: p[1].start):
        first = True
        for i, (s, e) in enumerate(offsets):
            if owner[i] == -1 and s < span.end and span.start < e:
                owner[i] = k
                tags[i] = ("B-" if first else "I-") + span.label
                first = False
    return words, offsets, tags


def preposition_convention(clause: Clause, tags: list[str], subject_type: str) -> str:
    """``inside`` when an object span opens at the preposition, ``outside`` when one opens later
    in the clause, ``n/a`` when the clause has no preposition or no object span (a span of a type
    other than ``subject_type``)."""
    if clause.prep is None:
        return "n/a"
    if tags[clause.prep].startswith("B-") and tags[clause.prep][2:] != subject_type:
        return "inside"
    objects = tags[clause.object_start:clause.end]
    if tags[clause.prep] == "O" and any(t != "O" and t[2:] != subject_type for t in objects):
        return "outside"
    return "n/a"


def clause_conventions(records: Iterable[Record], grammar: ClauseGrammar) -> Counter:
    """Count clauses by preposition convention over ``records``."""
    counts: Counter = Counter()
    for record in records:
        words, _, tags = record_words_tags(record)
        for clause in split_clauses(words, grammar, tags):
            counts[preposition_convention(clause, tags, grammar.subject_type)] += 1
    return counts


def _balanced_trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Move ``start``/``end`` inwards past punctuation and brackets that do not pair up inside."""
    while True:
        before = (start, end)
        while end > start and text[end - 1] in TRAILING_PUNCT:
            end -= 1
        while start < end and text[start] in TRAILING_PUNCT:
            start += 1
        inner = text[start:end]
        for open_, close in ("()", "[]", "{}"):
            if inner.endswith(close) and inner.count(close) > inner.count(open_):
                end -= 1
            elif inner.startswith(open_) and inner.count(open_) > inner.count(close):
                start += 1
        if (start, end) == before:
            return start, end


def normalise_record(record: Record, counts: Counter, grammar: ClauseGrammar | None = None) -> Record:
    """Apply the rules of the module docstring to one record (a new record is returned); without a
    grammar there are no clauses, so only ``punctuation_outside`` applies."""
    words, offsets, tags = record_words_tags(record)
    clauses = split_clauses(words, grammar, tags) if grammar is not None else []
    subject_type = grammar.subject_type if grammar is not None else None
    spans = list(record.spans)
    for clause in clauses:
        for k, span in enumerate(spans):
            if clause.prep is None or span.label == subject_type:
                continue
            ps, pe = offsets[clause.prep]
            if ps <= span.start < pe and span.end > pe:
                nxt = next(i for i in range(clause.prep + 1, len(words)) if offsets[i][0] >= pe)
                spans[k] = replace(span, start=offsets[nxt][0])
                counts["preposition_outside"] += 1
        for k, span in enumerate(spans):
            if span.label != subject_type:
                continue
            covered = [i for i, (s, e) in enumerate(offsets) if s < span.end and span.start < e]
            last = covered[-1] if covered else None
            if last is None or not clause.start <= last < clause.verb - 1:
                continue
            nxt = last + 1
            close = next((i for i in range(nxt, clause.verb) if ")" in words[i]), None)
            if not words[nxt].startswith("(") or close is None:
                continue
            end = offsets[close][0] + words[close].rindex(")") + 1
            if any(offsets[nxt][0] < other.end and other.start < end for other in spans):
                continue  # the name in parentheses is a mention of its own: keep the two apart
            spans[k] = replace(span, end=end)
            counts["parenthetical_in_species"] += 1
    trimmed = []
    for span in spans:
        start, end = _balanced_trim(record.text, span.start, span.end)
        if end <= start and record.relations:
            trimmed.append(span)  # dropping it would break relation indices; keep as it is
        elif end > start:
            counts["punctuation_outside"] += (start, end) != (span.start, span.end)
            trimmed.append(Span(start, end, span.label))
        else:
            counts["span_emptied"] += 1
    if not record.relations:
        trimmed.sort()
    out = Record(record.text, trimmed, list(record.relations), dict(record.meta))
    out.validate()  # the rules only shrink spans or grow them over untagged words: never overlaps
    return out


def normalise_boundaries(
    records: Iterable[Record], grammar: ClauseGrammar | None = None
) -> tuple[list[Record], Counter]:
    """Rewrite every record to the single convention; returns new records and rule counts.

    The clause rules (1, 2) need ``grammar``; without it only punctuation moves out of spans.
    Pure: the input records are not modified. A span made only of punctuation is dropped
    (``span_emptied``) unless the record has relations, whose indices must stay valid; spans keep
    their order when there are relations and are sorted by offset otherwise.
    """
    counts: Counter = Counter()
    out = [normalise_record(record, counts, grammar) for record in records]
    return out, counts
