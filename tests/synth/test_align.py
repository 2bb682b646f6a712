"""align_entity_strings: exact and fuzzy matches, word boundaries, repeats, overlaps, Unicode."""

from __future__ import annotations

import pytest

from adaptlab.data.records import Span
from adaptlab.synth.align import (
    EMPTY_ENTITY,
    INSIDE_LONGER_WORD,
    NOT_FOUND,
    Alignment,
    align_entity_strings,
    clean_entity_string,
    normalise_sentence,
)


def spans(sentence: str, entities: list[tuple[str, str]]) -> list[tuple[str, str] | None]:
    """(covered text, method) per entity, None where unaligned; asserts offsets round-trip."""
    out = []
    for alignment in align_entity_strings(sentence, entities):
        if alignment.span is None:
            assert alignment.method is None and alignment.reason
            out.append(None)
        else:
            assert alignment.reason is None
            covered = sentence[alignment.span.start : alignment.span.end]
            out.append((covered, alignment.method))
    return out


def test_exact_match_gives_offsets_label_and_method():
    sentence = "Frogs live in ponds."
    result = align_entity_strings(sentence, [("Frogs", "SPECIES"), ("ponds", "HABITAT")])
    assert result == [
        Alignment("Frogs", "SPECIES", Span(0, 5, "SPECIES"), "exact", None),
        Alignment("ponds", "HABITAT", Span(14, 19, "HABITAT"), "exact", None),
    ]


def test_output_keeps_input_order_and_original_entity_text():
    sentence = "Frogs live in ponds."
    result = align_entity_strings(sentence, [(' "ponds" ', "HABITAT"), ("Frogs", "SPECIES")])
    assert [a.entity_text for a in result] == [' "ponds" ', "Frogs"]
    assert [a.span for a in result] == [Span(14, 19, "HABITAT"), Span(0, 5, "SPECIES")]


def test_alignment_is_frozen():
    alignment = align_entity_strings("Frogs.", [("Frogs", "SPECIES")])[0]
    with pytest.raises(AttributeError):
        alignment.label = "X"  # type: ignore[misc]


@pytest.mark.parametrize(
    "raw, cleaned",
    [(" frog ", "frog"), ('"frog"', "frog"), ("“sea turtle”", "sea turtle"), ("' \"frog\" '", "frog"),
     ("«grenouille»", "grenouille"), ("frog's", "frog's"), ('""', ""), ("  ", "")],
)
def test_clean_entity_string(raw, cleaned):
    assert clean_entity_string(raw) == cleaned


def test_case_difference_is_fuzzy():
    assert spans("Sea turtles nest on beaches.", [("sea turtles", "SPECIES")]) == [("Sea turtles", "fuzzy")]


@pytest.mark.parametrize("gap", ["  ", "\t", "\n", "\u00a0", " \n\t "])
def test_whitespace_inside_sentence_is_fuzzy(gap):
    sentence = f"The green{gap}sea turtle swims."
    assert spans(sentence, [("green sea turtle", "SPECIES")]) == [(f"green{gap}sea turtle", "fuzzy")]


@pytest.mark.parametrize("gap", ["\u00a0", "\t", "\n", "   "])
def test_whitespace_inside_entity_is_fuzzy(gap):
    assert spans("The green sea turtle swims.", [(f"green{gap}sea turtle", "SPECIES")]) == [
        ("green sea turtle", "fuzzy")
    ]


def test_exact_preferred_over_earlier_fuzzy_occurrence():
    assert spans("Frogs eat flies; frogs sleep.", [("frogs", "SPECIES")]) == [("frogs", "exact")]
    result = align_entity_strings("Frogs eat flies; frogs sleep.", [("frogs", "SPECIES")])
    assert result[0].span == Span(17, 22, "SPECIES")


def test_regex_metacharacters_in_entity_are_literal():
    sentence = "The C++ (beta) build and a.b* remain."
    assert spans(sentence, [("C++ (beta)", "X"), ("a.b*", "Y")]) == [("C++ (beta)", "exact"), ("a.b*", "exact")]
    assert spans("The aXb remains.", [("a.b", "X")]) == [None]


