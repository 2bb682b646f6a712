"""record_problems (every problem kind) and NearDuplicateFilter (formula, threshold, index vs brute force)."""

from __future__ import annotations

import random

import pytest

from adaptlab.data.records import Record, Relation, Span
from adaptlab.synth.schema import Schema
from adaptlab.synth.validate import (
    DUPLICATE_RELATION,
    EMPTY_SPAN,
    EMPTY_TEXT,
    OVERLAPPING_SPANS,
    PROBLEM_KINDS,
    RELATION_ARGUMENT_MISSING,
    RELATION_TYPE_MISMATCH,
    SELF_RELATION,
    SPAN_OUTSIDE_TEXT,
    UNKNOWN_ENTITY_LABEL,
    UNKNOWN_RELATION_LABEL,
    UNTRIMMED_SPAN,
    NearDuplicateFilter,
    Problem,
    jaccard_similarity,
    record_problems,
    word_shingles,
)

SCHEMA = Schema.model_validate({
    "subject": "SPECIES",
    "entities": [{"name": "SPECIES"}, {"name": "HABITAT"}],
    "relations": [{"name": "live_in", "head": "SPECIES", "tail": "HABITAT"}],
})
TEXT = "Frogs live in ponds and toads live in ponds."


def record(spans=(), relations=(), text=TEXT) -> Record:
    return Record(text, [Span(*s) for s in spans], [Relation(*r) for r in relations])


def kinds(rec: Record, schema: Schema = SCHEMA) -> list[str]:
    return [p.kind for p in record_problems(rec, schema)]


CLEAN = record(
    spans=[(0, 5, "SPECIES"), (14, 19, "HABITAT"), (24, 29, "SPECIES"), (38, 43, "HABITAT")],
    relations=[(0, 1, "live_in"), (2, 3, "live_in")],
)


def test_clean_record_has_no_problems():
    assert record_problems(CLEAN, SCHEMA) == []
    assert record_problems(record(), SCHEMA) == []  # a sentence without entities is fine


def test_problem_string_and_kinds_are_stable():
    assert str(Problem(EMPTY_TEXT)) == "empty text"
    assert str(Problem(EMPTY_SPAN, "span 0 [3, 3]")) == "empty span: span 0 [3, 3]"
    assert len(set(PROBLEM_KINDS)) == len(PROBLEM_KINDS) == 11
    with pytest.raises(AttributeError):
        Problem(EMPTY_TEXT).kind = "x"  # type: ignore[misc]


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text(text):
    assert kinds(record(text=text)) == [EMPTY_TEXT]


def test_unknown_entity_label_lists_the_schema():
    problems = record_problems(record(spans=[(14, 19, "HABITATS")]), SCHEMA)
    assert [str(p) for p in problems] == ["unknown entity label: 'HABITATS' (schema: SPECIES, HABITAT)"]


@pytest.mark.parametrize("span", [(-1, 5, "SPECIES"), (40, 45, "SPECIES"), (50, 60, "SPECIES")])
def test_span_outside_text(span):
    problems = record_problems(record(spans=[span]), SCHEMA)
    assert [p.kind for p in problems] == [SPAN_OUTSIDE_TEXT]
    assert f"(text length {len(TEXT)})" in problems[0].detail


@pytest.mark.parametrize("span", [(3, 3, "SPECIES"), (5, 2, "SPECIES")])
def test_empty_span(span):
    assert kinds(record(spans=[span])) == [EMPTY_SPAN]


def test_untrimmed_span():
    problems = record_problems(record(spans=[(0, 6, "SPECIES")]), SCHEMA)
    assert [p.kind for p in problems] == [UNTRIMMED_SPAN]
    assert str(problems[0]) == "untrimmed span: span 0 [0, 6] 'Frogs ' starts or ends with whitespace"


def test_overlapping_spans_name_both_texts():
    problems = record_problems(record(spans=[(0, 5, "SPECIES"), (0, 10, "SPECIES")]), SCHEMA)
    assert [str(p) for p in problems] == ["overlapping spans: 'Frogs' [0, 5] and 'Frogs live' [0, 10]"]


def test_identical_spans_overlap():
    assert kinds(record(spans=[(0, 5, "SPECIES"), (0, 5, "HABITAT")])) == [OVERLAPPING_SPANS]


def test_long_span_overlapping_several_reports_every_pair():
    spans = [(0, 19, "SPECIES"), (0, 5, "SPECIES"), (14, 19, "HABITAT"), (24, 29, "SPECIES")]
    problems = record_problems(record(spans=spans), SCHEMA)
    assert [p.kind for p in problems] == [OVERLAPPING_SPANS, OVERLAPPING_SPANS]
    assert "'Frogs live in ponds' [0, 19] and 'ponds' [14, 19]" in problems[1].detail


def test_touching_spans_do_not_overlap():
    assert kinds(record(spans=[(0, 5, "SPECIES"), (5, 10, "HABITAT")], text="FrogsPonds")) == []


