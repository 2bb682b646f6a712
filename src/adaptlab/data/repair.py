"""Deterministic repair of messy CoNLL/BIO files into canonical records.

Every rule has a name; :class:`RepairReport` counts how often each fired, so a user can see what
was changed and judge it. The rules move, close, join or retype spans the annotator gave; the only
labels they add are the words a displaced span lost (rules 14, 16-18) and the word of a line that
had no tag. What cannot be repaired is listed with ``file:line`` and dropped (or kept with
``drop_unrepairable=False``), never silently.

Line rules (:mod:`adaptlab.data.conll_scan` reads the lines and decodes the tags):

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
    follow an ``X`` span in the same clause (no ``;``/``.`` and, with a clause grammar, no relation
    verb in between) fills the gap with ``I-X``: the ``I-`` says the
    annotator meant to continue the span and skipped a word (``wetlands and/O freshwater/I``).
11. ``i_after_o_to_b``: any other ``I-X`` after ``O`` opens a span (``B-X``).
12. ``i_type_change_to_b``: ``I-X`` right after a ``Y`` span opens an ``X`` span.

The line rules (1-12, 22) apply to any file. The clause rules (13-21) and the unrepairable checks
apply only with a :class:`~adaptlab.data.boundary.ClauseGrammar`, built from a schema whose relations
name their verbs (``adaptlab data convert --preset biospecies`` or ``--schema FILE``): they encode how
one dataset writes its sentences, which other data does not share.

Clause rules (clauses from :func:`adaptlab.data.boundary.split_clauses`; the subject is the
mention of the grammar's subject type before the verb (SPECIES in the biospecies preset), the object
the mention after it, whose type the verb fixes (``feed on`` -> FEEDING)):

13. ``verb_out_of_span``: the relation verb and its adverb (``live``, ``feed mainly``) are never
    part of an entity; they leave the span they were tagged in (``Schelly/B live/I``).
14. ``shift_subject_span``: a subject span that starts 1-2 tokens before its clause
    (``system;/B-SPECIES Alabama/I-SPECIES``) is moved to the clause start, keeping its length, and
    the previous object gets back the words the shift took (``... Atlantic Oceans;``); one that
    starts 1-2 tokens late gets its start moved to the clause start.
15. ``clean_subject``: another type inside the subject is removed (``, a carnivorous/B-FEEDING
    insect,``), or joins the subject span when it is the subject's last word; an adverb right
    before the verb leaves the span (``Vendace primarily/I-SPECIES feed``).
16. ``complete_subject``: a subject span that stops one word before the verb (``New Zealand|kaka``)
    is extended to the verb.
17. ``shift_object_span``: an object tagged from the preposition to the clause's last word but one
    (``feed on/B small/I organisms/O``) is moved one token right.
18. ``extend_span_to_clause_end``: a span left with one untagged word before its clause end, or
    ending on a function word or comma with at most two, is extended to the clause end (or joined
    to the next span of its type); the clause end is inside the object in 95% of clauses.
19. ``trim_dangling_word``: trailing function words that could not be extended leave the span.
20. ``close_parenthesis``: a subject span that ends inside ``( ... )`` is extended to the ``)``
    when that is at most 3 untagged tokens away.
21. ``retype_object_by_verb``: an object span whose type contradicts the verb (HABITAT after
    ``feed on``) takes the verb's type when at most half of the clause's objects disagree.
22. ``remove_duplicate``: a sequence identical (words and raw tags) to an earlier one is removed.

Unrepairable (listed with file:line; dropped unless ``drop_unrepairable=False``): a clause with
subject-type tags after its verb or two or more other-type tags before it (``garbled_clause``), and a
clause object in three or more pieces covering under 60% of its words (``fragmented_clause``).
With ``clause_records`` only the bad clauses are dropped, not their whole sequence.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.data import boundary
from adaptlab.data.boundary import Clause, ClauseGrammar, core, ends_clause, split_clauses
from adaptlab.data.conll_scan import ScanResult, decode_tags, scan_conll
from adaptlab.data.formats.conll import tokens_to_record
from adaptlab.data.records import Record
from adaptlab.errors import ConfigError

FUNCTION_WORDS = frozenset(
    "and or of the a an in on to with for at from by as including such that which where".split()
)
RULES = [
    "skip_section_header", "strip_invisible_chars", "unglue_tag", "split_multiword_line",
    "fill_missing_tag", "unbracket_tag", "expand_truncated_type", "stray_type_to_o", "bare_type_to_iob",
    "bridge_gap", "i_after_o_to_b", "i_type_change_to_b", "verb_out_of_span", "shift_subject_span",
    "clean_subject", "complete_subject", "shift_object_span", "extend_span_to_clause_end",
    "trim_dangling_word", "close_parenthesis", "retype_object_by_verb", "remove_duplicate",
]
SCAN_RULES = {"section_header": "skip_section_header", "invisible_char": "strip_invisible_chars",
              "glued_tag": "unglue_tag", "multiword_line": "split_multiword_line"}


class RuleLog(Counter):
    """Rule counts plus ``(rule, token index)`` events, so checks can point at file lines."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, int]] = []

    def hit(self, rule: str, index: int, n: int = 1) -> None:
        self[rule] += n
        self.events.append((rule, index))


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
    records_dropped: int = 0
    conventions: Counter = field(default_factory=Counter)
    normalisation: Counter = field(default_factory=Counter)
    span_changes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sequences_in": self.sequences_in,
            "duplicates_removed": len(self.duplicates),
            "unrepairable": len(self.unrepairable),
            "records_dropped": self.records_dropped,
            "records_out": self.records_out,
            "tokens": {"in": self.tokens_in, "out": self.tokens_out,
                       "in_duplicates": self.tokens_in_duplicates, "in_dropped": self.tokens_in_dropped},
            "rules": {name: self.rules[name] for name in RULES},
            "clause_conventions": dict(self.conventions),
            "normalisation": dict(self.normalisation),
            "unrepairable_items": self.unrepairable,
            "duplicate_items": self.duplicates,
            "span_changes": self.span_changes,
        }


