"""Lenient scanning of messy CoNLL/BIO files: token entries with their file lines, and problems.

The strict reader (:func:`adaptlab.data.formats.conll.read_conll`) stops at the first bad line.
Real files are messier than that, and a person deciding what to do with one needs to see *all* of
its problems at once, each with the file line that shows it. This scanner never fails on content:
it turns every line into token entries (``word``, raw ``tag`` or ``None``, file ``line``) grouped
into sequences, and records a :class:`Problem` for every line that is not a clean ``token<TAB>tag``
pair. Deciding how to fix a problem is left to :mod:`adaptlab.data.repair`.

How lines are read (each rule exists because a real file needed it):

* The tag is the field after the LAST run of whitespace; the separator may be a tab or spaces.
* ``TWO: List of endangered Arthropods`` style lines (an upper-case word or number, a colon, a
  title) are section headers: skipped, counted, and the section name (last word of the title,
  lower-cased) is attached to the sequences that follow.
* A one-field line ending in a known tag right after a lower-case letter, digit or punctuation
  (``whereO``) is a tag glued to its word; any other one-field line, and a line whose last field
  does not look like a tag, holds words with no tag.
* Several words before one tag (``Papua New Guinea<TAB>I-HABITAT``) give one entry per word; the
  later words are marked ``continued`` so a decoder turns ``B-X`` into ``I-X`` for them.
* Zero-width characters (U+200B and friends) are removed from words.

The entity types are either given or inferred: a type is real when it carries at least
``min_type_share`` of the tags of the most frequent type and does not merely start a longer real
type; rarer ones (``B-VERB`` six times among thousands) are stray. Small files should pass the
types explicitly.

:func:`decode_tags` turns the raw tags of one sequence into valid IOB2 (rules 5-12 of
:mod:`adaptlab.data.repair`), counting each rule it applies.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from adaptlab.data.boundary import core, ends_clause
from adaptlab.data.formats.conll import OUTSIDE, split_tag
from adaptlab.data.records import read_text_lines

# Stable problem kinds (snake_case; used as JSON keys and in tests) and what each means.
PROBLEM_KINDS: dict[str, str] = {
    "space_separator": "token and tag separated by spaces, not a tab",
    "section_header": "a section header line inside the data (skipped)",
    "invisible_char": "zero-width or other invisible characters inside a word",
    "missing_tag": "a line with a word but no tag",
    "glued_tag": "a tag glued to its word without a separator (whereO)",
    "multiword_line": "several words before a single tag",
    "bare_type": "an entity type without B-/I- prefix (SPECIES)",
    "stray_tag": "a tag outside the tag set: bracketed (O), unknown type B-VERB, truncated I-B",
    "i_after_o": "I-X that does not continue an X span (after O or at the start)",
    "i_type_change": "I-X right after a Y span (Y != X)",
    "duplicate_sequence": "a sequence identical (words and tags) to an earlier one",
    "shifted_tags": "a clause's subject span starts one or more tokens before or after the clause",
    "verb_in_span": "the clause's relation verb is tagged as part of an entity",
    "type_mismatch_with_verb": "the object's type does not match the relation of the clause's verb",
    "dangling_span_end": "a span ends on a function word or comma (... Indian and | Atlantic Oceans)",
    "parenthesis_split": "a span boundary falls inside a parenthesised group ((Necturus | alabamensis))",
    "punctuation_in_span": "a span starts or ends with punctuation glued to a word (Alabama,)",
    "preposition_in_span": "the linking preposition after the verb opens the object span (in rivers ...)",
    "subject_boundary": "a subject span that does not cover its subject (other types inside, head word out)",
    "garbled_clause": "a clause whose tags contradict its structure (a subject-type span after the verb, ...)",
    "fragmented_clause": "a clause object broken into many small pieces with gaps",
    "no_relation_verb": "a sequence without a relation clause of the schema (no structure to check)",
}

# Repair rule applied by decode_tags for each tag kind of classify_tag.
DECODE_RULES = {"bracketed": "unbracket_tag", "truncated": "expand_truncated_type",
                "stray": "stray_type_to_o", "bare": "bare_type_to_iob", "missing": "fill_missing_tag"}
HEADER_PATTERN = re.compile(r"^(?:[A-Z]{2,}|\d+)\s*[:.)]\s+\S")
TAG_LIKE = re.compile(r"^[(\[{\"']?(?:O|[BIESLU][-_][A-Za-z]+|[A-Z][A-Z_]+)[)\]}\"']?$")
BRACKETED = re.compile(r"^[(\[{\"'](.+?)[)\]}\"']$")
INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
LAST_FIELD = re.compile(r"^(.*?\S)(\s+)(\S+)$")


EXCERPT_CHARS = 120  # a 10 MB line must not become a 10 MB excerpt in every report


@dataclass(frozen=True)
class Problem:
    """One detected problem: its kind (a key of :data:`PROBLEM_KINDS`), file line and excerpt (at most
    :data:`EXCERPT_CHARS` characters, cut with a note of the full length)."""

    kind: str
    line: int
    excerpt: str

    def __post_init__(self) -> None:
        if len(self.excerpt) > EXCERPT_CHARS:
            cut = f"{self.excerpt[:EXCERPT_CHARS]}... ({len(self.excerpt):,} characters)"
            object.__setattr__(self, "excerpt", cut)

    def where(self, path: str | Path) -> str:
        return f"{path}:{self.line}: {self.excerpt}"


@dataclass
class Entry:
    """One token as read: ``tag`` is the raw tag string (``None`` when the line had none)."""

    word: str
    tag: str | None
    line: int
    continued: bool = False  # a later word of a multi-word line (its B-X means I-X)


@dataclass
class Sequence:
    entries: list[Entry]
    section: str | None
    index: int  # 0-based position among the file's sequences

    @property
    def first_line(self) -> int:
        return self.entries[0].line

    @property
    def words(self) -> list[str]:
        return [e.word for e in self.entries]

    def key(self) -> tuple:
        """Identity for exact-duplicate detection: words and raw tags."""
        return tuple((e.word, e.tag) for e in self.entries)


@dataclass
class ScanResult:
    path: Path
    sequences: list[Sequence]
    problems: list[Problem]
    types: tuple[str, ...]
    raw_tags: Counter = field(default_factory=Counter)
    headers: list[tuple[int, str]] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(len(s.entries) for s in self.sequences)


def classify_tag(tag: str | None, types: Iterable[str]) -> tuple[str, str | None]:
    """Classify a raw tag and give its normalised form.

    Returns ``(kind, tag)`` with kind one of ``ok`` (valid prefixed tag or ``O``), ``missing``
    (``None``), ``bare`` (a known type without prefix; the bare type is returned), ``bracketed``
    (``(O)`` -> ``O``), ``truncated`` (``I-B`` -> ``I-BREEDING`` when ``B`` starts exactly one known
    type) or ``stray`` (unknown type; normalised to ``O`` because the schema has no such entity).
    """
    types = set(types)
    if tag is None:
        return "missing", None
    match = BRACKETED.match(tag)
    if match:
        kind, inner = classify_tag(match.group(1), types)
        return ("bracketed", inner) if kind in ("ok", "bare") else ("stray", OUTSIDE)
    if tag == OUTSIDE:
        return "ok", tag
    prefix, typ = split_tag(tag)
    if prefix is not None:
        if typ in types:
            return "ok", f"{prefix}-{typ}"
        candidates = [t for t in types if typ and t.startswith(typ)]
        if len(candidates) == 1:
            return "truncated", f"{prefix}-{candidates[0]}"
        return "stray", OUTSIDE
    if typ in types:
        return "bare", typ
    return "stray", OUTSIDE


def infer_types(tags: Counter, min_type_share: float = 0.02) -> tuple[str, ...]:
    """Entity types that carry at least ``min_type_share`` of the tags of the most frequent type."""
    by_type: Counter = Counter()
    for tag, n in tags.items():
        inner = BRACKETED.match(tag)
        tag = inner.group(1) if inner else tag
        if tag == OUTSIDE or not TAG_LIKE.match(tag):
            continue
        _, typ = split_tag(tag)
        if typ:
            by_type[typ] += n
    if not by_type:
        return ()
    top = max(by_type.values())
    kept = {t for t, n in by_type.items() if n >= min_type_share * top}
    # A type that starts a longer kept type is a truncation of it (I-B for I-BREEDING).
    return tuple(sorted(t for t in kept if not any(o != t and o.startswith(t) for o in kept)))


def _is_header(line: str, types: set[str]) -> bool:
    fields = line.split()
    if not HEADER_PATTERN.match(line) or len(fields) < 3:
        return False
    kind, _ = classify_tag(fields[-1], types)
    return kind not in ("ok", "bare") or len(fields) >= 4


def _section_name(title: str) -> str:
    words = re.findall(r"[A-Za-z]+", title.split(":", 1)[-1])
    return words[-1].lower() if words else title.strip().lower()


def _excerpt(line: str, limit: int = 60) -> str:
    text = line.strip().replace("\t", " \u21e5 ")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def scan_conll(
    path: str | Path,
    types: Iterable[str] | None = None,
    first_section: str | None = None,
    min_type_share: float = 0.02,
) -> ScanResult:
    """Scan ``path`` leniently; raises :class:`~adaptlab.errors.DataError` only for a missing,
    unreadable or empty file (content problems become :class:`Problem` entries)."""
    path = Path(path)
    lines = read_text_lines(path)
    raw_tags: Counter = Counter()
    for line in lines:
        match = LAST_FIELD.match(line.strip())
        if match and TAG_LIKE.match(match.group(3)):
            raw_tags[match.group(3)] += 1
    known = set(types) if types is not None else set(infer_types(raw_tags, min_type_share))
    glued = re.compile(r"^(.*[a-z0-9.,;:)'\]])(" + "|".join(["O"] + [
        f"[BI]-{re.escape(t)}" for t in sorted(known, key=len, reverse=True)]) + r")$")

    problems: list[Problem] = []
    sequences: list[Sequence] = []
    headers: list[tuple[int, str]] = []
    section, current = first_section, []
    counted_tags: Counter = Counter()

    def flush() -> None:
        if current:
            sequences.append(Sequence(list(current), section, len(sequences)))
            current.clear()

    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("-DOCSTART-"):
            flush()
            continue
        if _is_header(stripped, known):
            flush()
            headers.append((lineno, stripped))
            section = _section_name(stripped)
            problems.append(Problem("section_header", lineno, _excerpt(stripped)))
            continue
        if INVISIBLE.search(stripped):
            problems.append(Problem("invisible_char", lineno, repr(stripped[:40])))
            stripped = INVISIBLE.sub("", stripped).strip()
            if not stripped:
                continue
        fields = stripped.split()
        match = LAST_FIELD.match(stripped)
        if len(fields) == 1 or not TAG_LIKE.match(fields[-1]):
            glue = glued.match(stripped) if len(fields) == 1 else None
            if glue:
                problems.append(Problem("glued_tag", lineno, _excerpt(stripped)))
                current.append(Entry(glue.group(1), glue.group(2), lineno))
                counted_tags[glue.group(2)] += 1
            else:
                problems.append(Problem("missing_tag", lineno, _excerpt(stripped)))
                current.extend(Entry(w, None, lineno, k > 0) for k, w in enumerate(fields))
            if len(fields) > 1:
                problems.append(Problem("multiword_line", lineno, _excerpt(stripped)))
            continue
        words, tag = fields[:-1], fields[-1]
        if "\t" not in match.group(2):
            problems.append(Problem("space_separator", lineno, _excerpt(stripped)))
        if len(words) > 1:
            problems.append(Problem("multiword_line", lineno, _excerpt(stripped)))
        kind, _ = classify_tag(tag, known)
        if kind == "bare":
            problems.append(Problem("bare_type", lineno, _excerpt(stripped)))
        elif kind in ("stray", "bracketed", "truncated"):
            problems.append(Problem("stray_tag", lineno, _excerpt(stripped)))
        counted_tags[tag] += 1
        current.extend(Entry(w, tag, lineno, k > 0) for k, w in enumerate(words))
    flush()
    problems.extend(_iob_problems(sequences, known))
    problems.sort(key=lambda p: p.line)
    return ScanResult(path, sequences, problems, tuple(sorted(known)), counted_tags, headers)


def _iob_problems(sequences: list[Sequence], types: set[str]) -> list[Problem]:
    """``I-X`` that does not continue an ``X`` span: after an outside tag (``O``, ``(O)``, no tag,
    stray) or at the start (``i_after_o``), or after another type (``i_type_change``)."""
    problems = []
    for seq in sequences:
        previous: str | None = None
        for entry in seq.entries:
            kind, tag = classify_tag(entry.tag, types)
            if kind == "bare" and tag is not None:
                previous = tag
                continue
            prefix, typ = split_tag(tag) if tag else (None, None)
            if prefix == "I" and typ and not entry.continued:
                if previous is None:
                    problems.append(Problem("i_after_o", entry.line, f"{entry.word} {entry.tag}"))
                elif previous != typ:
                    problems.append(Problem("i_type_change", entry.line, f"{entry.word} {entry.tag}"))
            previous = typ
    return problems


def decode_tags(seq: Sequence, types: Iterable[str], fired: Counter, max_gap: int = 2,
                relation_verbs: Collection[str] = ()) -> list[str]:
    """One valid IOB2 tag per entry of ``seq`` (rules 5-12 of :mod:`adaptlab.data.repair`);
    ``fired`` counts the rules applied (per line, not per word of a multi-word line). A bridged gap
    never crosses a clause end, nor one of ``relation_verbs`` (the schema's clause verbs, if any)."""
    entries, types = seq.entries, set(types)
    tags: list[str] = []
    for k, entry in enumerate(entries):
        kind, tag = classify_tag(entry.tag, types)
        first = not entry.continued
        rule = DECODE_RULES.get(kind)
        if rule:
            fired[rule] += first
        if kind == "missing":
            tag = OUTSIDE
            if core(entry.word) and tags and tags[-1] != OUTSIDE and (
                    k + 1 == len(entries) or ends_clause(entry.word)):
                tag = "I-" + tags[-1][2:]  # "tree/I-BREEDING cavities." closes the span
        elif kind == "bare":
            tag = ("I-" if _gap_start(tags, entries, k, tag, max_gap, relation_verbs) is not None else "B-") + tag
        elif entry.continued and tag.startswith("B-"):
            tag = "I-" + tag[2:]
        prefix, typ = split_tag(tag)
        if prefix == "I" and not (tags and tags[-1] != OUTSIDE and tags[-1][2:] == typ):
            gap = _gap_start(tags, entries, k, typ, max_gap, relation_verbs)
            if gap is not None:
                tags[gap:k] = ["I-" + typ] * (k - gap)
                fired["bridge_gap"] += 1
            else:
                fired["i_type_change_to_b" if tags and tags[-1] != OUTSIDE else "i_after_o_to_b"] += 1
                tag = "B-" + typ
        tags.append(tag)
    return tags


def _gap_start(tags: list[str], entries: list[Entry], k: int, typ: str, max_gap: int,
               relation_verbs: Collection[str]) -> int | None:
    """Where an ``O`` gap before token ``k`` starts when an ``X = typ`` span ends right before it,
    the gap is 1 to ``max_gap`` tokens and crosses no clause end or relation verb; ``k`` itself
    when ``k`` directly follows such a span; otherwise None."""
    j = k - 1
    while j >= 0 and tags[j] == OUTSIDE and k - j <= max_gap:
        if ends_clause(entries[j].word) or core(entries[j].word) in relation_verbs:
            return None
        j -= 1
    if j >= 0 and tags[j] != OUTSIDE and tags[j][2:] == typ:
        return j + 1
    return None
