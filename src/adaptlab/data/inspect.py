"""Inspect a CoNLL-like file: how many records, tokens and labels, and every problem with examples.

``adaptlab data inspect`` is what a person runs before trusting a file. It reports each problem
kind of :data:`adaptlab.data.conll_scan.PROBLEM_KINDS` with its count and the first examples as
``file:line: excerpt``, so each one can be looked up in an editor. Line problems come from the
scanner; structural ones (shifted tags, verbs inside spans, wrong types, dangling ends) are the
places where a clause rule of :mod:`adaptlab.data.repair` would fire, and ``garbled_clause`` /
``fragmented_clause`` are what those rules could not fix; they are looked for only with a clause
grammar (a schema whose relations name their verbs, e.g. ``--preset biospecies``), since a generic
file has no clause structure to check. Nothing is changed on disk.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptlab.data import boundary
from adaptlab.data.boundary import ClauseGrammar
from adaptlab.data.conll_scan import PROBLEM_KINDS, Problem, decode_tags, scan_conll
from adaptlab.data.formats.conll import tags_to_spans
from adaptlab.data.records import read_text_lines
from adaptlab.data.repair import RuleLog, check_grammar_types, repair_clauses, structure_problems
from adaptlab.errors import DataError

# Which problem a clause rule's firing reveals.
RULE_PROBLEMS = {
    "shift_subject_span": "shifted_tags", "shift_object_span": "shifted_tags",
    "verb_out_of_span": "verb_in_span", "retype_object_by_verb": "type_mismatch_with_verb",
    "extend_span_to_clause_end": "dangling_span_end", "trim_dangling_word": "dangling_span_end",
    "close_parenthesis": "parenthesis_split", "clean_subject": "subject_boundary",
    "complete_subject": "subject_boundary",
}
EDGE_PUNCT = re.compile(r"^[,;:.!?)\]]|[,;:.!?(\[]$")


@dataclass
class InspectReport:
    """Counts and problems of one file; :meth:`to_json` is what ``--json`` prints."""

    path: str
    records: int
    tokens: int
    token_lines: int
    types: tuple[str, ...]
    sections: dict[str, int]
    raw_tags: Counter
    entity_types: Counter
    token_types: Counter
    clauses: int | None  # None: no clause grammar, so no clause checks
    conventions: Counter
    problems: dict[str, list[Problem]] = field(default_factory=dict)
    examples: int = 5

    def problem_counts(self) -> dict[str, int]:
        return {kind: len(self.problems.get(kind, [])) for kind in PROBLEM_KINDS}

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "records": self.records,
            "tokens": self.tokens,
            "token_lines": self.token_lines,
            "types": list(self.types),
            "sections": self.sections,
            "labels": {"entity_types": dict(self.entity_types.most_common()),
                       "token_types": dict(self.token_types.most_common()),
                       "raw_tags": dict(self.raw_tags.most_common())},
            "clauses": self.clauses,
            "clause_conventions": dict(self.conventions),
            "problems": {
                kind: {"count": len(found), "description": PROBLEM_KINDS[kind],
                       "examples": [p.where(self.path) for p in found[: self.examples]]}
                for kind, found in ((k, self.problems.get(k, [])) for k in PROBLEM_KINDS) if found
            },
        }


def _excerpt(words: list[str], tags: list[str], index: int) -> str:
    lo, hi = max(0, index - 2), min(len(words), index + 4)
    return " ".join(f"{w}/{t}" for w, t in zip(words[lo:hi], tags[lo:hi]))


def inspect_file(
    path: str | Path,
    examples: int = 5,
    types: list[str] | None = None,
    first_section: str | None = None,
    grammar: ClauseGrammar | None = None,
) -> InspectReport:
    """Scan ``path`` and collect counts and problems (see the module docstring); clauses and their
    problems only with ``grammar``."""
    first = next((line for line in read_text_lines(path) if line.strip()), "")
    if first.lstrip().startswith(("{", "[")):
        raise DataError("looks like JSON; `adaptlab data inspect` reads CoNLL-like token/tag files "
                        "(convert JSON with `adaptlab data convert` first)", path, 1)
    scan = scan_conll(path, types=types, first_section=first_section)
    check_grammar_types(grammar, scan)
    problems: dict[str, list[Problem]] = defaultdict(list)
    for problem in scan.problems:
        problems[problem.kind].append(problem)
    entity_types: Counter = Counter()
    token_types: Counter = Counter()
    conventions: Counter = Counter()
    sections: Counter = Counter()
    seen: dict[tuple, int] = {}
    n_clauses = 0
    for seq in scan.sequences:
        sections[seq.section or "(none)"] += 1
        lines = [e.line for e in seq.entries]
        if seq.key() in seen:
            same = f"same words and tags as line {seen[seq.key()]}"
            problems["duplicate_sequence"].append(Problem("duplicate_sequence", seq.first_line, same))
        seen.setdefault(seq.key(), seq.first_line)
        words = seq.words
        tags = decode_tags(seq, scan.types, Counter(), relation_verbs=grammar.verbs if grammar else ())
        for start, end, typ in tags_to_spans(tags):
            entity_types[typ] += 1
            token_types[typ] += end - start
            if EDGE_PUNCT.search(words[start]) or EDGE_PUNCT.search(words[end - 1]):
                problems["punctuation_in_span"].append(
                    Problem("punctuation_in_span", lines[start], " ".join(words[start:end])[:60]))
        if grammar is None:
            continue
        clauses = boundary.split_clauses(words, grammar, tags)
        n_clauses += len(clauses)
        if not clauses:
            start = " ".join(words[:8])
            problems["no_relation_verb"].append(Problem("no_relation_verb", seq.first_line, start))
        for clause in clauses:
            convention = boundary.preposition_convention(clause, tags, grammar.subject_type)
            conventions[convention] += 1
            if convention == "inside":
                problems["preposition_in_span"].append(
                    Problem("preposition_in_span", lines[clause.prep], _excerpt(words, tags, clause.prep)))
        log = RuleLog()
        repaired, clauses = repair_clauses(words, tags, log, grammar)
        for rule, index in log.events:
            kind = RULE_PROBLEMS[rule]
            problems[kind].append(Problem(kind, lines[index], _excerpt(words, tags, index)))
        for kind, k in structure_problems(words, repaired, clauses, grammar.subject_type):
            start = clauses[k].start
            problems[kind].append(Problem(kind, lines[start], _excerpt(words, tags, start)))
    for found in problems.values():
        found.sort(key=lambda p: p.line)
    return InspectReport(
        path=str(scan.path), records=len(scan.sequences), tokens=scan.n_tokens,
        token_lines=len({e.line for s in scan.sequences for e in s.entries}), types=scan.types,
        sections=dict(sections), raw_tags=scan.raw_tags, entity_types=entity_types, token_types=token_types,
        clauses=n_clauses if grammar is not None else None, conventions=conventions, problems=dict(problems),
        examples=examples,
    )