def span_changes(words: list[str], before: list[str], after: list[str], events: list[tuple[str, int]],
                 line_of: Any) -> list[dict[str, Any]]:
    """Every span rules 13-21 removed, changed or added in one sequence, each with the rule that fired
    at (or nearest to) it and ``line_of(token index)``.

    A removed span and an added span over the same words are one change of type (``retyped``), and over
    overlapping words with the same type one change of boundaries (``changed``).
    """
    old = {tuple(span) for span in _spans(before)}
    new = {tuple(span) for span in _spans(after)}
    removed, added = sorted(old - new), sorted(new - old)
    def text(span: tuple) -> str:
        return f"{' '.join(words[span[0]:span[1]])} [{span[2]}]"

    rule_events = [(rule, index) for rule, index in events if rule in RULES]

    def rule_at(span: tuple) -> str:
        inside = [rule for rule, index in rule_events if span[0] <= index < span[1]]
        if inside or not rule_events:
            return inside[0] if inside else "(none)"
        return min(rule_events, key=lambda event: min(abs(event[1] - span[0]), abs(event[1] - span[1] + 1)))[0]

    changes = []
    for span in removed:
        partner = next((a for a in added if a[:2] == span[:2]), None)
        change = "retyped"
        if partner is None:
            partner = next((a for a in added if a[2] == span[2] and a[0] < span[1] and span[0] < a[1]), None)
            change = "changed" if partner else "removed"
        if partner is not None:
            added.remove(partner)
        changes.append({"where": line_of(span[0]), "change": change, "rule": rule_at(span), "before": text(span),
                        "after": text(partner) if partner else None})
    changes += [{"where": line_of(span[0]), "change": "added", "rule": rule_at(span), "before": None,
                 "after": text(span)} for span in added]
    return changes


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