def test_broken_spans_are_not_also_reported_as_overlapping():
    assert kinds(record(spans=[(0, 5, "SPECIES"), (3, 100, "SPECIES"), (4, 2, "SPECIES")])) == [
        SPAN_OUTSIDE_TEXT, EMPTY_SPAN
    ]


def test_unknown_relation_label():
    rec = record(spans=[(0, 5, "SPECIES"), (14, 19, "HABITAT")], relations=[(0, 1, "lives_in")])
    assert [str(p) for p in record_problems(rec, SCHEMA)] == ["unknown relation label: 'lives_in' (schema: live_in)"]


def test_unknown_relation_label_when_schema_has_none():
    schema = Schema.model_validate({"subject": "SPECIES", "entities": [{"name": "SPECIES"}, {"name": "HABITAT"}]})
    rec = record(spans=[(0, 5, "SPECIES"), (14, 19, "HABITAT")], relations=[(0, 1, "live_in")])
    assert [str(p) for p in record_problems(rec, schema)] == [
        "unknown relation label: 'live_in' (schema: none declared)"
    ]


@pytest.mark.parametrize(
    "relation, missing", [((0, 2, "live_in"), "tail index 2"), ((-1, 1, "live_in"), "head index -1")]
)
def test_relation_argument_missing(relation, missing):
    rec = record(spans=[(0, 5, "SPECIES"), (14, 19, "HABITAT")], relations=[relation])
    problems = record_problems(rec, SCHEMA)
    assert [p.kind for p in problems] == [RELATION_ARGUMENT_MISSING]
    assert problems[0].detail == f"relation 0 'live_in': {missing} (there are 2 spans)"


def test_both_arguments_missing_and_unknown_label_are_both_reported():
    problems = record_problems(record(relations=[(3, 4, "eats")]), SCHEMA)
    assert [p.kind for p in problems] == [RELATION_ARGUMENT_MISSING, UNKNOWN_RELATION_LABEL]
    assert "head index 3, tail index 4 (there are 0 spans)" in problems[0].detail


def test_relation_type_mismatch_reversed():
    rec = record(spans=[(0, 5, "SPECIES"), (14, 19, "HABITAT")], relations=[(1, 0, "live_in")])
    assert [str(p) for p in record_problems(rec, SCHEMA)] == [
        "relation type mismatch: live_in needs SPECIES -> HABITAT, got HABITAT -> SPECIES"
    ]


def test_relation_type_mismatch_same_type():
    rec = record(spans=[(0, 5, "SPECIES"), (24, 29, "SPECIES")], relations=[(0, 1, "live_in")])
    assert kinds(rec) == [RELATION_TYPE_MISMATCH]


def test_self_relation():
    rec = record(spans=[(0, 5, "SPECIES")], relations=[(0, 0, "live_in")])
    assert kinds(rec) == [SELF_RELATION, RELATION_TYPE_MISMATCH]


def test_duplicate_relation():
    rec = record(spans=[(0, 5, "SPECIES"), (14, 19, "HABITAT")], relations=[(0, 1, "live_in"), (0, 1, "live_in")])
    assert [str(p) for p in record_problems(rec, SCHEMA)] == [
        "duplicate relation: relation 1 repeats relation 0 [0, 1, 'live_in']"
    ]


def test_every_problem_is_listed_in_order():
    rec = record(
        spans=[(0, 5, "ANIMAL"), (0, 10, "SPECIES"), (14, 14, "HABITAT")],
        relations=[(0, 5, "live_in"), (1, 0, "likes"), (1, 0, "likes")],
    )
    assert kinds(rec) == [
        UNKNOWN_ENTITY_LABEL, EMPTY_SPAN, OVERLAPPING_SPANS,
        RELATION_ARGUMENT_MISSING, UNKNOWN_RELATION_LABEL, UNKNOWN_RELATION_LABEL, DUPLICATE_RELATION,
    ]


# --- near-duplicates -----------------------------------------------------------------------------

def long_sentence(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"w{rng.randrange(10**6)}" for _ in range(n)]


def test_shingles():
    assert word_shingles("The frog, the FROG!") == {("the", "frog", "the"), ("frog", "the", "frog")}
    assert word_shingles("Frogs croak.") == {("frogs",), ("croak",)}
    assert word_shingles("...") == frozenset()


def test_jaccard_formula():
    # shingles {abc, bcd, cde} vs {abc, bcd, cdf}: 2 shared of 4
    assert jaccard_similarity("a b c d e", "a b c d f") == pytest.approx(0.5)
    assert jaccard_similarity("Frogs croak.", "frogs CROAK") == 1.0
    assert jaccard_similarity("Frogs croak", "Frogs croak loudly") == 0.0  # word set vs 3-grams
    assert jaccard_similarity("", "") == 1.0
    assert jaccard_similarity("", "frog") == 0.0


def test_one_word_changed_in_long_sentence_matches_formula():
    words = long_sentence(70)
    changed = words.copy()
    changed[35] = "different"
    assert jaccard_similarity(" ".join(words), " ".join(changed)) == pytest.approx((70 - 5) / (70 + 1))