def test_not_in_sentence():
    result = align_entity_strings("Frogs live in ponds.", [("toads", "SPECIES")])
    assert result[0] == Alignment("toads", "SPECIES", None, None, NOT_FOUND)


@pytest.mark.parametrize("entity", ["", "   ", '""', "“ ”"])
def test_empty_entity_string(entity):
    assert align_entity_strings("Frogs live.", [(entity, "SPECIES")])[0].reason == EMPTY_ENTITY


# --- word boundaries -----------------------------------------------------------------------------

def test_match_inside_longer_word_is_rejected():
    result = align_entity_strings("The plants grow.", [("ant", "SPECIES")])
    assert result[0].span is None
    assert result[0].reason == INSIDE_LONGER_WORD


def test_prefix_and_suffix_of_words_are_rejected():
    assert align_entity_strings("Antelopes run.", [("Ant", "X")])[0].reason == INSIDE_LONGER_WORD
    assert align_entity_strings("Ponds dry.", [("Pond", "X")])[0].reason == INSIDE_LONGER_WORD


def test_boundary_occurrence_found_after_inner_one():
    assert spans("The plants hide an ant.", [("ant", "SPECIES")]) == [("ant", "exact")]
    result = align_entity_strings("The plants hide an ant.", [("ant", "SPECIES")])
    assert result[0].span == Span(19, 22, "SPECIES")


def test_punctuation_and_sentence_edges_are_boundaries():
    sentence = "ant, (ant) ant-eater ant"
    got = align_entity_strings(sentence, [("ant", "X")] * 5)
    assert [a.span.start if a.span else None for a in got] == [0, 6, 11, 21, None]


def test_entity_edges_that_are_not_word_chars_need_no_boundary():
    # "(beta" starts with "(" so the character before it may be a letter
    assert spans("version(beta) ships", [("(beta)", "X")]) == [("(beta)", "exact")]


def test_accented_letters_count_as_word_characters():
    assert align_entity_strings("Le café ouvre.", [("caf", "X")])[0].reason == INSIDE_LONGER_WORD
    assert spans("Élan et éléphant.", [("éléphant", "SPECIES"), ("Élan", "SPECIES")]) == [
        ("éléphant", "exact"), ("Élan", "exact")
    ]


def test_digits_count_as_word_characters():
    assert align_entity_strings("Route 66a is long.", [("66", "X")])[0].reason == INSIDE_LONGER_WORD


# --- repeats and overlaps ------------------------------------------------------------------------

def test_repeated_string_is_resolved_left_to_right():
    sentence = "The frog chased the frog."
    result = align_entity_strings(sentence, [("frog", "SPECIES"), ("frog", "SPECIES")])
    assert [a.span for a in result] == [Span(4, 8, "SPECIES"), Span(20, 24, "SPECIES")]


def test_repeated_string_with_different_labels():
    sentence = "Paris met Paris in Paris."
    result = align_entity_strings(sentence, [("Paris", "PERSON"), ("Paris", "PERSON"), ("Paris", "CITY")])
    assert [(a.span.start, a.span.label) for a in result] == [(0, "PERSON"), (10, "PERSON"), (19, "CITY")]


def test_more_mentions_than_occurrences():
    sentence = "The frog chased the frog."
    result = align_entity_strings(sentence, [("frog", "SPECIES")] * 3)
    assert [a.span is not None for a in result] == [True, True, False]
    assert result[2].reason == "mentioned 3 times but occurs only 2 times in the sentence"


def test_mentions_are_counted_case_and_whitespace_insensitively():
    sentence = "Sea turtle meets sea turtle."
    result = align_entity_strings(sentence, [("sea turtle", "A"), ("Sea  Turtle", "B"), ("sea turtle", "C")])
    assert [a.span.start if a.span else None for a in result] == [17, 0, None]
    assert result[2].reason == "mentioned 3 times but occurs only 2 times in the sentence"