def _subject_rules(words: list[str], tags: list[str], clauses: list[Clause], log: RuleLog,
                   grammar: ClauseGrammar) -> list[str]:
    """Rules 13-16."""
    n, species = len(words), grammar.subject_type
    for clause in clauses:  # 13
        trigger = range(clause.verb, clause.prep if clause.prep is not None else clause.verb + 1)
        spans = _spans(tags)
        for span in spans:
            if any(span[0] <= t < span[1] for t in trigger):
                log.hit("verb_out_of_span", clause.verb)
                if span[0] >= clause.verb:
                    span[0] = trigger[-1] + 1
                else:
                    span[1] = min(span[1], clause.verb)
        tags = _to_tags(n, spans)
    for k, clause in enumerate(clauses):  # 14
        spans = _spans(tags)
        subject = next(
            (s for s in spans if s[2] == species and s[1] > clause.start - 2 and s[0] < clause.verb), None)
        if clause.verb == clause.start or subject is None or not 0 < abs(subject[0] - clause.start) <= 2:
            continue
        shift, length = clause.start - subject[0], subject[1] - subject[0]
        # Early (it took the previous clause's last words): moved, its end is early too.
        # Late: only the start is; the end already sits at the name's last word or its "(".
        end = clause.start + length if shift > 0 else subject[1]
        subject[0], subject[1] = clause.start, min(end, clause.verb)
        log.hit("shift_subject_span", clause.start)
        before = [s for s in spans if s[1] <= clause.start - shift and s is not subject]
        if shift > 0 and k > 0 and before and before[-1][0] > clauses[k - 1].verb \
                and clause.start - before[-1][1] <= shift + 1:
            before[-1][1] = clause.start
            log.hit("extend_span_to_clause_end", clause.start - 1)
        tags = _to_tags(n, spans)
    for clause in clauses:  # 15-16
        spans = _spans(tags)
        subject = next((s for s in spans if s[2] == species and clause.start <= s[0] < clause.verb), None)
        for span in spans:
            if span[2] == species or not (clause.start <= span[0] and span[1] <= clause.verb):
                continue
            if subject is not None and span[0] == subject[1] and span[1] == clause.verb:
                subject[1], span[1] = span[1], span[0]
            else:
                span[1] = span[0]
            log.hit("clean_subject", span[0])
        while subject is not None and subject[1] - subject[0] > 1 and subject[1] == clause.verb \
                and grammar.is_adverb(words[subject[1] - 1]):
            subject[1] -= 1
            log.hit("clean_subject", subject[1])
        rest = list(range(subject[1], clause.verb)) if subject is not None else []
        head = words[rest[0]] if len(rest) == 1 else ""
        if core(head) and tags[rest[0]] == "O" and not set("()") & set(head) and not grammar.is_adverb(head):
            subject[1] = clause.verb
            log.hit("complete_subject", rest[0])
        tags = _to_tags(n, spans)
    return tags