def test_exact_and_case_punctuation_variants_are_duplicates():
    seen = NearDuplicateFilter()
    assert seen.check_and_add("Green sea turtles nest on sandy beaches.") is None
    assert seen.check_and_add("Green sea turtles nest on sandy beaches.") == 0
    assert seen.check_and_add("green SEA turtles, nest on sandy beaches!!") == 0
    assert seen.check_and_add("  Green   sea turtles nest on sandy beaches ") == 0
    assert len(seen) == 1


def test_short_texts_compare_word_sets_and_exact_duplicates_always_match():
    seen = NearDuplicateFilter(threshold=1.0)
    assert seen.check_and_add("Frogs croak.") is None
    assert seen.check_and_add("croak frogs") == 0  # same word set: J = 1
    assert seen.check_and_add("...") is None
    assert seen.check_and_add("?!") == 1  # no words at all: equal normalised texts
    assert seen.check_and_add("Frogs croak loudly.") is None


def test_one_word_changed_in_long_sentence_is_a_near_duplicate():
    words = long_sentence(70)
    seen = NearDuplicateFilter(threshold=0.9)
    assert seen.check_and_add(" ".join(words)) is None
    changed = words.copy()
    changed[35] = "different"
    assert seen.check_and_add(" ".join(changed)) == 0


def test_one_word_changed_in_short_sentence_is_not_at_090():
    seen = NearDuplicateFilter(threshold=0.9)
    assert seen.check_and_add("Green sea turtles nest on sandy beaches in the warm summer.") is None
    assert seen.check_and_add("Green sea turtles nest on rocky beaches in the warm summer.") is None
    assert len(seen) == 2


def test_different_sentences_are_kept():
    seen = NearDuplicateFilter()
    for i, text in enumerate([
        "Frogs live in ponds.", "Sea turtles nest on sandy beaches.", "Eagles build nests on cliffs.",
        "Frogs live in small ponds near forests.",
    ]):
        assert seen.check_and_add(text) is None
        assert len(seen) == i + 1


def test_threshold_is_inclusive():
    # J("a b c d e", "a b c d f") is exactly 0.5
    assert NearDuplicateFilter(0.5).check_and_add("a b c d e") is None
    at_half = NearDuplicateFilter(0.5)
    at_half.check_and_add("a b c d e")
    assert at_half.check_and_add("a b c d f") == 0
    above = NearDuplicateFilter(0.51)
    above.check_and_add("a b c d e")
    assert above.check_and_add("a b c d f") is None


def test_returns_most_similar_earlier_text_ties_to_earliest():
    seen = NearDuplicateFilter(0.3)
    assert seen.check_and_add("a b c d e f g") is None  # 5 shingles
    assert seen.check_and_add("a b c d x y z") is None  # J = 2/8 with text 0
    assert seen.check_and_add("a b c d x y q") == 1  # J = 3/7 with text 1, 2/8 with text 0
    twins = NearDuplicateFilter(0.3)
    twins.check_and_add("p a b c d q")
    twins.check_and_add("r a b c d s")
    assert twins.check_and_add("t a b c d u") == 0  # equally similar to both


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_threshold_must_be_in_range(threshold):
    with pytest.raises(ValueError, match="threshold"):
        NearDuplicateFilter(threshold)


def brute_force(texts: list[str], threshold: float) -> list[int | None]:
    """Compare every text with every accepted one: the definition, without an index."""
    def shingles(text: str) -> set[tuple[str, ...]]:
        words = "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()
        return {tuple(words[i : i + 3]) for i in range(len(words) - 2)} if len(words) >= 3 else {(w,) for w in words}

    accepted: list[tuple[list[str], set]] = []
    decisions = []
    for text in texts:
        words = "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()
        exact = next((i for i, (w, _) in enumerate(accepted) if w == words), None)
        if exact is not None:
            decisions.append(exact)
            continue
        mine = shingles(text)
        scores = [(len(mine & theirs) / len(mine | theirs), -i) for i, (_, theirs) in enumerate(accepted)
                  if mine | theirs]
        best = max(scores, default=None)
        if best is not None and best[0] >= threshold:
            decisions.append(-best[1])
        else:
            accepted.append((words, mine))
            decisions.append(None)
    return decisions


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9])
def test_inverted_index_agrees_with_brute_force(threshold):
    rng = random.Random(13)
    vocab = [f"word{i}" for i in range(40)]
    texts: list[str] = []
    for _ in range(1000):
        if texts and rng.random() < 0.4:
            words = rng.choice(texts).split()
            for _ in range(rng.randrange(0, 3)):
                words[rng.randrange(len(words))] = rng.choice(vocab)
            if rng.random() < 0.3:
                words[0] = words[0].upper() + ","
            text = " ".join(words)
        else:
            text = " ".join(rng.choice(vocab) for _ in range(rng.randrange(1, 16)))
        texts.append(text)
    seen = NearDuplicateFilter(threshold)
    got = [seen.check_and_add(text) for text in texts]
    expected = brute_force(texts, threshold)
    assert got == expected
    rejected = sum(d is not None for d in got)
    assert 100 < rejected < 900  # the sample exercises both outcomes