def test_longer_entity_wins_over_contained_shorter_one_in_either_order():
    sentence = "The sea turtles returned to the sea."
    species, habitat = ("sea turtles", "SPECIES"), ("sea", "HABITAT")
    for entities in ([species, habitat], [habitat, species]):
        by_label = {a.label: a.span for a in align_entity_strings(sentence, entities)}
        assert by_label == {"SPECIES": Span(4, 15, "SPECIES"), "HABITAT": Span(32, 35, "HABITAT")}


def test_shorter_entity_with_no_free_occurrence_names_the_blocker():
    sentence = "Sea turtles are reptiles."
    result = align_entity_strings(sentence, [("sea", "HABITAT"), ("Sea turtles", "SPECIES")])
    assert result[1].span == Span(0, 11, "SPECIES")
    assert result[0].span is None
    assert result[0].reason == "every occurrence overlaps another entity (e.g. 'Sea turtles')"


def test_overlapping_occurrences_of_the_same_string():
    # "New York New York" contains "York New" overlapping both
    sentence = "I love New York New York."
    result = align_entity_strings(sentence, [("New York", "CITY"), ("New York", "CITY"), ("York New", "X")])
    assert [a.span for a in result[:2]] == [Span(7, 15, "CITY"), Span(16, 24, "CITY")]
    assert result[2].reason == "every occurrence overlaps another entity (e.g. 'New York')"


def test_assigned_spans_never_overlap():
    sentence = "green sea turtle and sea turtle and sea"
    entities = [("sea", "H"), ("sea turtle", "S"), ("green sea turtle", "S"), ("turtle", "S"), ("sea", "H")]
    placed = sorted(a.span for a in align_entity_strings(sentence, entities) if a.span is not None)
    assert all(a.end <= b.start for a, b in zip(placed, placed[1:]))
    assert [(s.start, s.end) for s in placed] == [(0, 16), (21, 31), (36, 39)]


# --- Unicode -------------------------------------------------------------------------------------

def test_emoji_before_entity_offsets_are_code_points():
    sentence = "🐸🐢 The 🌊 sea turtle swims."
    result = align_entity_strings(sentence, [("sea turtle", "SPECIES")])
    span = result[0].span
    assert span == Span(9, 19, "SPECIES")  # 🐸 🐢 and 🌊 count one each
    assert sentence[span.start : span.end] == "sea turtle"


def test_combining_accent_in_entity_matches_precomposed_sentence():
    sentence = "Le caf\u00e9 ferme."
    result = align_entity_strings(sentence, [("cafe\u0301", "PLACE")])
    assert result[0].method == "exact"
    assert sentence[result[0].span.start : result[0].span.end] == "caf\u00e9"


def test_decomposed_sentence_is_normalised_first():
    raw = "  Le cafe\u0301 ferme.\n"
    sentence = normalise_sentence(raw)
    assert sentence == "Le caf\u00e9 ferme."
    for entity in ("caf\u00e9", "cafe\u0301"):
        result = align_entity_strings(sentence, [(entity, "PLACE")])
        assert sentence[result[0].span.start : result[0].span.end] == "caf\u00e9"


def test_non_nfc_sentence_is_refused():
    with pytest.raises(ValueError, match="normalise_sentence"):
        align_entity_strings("Le cafe\u0301 ferme.", [("cafe", "PLACE")])


def test_base_letter_does_not_match_before_combining_mark():
    # NFC cannot compose q + U+0301, so the mark stays; "q" must not be found inside "q́"
    sentence = normalise_sentence("the q\u0301 sign")
    assert align_entity_strings(sentence, [("q", "X")])[0].reason == INSIDE_LONGER_WORD


def test_unicode_case_insensitive_fuzzy():
    assert spans("ÉLÉPHANT d'Afrique", [("éléphant", "SPECIES")]) == [("ÉLÉPHANT", "fuzzy")]


def test_non_bmp_characters_inside_the_entity():
    sentence = "The 🐸 frog emoji 🐸 frog"
    result = align_entity_strings(sentence, [("🐸 frog", "X"), ("🐸  frog", "X")])
    assert [a.span for a in result] == [Span(4, 10, "X"), Span(17, 23, "X")]
    assert [a.method for a in result] == ["exact", "fuzzy"]