def _object_rules(words: list[str], tags: list[str], clauses: list[Clause], log: RuleLog,
                  subject_type: str) -> list[str]:
    """Rules 17-21."""
    n = len(words)
    for clause in clauses:  # 17
        spans = _spans(tags)
        objects = [s for s in spans if clause.verb < s[0] < clause.end]
        if clause.prep is None or len(objects) != 1 or objects[0][0] != clause.prep:
            continue
        rest = [j for j in range(objects[0][1], clause.end) if core(words[j])]
        if len(rest) == 1 and rest[0] == objects[0][1]:
            objects[0][0], objects[0][1] = objects[0][0] + 1, objects[0][1] + 1
            log.hit("shift_object_span", clause.prep)
            tags = _to_tags(n, spans)
    for clause in clauses:  # 18-19
        spans = _spans(tags)
        objects = [s for s in spans if clause.verb < s[0] < clause.end]
        for i, span in enumerate(objects):
            last = words[span[1] - 1]
            following = objects[i + 1] if i + 1 < len(objects) else None
            limit = following[0] if following else clause.end
            gap = [j for j in range(span[1], limit) if core(words[j])]
            joins = following is None or (following[2] == span[2] and core(last) in FUNCTION_WORDS)
            dangling = (core(last) in FUNCTION_WORDS or last.endswith(",")) and joins \
                and (1 if following is None else 0) <= len(gap) <= 2
            if dangling or (following is None and len(gap) == 1 and span[2] == clause.object_type):
                end = limit
                while following is None and end > span[1] and not core(words[end - 1]):
                    end -= 1  # a lone ";" or "." closing the clause stays outside
                log.hit("extend_span_to_clause_end", span[1])
                span[1] = end
                if following is not None:
                    span[1], following[0] = following[1], following[1]
            while span[1] - span[0] > 1 and core(words[span[1] - 1]) in FUNCTION_WORDS:
                span[1] -= 1
                log.hit("trim_dangling_word", span[1])
        tags = _to_tags(n, spans)
    for clause in clauses:  # 20
        spans = _spans(tags)
        for span in spans:
            opened = " ".join(words[span[0]:span[1]])
            if not clause.start <= span[1] - 1 < clause.verb or opened.count("(") <= opened.count(")"):
                continue
            close = next((j for j in range(span[1], min(span[1] + 3, clause.verb)) if ")" in words[j]), None)
            if close is not None and all(tags[j] == "O" for j in range(span[1], close + 1)):
                log.hit("close_parenthesis", span[1] - 1)
                span[1] = close + 1
        tags = _to_tags(n, spans)
    for clause in clauses:  # 21
        spans = _spans(tags)
        objects = [s for s in spans
                   if clause.object_start <= s[0] < clause.end and s[2] != subject_type]
        wrong = [s for s in objects if s[2] != clause.object_type]
        if wrong and 2 * len(wrong) <= len(objects) or wrong and len(wrong) == len(objects):
            for span in wrong:
                log.hit("retype_object_by_verb", span[0])
                span[2] = clause.object_type
        tags = _to_tags(n, spans)
    return tags


def repair_clauses(words: list[str], tags: list[str], log: RuleLog,
                   grammar: ClauseGrammar | None) -> tuple[list[str], list[Clause]]:
    """Rules 13-21 on one decoded sequence; returns the new tags and its clauses (none, and the tags
    unchanged, without a grammar)."""
    if grammar is None:
        return tags, []
    clauses = split_clauses(words, grammar, tags)
    tags = _subject_rules(words, tags, clauses, log, grammar)
    return _object_rules(words, tags, clauses, log, grammar.subject_type), clauses


def check_grammar_types(grammar: ClauseGrammar | None, scan: ScanResult) -> None:
    """A ConfigError when the grammar's types are not the file's: its rules would retype spans to labels the file
    does not use (another dataset's schema, or ``--types`` that leave some out)."""
    missing = sorted(grammar.entity_types - set(scan.types)) if grammar is not None else []
    if missing:
        raise ConfigError(f"{scan.path}: the schema's types {', '.join(missing)} are not tag types of this file "
                          f"({', '.join(scan.types) or 'none'}); its clause rules would write labels the file does "
                          "not use: check --preset/--schema (or --types)")


def structure_problems(words: list[str], tags: list[str], clauses: list[Clause],
                       subject_type: str) -> list[tuple[str, int]]:
    """``(kind, clause index)`` for clauses the rules cannot fix: garbled or fragmented."""
    found = []
    for k, clause in enumerate(clauses):
        subject, obj = tags[clause.start:clause.verb], tags[clause.object_start:clause.end]
        object_words = words[clause.object_start:clause.end]
        stop = next((i + 1 for i, w in enumerate(object_words) if ends_clause(w)), len(obj))
        species_after = sum(1 for t in obj[:stop] if t[2:] == subject_type)
        wrong_subject = sum(1 for t in subject if t != "O" and t[2:] != subject_type)
        if species_after or wrong_subject >= 2:
            found.append(("garbled_clause", k))
            continue
        content = [t for w, t in zip(words[clause.object_start:clause.end], obj) if core(w)]
        pieces = sum(1 for t in obj if t.startswith("B-"))
        if pieces >= 3 and content and sum(t != "O" for t in content) / len(content) < 0.6:
            found.append(("fragmented_clause", k))
    return found


