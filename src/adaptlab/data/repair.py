"""Deterministic repair of messy CoNLL/BIO files into canonical records.

Every rule has a name; :class:`RepairReport` counts how often each fired, so a user can see what
was changed and judge it. Rules only move, close or fill labels the annotator already gave; they
never add an entity where the annotation has none. What cannot be repaired is listed with
``file:line`` and dropped (or kept with ``drop_unrepairable=False``), never silently.

Line rules (the scanner, :mod:`adaptlab.data.conll_scan`, reads every line):

1. ``skip_section_header``: ``TWO: List of endangered Arthropods`` lines are removed; the section
   name goes to ``meta["section"]`` of the records that follow.
2. ``strip_invisible_chars``: zero-width characters are removed from words.
3. ``unglue_tag``: ``whereO`` becomes the word ``where`` with tag ``O``.
4. ``split_multiword_line``: ``Papua New Guinea<TAB>I-HABITAT`` becomes one token per word; the
   later words continue the span (``B-X`` -> ``I-X``).
5. ``fill_missing_tag``: a word without a tag gets ``I-X`` when it closes its clause right after
   an ``X`` span (``tree/I-BREEDING cavities.``), otherwise ``O``; punctuation alone gets ``O``.
6. ``unbracket_tag``: ``(O)`` -> ``O``.
7. ``expand_truncated_type``: ``I-B`` -> ``I-BREEDING`` when ``B`` starts exactly one known type.
8. ``stray_type_to_o``: a tag whose type is not in the tag set (``B-VERB``) -> ``O``.
9. ``bare_type_to_iob``: bare ``SPECIES`` tokens become ``B-``/``I-``; a run of one type is one
   span, and a run that resumes after a short gap continues it (rule 10).
10. ``bridge_gap``: ``I-X`` (or a resumed bare ``X``) after at most ``max_gap`` ``O`` tokens that
    follow an ``X`` span in the same clause fills the gap with ``I-X``: the ``I-`` says the
    annotator meant to continue the span and skipped a word (``wetlands and/O freshwater/I``).
11. ``i_after_o_to_b``: any other ``I-X`` after ``O`` opens a span (``B-X``).
12. ``i_type_change_to_b``: ``I-X`` right after a ``Y`` span opens an ``X`` span.

Clause rules (clauses from :func:`adaptlab.data.boundary.split_clauses`):

13. ``verb_out_of_span``: the relation verb and its adverb (``live``, ``feed mainly``) are never
    part of an entity: removed from the span they were tagged in.
14. ``shift_subject_span``: a SPECIES span that starts 1-2 tokens before its clause
    (``system;/B-SPECIES Alabama/I-SPECIES``) or after it is moved to start at the clause, keeping
    its length; these are the tags shifted by one token around clause boundaries.
15. ``extend_span_to_clause_end``: a span that ends on a function word or comma with only 1-2
    untagged words left in its clause is extended to the clause end (``Indian and|Atlantic Oceans;``
    is what a shift leaves behind).
16. ``trim_dangling_word``: otherwise trailing function words (``and``, ``of``, ``the``) leave
    the span.
17. ``close_parenthesis``: a span that ends inside ``( ... )`` is extended to the ``)`` when that is
    at most 3 untagged tokens away in the subject.
18. ``retype_object_by_verb``: an object span whose type contradicts the verb (HABITAT after
    ``feed on``) takes the verb's type, when the clause's other object tags agree with the verb or
    there are none.
19. ``remove_duplicate``: a sequence identical (words and raw tags) to an earlier one is removed.

Unrepairable (listed with file:line; dropped unless ``drop_unrepairable=False``): a clause with
SPECIES tags after its verb or other types before it (``garbled_clause``), and a clause object in
three or more pieces that cover less than 60% of it (``fragmented_clause``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.data import boundary
from adaptlab.data.boundary import Clause, core, ends_clause, split_clauses
from adaptlab.data.conll_scan import ScanResult, Sequence, classify_tag, scan_conll
from adaptlab.data.formats.conll import split_tag, tokens_to_record
from adaptlab.data.records import Record

FUNCTION_WORDS = frozenset(
    "and or of the a an in on to with for at from by as including such that which where".split()
)
RULES = [
    "skip_section_header", "strip_invisible_chars", "unglue_tag", "split_multiword_line",
    "fill_missing_tag", "unbracket_tag", "expand_truncated_type", "stray_type_to_o", "bare_type_to_iob",
    "bridge_gap", "i_after_o_to_b", "i_type_change_to_b", "verb_out_of_span", "shift_subject_span",
    "extend_span_to_clause_end", "trim_dangling_word", "close_parenthesis", "retype_object_by_verb",
    "remove_duplicate",
]
SCAN_RULES = {"section_header": "skip_section_header", "invisible_char": "strip_invisible_chars",
              "glued_tag": "unglue_tag", "multiword_line": "split_multiword_line"}


@dataclass
class RepairReport:
    """What :func:`repair_file` did: rules fired, what it could not repair, counts in and out."""

    path: str
    rules: Counter = field(default_factory=Counter)
    unrepairable: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    sequences_in: int = 0
    records_out: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_in_duplicates: int = 0
    tokens_in_dropped: int = 0
    conventions: Counter = field(default_factory=Counter)
    normalisation: Counter = field(default_factory=Counter)

    @property
    def dropped(self) -> int:
        return len({u["where"] for u in self.unrepairable if u["action"] == "dropped"})

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sequences_in": self.sequences_in,
            "duplicates_removed": len(self.duplicates),
            "dropped_unrepairable": self.dropped,
            "records_out": self.records_out,
            "tokens": {"in": self.tokens_in, "out": self.tokens_out, "in_duplicates": self.tokens_in_duplicates,
                       "in_dropped": self.tokens_in_dropped},
            "rules": {name: self.rules[name] for name in RULES},
            "unrepairable": self.unrepairable,
            "duplicates": self.duplicates,
            "clause_conventions": dict(self.conventions),
            "normalisation": dict(self.normalisation),
        }


def decode_sequence(seq: Sequence, types: tuple[str, ...], fired: Counter, max_gap: int = 2) -> list[str]:
    """Rules 4-12: one valid IOB2 tag per entry of ``seq``."""
    entries = seq.entries
    tags: list[str] = []
    for k, entry in enumerate(entries):
        kind, tag = classify_tag(entry.tag, types)
        fired.update({"bracketed": ["unbracket_tag"], "truncated": ["expand_truncated_type"],
                      "stray": ["stray_type_to_o"]}.get(kind, []))
        if kind == "missing":
            tag = "O"
            if core(entry.word) and tags and tags[-1] != "O" and (
                    k + 1 == len(entries) or ends_clause(entry.word)):
                tag = "I-" + tags[-1][2:]
            fired["fill_missing_tag"] += not entry.continued
        elif kind == "bare":
            fired["bare_type_to_iob"] += 1
            tag = "I-" + tag if _gap_start(tags, entries, k, tag, max_gap) is not None else "B-" + tag
        elif entry.continued and tag.startswith("B-"):
            tag = "I-" + tag[2:]
        prefix, typ = split_tag(tag)
        if prefix == "I" and not (tags and tags[-1] != "O" and tags[-1][2:] == typ):
            gap = _gap_start(tags, entries, k, typ, max_gap)
            if gap is not None and gap < k:
                tags[gap:k] = ["I-" + typ] * (k - gap)
                fired["bridge_gap"] += 1
            elif gap is None:
                fired["i_type_change_to_b" if tags and tags[-1] != "O" else "i_after_o_to_b"] += kind != "bare"
                tag = "B-" + typ
        tags.append(tag)
    return tags


def _gap_start(tags: list[str], entries, k: int, typ: str, max_gap: int) -> int | None:
    """Index where an ``O`` gap before ``k`` starts when an ``X=typ`` span ends right before it,
    the gap is at most ``max_gap`` tokens and crosses no clause end or relation verb."""
    j = k - 1
    while j >= 0 and tags[j] == "O" and k - j <= max_gap:
        word = entries[j].word
        if ends_clause(word) or core(word) in boundary.RELATION_VERBS:
            return None
        j -= 1
    if j >= 0 and tags[j] != "O" and tags[j][2:] == typ:
        return j + 1
    return None


def _spans(tags: list[str]) -> list[list]:
    """Mutable ``[start, end, type]`` spans of valid IOB2 tags."""
    spans: list[list] = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            spans.append([i, i + 1, tag[2:]])
        elif tag.startswith("I-") and spans and spans[-1][1] == i:
            spans[-1][1] = i + 1
    return spans


def _to_tags(n: int, spans: list[list]) -> list[str]:
    tags = ["O"] * n
    for start, end, typ in sorted(spans):
        if end > start:
            tags[start:end] = ["B-" + typ] + ["I-" + typ] * (end - start - 1)
    return tags


def repair_clauses(words: list[str], tags: list[str], fired: Counter) -> tuple[list[str], list[Clause]]:
    """Rules 13-18 on one decoded sequence; returns the new tags and the clauses."""
    clauses = split_clauses(words, tags)
    n = len(words)
    for clause in clauses:  # 13: verb (and adverb) out of any span
        trigger = range(clause.verb, clause.prep if clause.prep is not None else clause.verb + 1)
        spans = _spans(tags)
        for span in spans:
            if any(span[0] <= t < span[1] for t in trigger):
                fired["verb_out_of_span"] += 1
                if span[0] >= clause.verb:
                    span[0] = trigger[-1] + 1
                else:
                    span[1] = min(span[1], clause.verb)
        tags = _to_tags(n, spans)
    for k, clause in enumerate(clauses):  # 14: subject span shifted around the clause start
        spans = _spans(tags)
        if clause.verb - clause.start == 0:
            continue
        subject = next((s for s in spans if s[2] == boundary.SUBJECT_TYPE and s[1] > clause.start - 2
                        and s[0] < clause.verb), None)
        if subject is None or subject[0] == clause.start or abs(subject[0] - clause.start) > 2:
            continue
        length = subject[1] - subject[0]
        subject[0], subject[1] = clause.start, min(clause.start + length, clause.verb)
        fired["shift_subject_span"] += 1
        tags = _to_tags(n, spans)
    for k, clause in enumerate(clauses):  # 15-16: dangling span ends
        spans = _spans(tags)
        inside = [s for s in spans if clause.object_start <= s[0] < clause.end]
        if not inside:
            continue
        last = inside[-1]
        rest = [j for j in range(last[1], clause.end) if core(words[j])]
        dangling = core(words[last[1] - 1]) in FUNCTION_WORDS or words[last[1] - 1].endswith(",")
        if dangling and 1 <= len(rest) <= 2 and all(tags[j] == "O" for j in range(last[1], clause.end)):
            end = clause.end
            while end > last[1] and not core(words[end - 1]):
                end -= 1  # a lone ";" or "." closing the clause stays outside
            last[1] = end
            fired["extend_span_to_clause_end"] += 1
        while last[1] - last[0] > 1 and core(words[last[1] - 1]) in FUNCTION_WORDS and words[
                last[1] - 1][-1:].isalnum() is not False:
            last[1] -= 1
            fired["trim_dangling_word"] += 1
        tags = _to_tags(n, spans)
    for clause in clauses:  # 17: close a parenthesis opened inside a subject span
        spans = _spans(tags)
        for span in spans:
            opened = " ".join(words[span[0]:span[1]])
            if not clause.start <= span[1] - 1 < clause.verb or opened.count("(") <= opened.count(")"):
                continue
            close = next((j for j in range(span[1], min(span[1] + 3, clause.verb)) if ")" in words[j]), None)
            if close is not None and all(tags[j] == "O" for j in range(span[1], close + 1)):
                span[1] = close + 1
                fired["close_parenthesis"] += 1
        tags = _to_tags(n, spans)
    for clause in clauses:  # 18: object type from the verb
        spans = _spans(tags)
        objects = [s for s in spans if clause.object_start <= s[0] < clause.end and s[2] != boundary.SUBJECT_TYPE]
        wrong = [s for s in objects if s[2] != clause.object_type]
        if wrong and len(wrong) * 2 >= len(objects) - len(wrong) and len(objects) - len(wrong) <= len(wrong):
            if all(s[2] == wrong[0][2] for s in wrong) or len(objects) == len(wrong):
                for s in wrong:
                    s[2] = clause.object_type
                fired["retype_object_by_verb"] += len(wrong)
        tags = _to_tags(n, spans)
    return tags, clauses


def structure_problems(words: list[str], tags: list[str], clauses: list[Clause]) -> list[tuple[str, int]]:
    """``(kind, token index)`` for clauses that rules cannot fix: garbled or fragmented."""
    found = []
    for clause in clauses:
        subject = tags[clause.start:clause.verb]
        obj = tags[clause.object_start:clause.end]
        wrong_subject = sum(1 for t in subject if t != "O" and t[2:] != boundary.SUBJECT_TYPE)
        species_after = sum(1 for t in obj if t[2:] == boundary.SUBJECT_TYPE)
        if species_after or wrong_subject >= 2:
            found.append(("garbled_clause", clause.start))
            continue
        pieces = sum(1 for t in obj if t.startswith("B-"))
        content = [t for w, t in zip(words[clause.object_start:clause.end], obj) if core(w)]
        covered = sum(1 for t in content if t != "O")
        if pieces >= 3 and content and covered / len(content) < 0.6:
            found.append(("fragmented_clause", clause.start))
    return found


def repair_scan(
    scan: ScanResult,
    normalise: bool = False,
    drop_unrepairable: bool = True,
    clause_records: bool = False,
    max_gap: int = 2,
) -> tuple[list[Record], RepairReport]:
    """Repair an already scanned file (see :func:`repair_file`)."""
    report = RepairReport(str(scan.path), sequences_in=len(scan.sequences), tokens_in=scan.n_tokens)
    for problem in scan.problems:
        if problem.kind in SCAN_RULES:
            report.rules[SCAN_RULES[problem.kind]] += 1
    stem, seen = scan.path.stem, {}
    records: list[Record] = []
    for seq in scan.sequences:
        where = f"{scan.path}:{seq.first_line}"
        if seq.key() in seen:
            report.rules["remove_duplicate"] += 1
            report.duplicates.append(f"{where} duplicates {scan.path}:{seen[seq.key()]}")
            report.tokens_in_duplicates += len(seq.entries)
            continue
        seen[seq.key()] = seq.first_line
        fired: Counter = Counter()
        words = seq.words
        tags = decode_sequence(seq, scan.types, fired, max_gap)
        tags, clauses = repair_clauses(words, tags, fired)
        report.rules.update(fired)
        conventions = [boundary.preposition_convention(c, tags) for c in clauses]
        report.conventions.update(conventions)
        issues = structure_problems(words, tags, clauses)
        action = "dropped" if issues and drop_unrepairable else "kept"
        for kind, index in issues:
            report.unrepairable.append({"kind": kind, "where": where, "line": seq.entries[index].line,
                                        "excerpt": " ".join(words[index:index + 8]), "action": action})
        if action == "dropped":
            report.tokens_in_dropped += len(words)
            continue
        meta = {"id": f"{stem}-L{seq.first_line}", "source": where, "section": seq.section,
                "lines": [seq.first_line, seq.entries[-1].line], "conventions": conventions,
                "repairs": sorted(fired)}
        if clause_records and len(clauses) > 1:
            for k, clause in enumerate(clauses):
                start = 0 if k == 0 else clause.start
                part = {**meta, "id": f"{meta['id']}-c{k + 1}", "source": f"{scan.path}:{seq.entries[start].line}",
                        "conventions": conventions[k:k + 1], "clause": k + 1}
                records.append(tokens_to_record(words[start:clause.end], tags[start:clause.end], part))
        else:
            records.append(tokens_to_record(words, tags, meta))
    if normalise:
        records, report.normalisation = boundary.normalise_boundaries(records)
    report.records_out = len(records)
    report.tokens_out = sum(len(r.text.split(" ")) for r in records)
    return records, report


def repair_file(
    path: str | Path,
    normalise_boundaries: bool = False,
    types: list[str] | None = None,
    first_section: str | None = None,
    drop_unrepairable: bool = True,
    clause_records: bool = False,
    max_gap: int = 2,
) -> tuple[list[Record], RepairReport]:
    """Scan and repair a CoNLL-like file into canonical records (one per sequence, or one per
    clause with ``clause_records``), applying the numbered rules of this module; with
    ``normalise_boundaries`` the records are then rewritten to the convention of
    :mod:`adaptlab.data.boundary`. ``first_section`` names the sequences before the first header.
    """
    scan = scan_conll(path, types=types, first_section=first_section)
    return repair_scan(scan, normalise_boundaries, drop_unrepairable, clause_records, max_gap)