def repair_scan(
    scan: ScanResult,
    normalise: bool = False,
    drop_unrepairable: bool = True,
    clause_records: bool = False,
    max_gap: int = 2,
    grammar: ClauseGrammar | None = None,
) -> tuple[list[Record], RepairReport]:
    """Repair an already scanned file (see :func:`repair_file`)."""
    if clause_records and grammar is None:
        raise ConfigError("one record per clause needs the clauses of a schema: give a schema whose relations "
                          "name their verbs, or a preset (adaptlab data convert --preset biospecies)")
    check_grammar_types(grammar, scan)
    verbs = grammar.verbs if grammar is not None else ()
    report = RepairReport(str(scan.path), sequences_in=len(scan.sequences), tokens_in=scan.n_tokens)
    report.rules.update(SCAN_RULES[p.kind] for p in scan.problems if p.kind in SCAN_RULES)
    seen: dict[tuple, int] = {}
    records: list[Record] = []
    action = "dropped" if drop_unrepairable else "kept"
    for seq in scan.sequences:
        where = f"{scan.path}:{seq.first_line}"
        if seq.key() in seen:
            report.rules["remove_duplicate"] += 1
            report.duplicates.append(f"{where} duplicates line {seen[seq.key()]}")
            report.tokens_in_duplicates += len(seq.entries)
            continue
        seen[seq.key()] = seq.first_line
        log, words = RuleLog(), seq.words
        decoded = decode_tags(seq, scan.types, log, max_gap, verbs)
        tags, clauses = repair_clauses(words, decoded, log, grammar)
        report.rules.update(log)
        report.span_changes += span_changes(words, decoded, tags, log.events,
                                            lambda index, seq=seq: f"{scan.path}:{seq.entries[index].line}")
        conventions = [boundary.preposition_convention(c, tags, grammar.subject_type) for c in clauses]
        report.conventions.update(conventions)
        issues = structure_problems(words, tags, clauses, grammar.subject_type) if clauses else []
        for kind, k in issues:
            start = clauses[k].start
            report.unrepairable.append({
                "kind": kind, "where": f"{scan.path}:{seq.entries[start].line}", "sequence": where,
                "excerpt": " ".join(words[start:start + 8]), "action": action})
        bad = {k for _, k in issues} if drop_unrepairable else set()
        meta = {"id": f"{scan.path.stem}-L{seq.first_line}", "source": where, "section": seq.section,
                "lines": [seq.first_line, seq.entries[-1].line], "conventions": conventions,
                "repairs": sorted(rule for rule, n in log.items() if n)}
        if clause_records and len(clauses) > 1:
            for k, clause in enumerate(clauses):
                start = 0 if k == 0 else clause.start
                if k in bad:
                    report.tokens_in_dropped += clause.end - start
                    report.records_dropped += 1
                    continue
                part = {**meta, "id": f"{meta['id']}-c{k + 1}", "clause": k + 1,
                        "source": f"{scan.path}:{seq.entries[start].line}",
                        "conventions": conventions[k:k + 1]}
                records.append(tokens_to_record(words[start:clause.end], tags[start:clause.end], part))
        elif bad:
            report.tokens_in_dropped += len(words)
            report.records_dropped += 1
        else:
            records.append(tokens_to_record(words, tags, meta))
    if normalise:
        records, report.normalisation = boundary.normalise_boundaries(records, grammar)
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
    grammar: ClauseGrammar | None = None,
) -> tuple[list[Record], RepairReport]:
    """Scan and repair a CoNLL-like file into canonical records (one per sequence, or one per
    clause with ``clause_records``) with the numbered rules of this module; with
    ``normalise_boundaries`` the records are then rewritten to the single convention of
    :mod:`adaptlab.data.boundary`. ``types`` fixes the tag set (inferred when None);
    ``first_section`` names the sequences before the first section header. ``grammar`` turns on
    the clause rules (13-21) and checks; without it only the line rules apply.
    """
    scan = scan_conll(path, types=types, first_section=first_section)
    return repair_scan(scan, normalise_boundaries, drop_unrepairable, clause_records, max_gap, grammar)
