"""extract_json: plain, fenced, prose-wrapped, repaired and broken teacher answers."""

from __future__ import annotations

import pytest

from adaptlab.teacher.jsonparse import JSONExtractionError, extract_json


def reason(text: str, expect=None) -> str:
    with pytest.raises(JSONExtractionError) as info:
        extract_json(text, expect)
    return str(info.value)


# --- strict parsing ------------------------------------------------------------------------------

def test_plain_object_and_array():
    assert extract_json('{"a": 1, "b": [true, null]}') == {"a": 1, "b": [True, None]}
    assert extract_json("  [1, 2, 3]\n") == [1, 2, 3]


def test_plain_scalar_documents_are_values():
    assert extract_json("42") == 42
    assert extract_json('"hi"', expect=str) == "hi"


def test_error_is_a_value_error():
    assert issubclass(JSONExtractionError, ValueError)


def test_prose_before_and_after():
    text = 'Sure! Here is the annotation:\n{"text": "Frogs live in ponds.", "n": 2}\nLet me know if you need more.'
    assert extract_json(text, expect=dict) == {"text": "Frogs live in ponds.", "n": 2}


def test_fenced_block():
    text = 'Answer:\n```json\n{"entities": [["frog", "SPECIES"]]}\n```\nDone.'
    assert extract_json(text) == {"entities": [["frog", "SPECIES"]]}


def test_fence_without_language_tag():
    assert extract_json('```\n[{"a": 1}]\n```') == [{"a": 1}]


def test_first_fenced_block_that_parses_is_preferred():
    text = 'Draft:\n```json\n{"a": 1 "oops"}\n```\nFinal:\n```json\n{"a": 2}\n```\n```json\n{"a": 3}\n```'
    assert extract_json(text) == {"a": 2}


def test_fenced_block_preferred_over_earlier_prose_json():
    text = 'Schema {"type": "object"} is respected.\n```json\n{"answer": 1}\n```'
    assert extract_json(text, expect=dict) == {"answer": 1}


def test_stray_array_in_prose_is_skipped_when_expecting_object():
    text = 'See note [1] and [2, 3]. The result: {"ok": true}'
    assert extract_json(text, expect=dict) == {"ok": True}
    assert extract_json(text) == [1]  # without `expect`, the first value wins


def test_expect_tuple():
    assert extract_json('Result: [1] then {"a": 1}', expect=(dict, list)) == [1]
    assert extract_json('"x" then {"a": 1}', expect=(dict, list)) == {"a": 1}


def test_brackets_that_cannot_start_json_are_skipped():
    text = "Options [A] or {B}; then [see below] {x}: " + '{"a": [1]}'
    assert extract_json(text, expect=dict) == {"a": [1]}


def test_braces_inside_strings_do_not_confuse_the_scan():
    text = 'prefix {"code": "if (x) { y[0] = \\"}\\" }", "n": 1} suffix'
    assert extract_json(text) == {"code": 'if (x) { y[0] = "}" }', "n": 1}


def test_nested_values_of_a_parsed_value_are_not_candidates():
    assert reason('[{"a": 1}, {"a": 2}]', expect=dict) == "expected an object, got a list"


def test_bool_does_not_count_as_int_unless_asked():
    assert reason("true", expect=int) == "expected an integer, got a boolean"
    assert extract_json("true", expect=(int, bool)) is True


def test_unicode_and_surrogates_round_trip():
    assert extract_json('Voilà: {"text": "Les grenouilles 🐸 vivent à Orléans", "e": "\\u00e9"}') == {
        "text": "Les grenouilles 🐸 vivent à Orléans", "e": "é"
    }


# --- repairs -------------------------------------------------------------------------------------

def test_trailing_commas_are_repaired():
    assert extract_json('{"a": [1, 2,], "b": {"c": 3,},}') == {"a": [1, 2], "b": {"c": 3}}
    assert extract_json('[1,\n  2,\n]') == [1, 2]


def test_repair_does_not_touch_commas_inside_strings():
    assert extract_json('{"s": "a, ]", "t": [1,],}') == {"s": "a, ]", "t": [1]}


def test_smart_quotes_around_keys_and_strings():
    assert extract_json("{“species”: “frog”, “n”: 2}") == {"species": "frog", "n": 2}


def test_plain_quote_inside_smart_quoted_string_is_escaped():
    assert extract_json('{“quote”: “he said "hi"”}') == {"quote": 'he said "hi"'}


def test_smart_quotes_inside_a_normal_string_are_kept():
    assert extract_json('{"s": "he said “hi”"}') == {"s": "he said “hi”"}
    assert extract_json('{"s": "he said “hi”", "x": [1,]}') == {"s": "he said “hi”", "x": [1]}


def test_python_literals_are_repaired_outside_strings_only():
    text = '{"a": True, "b": False, "c": None, "s": "True or None"}'
    assert extract_json(text) == {"a": True, "b": False, "c": None, "s": "True or None"}
    assert extract_json("[True, None]") == [True, None]


def test_identifiers_containing_literals_are_not_rewritten():
    assert reason('{"a": NoneType}').startswith("invalid JSON")


def test_raw_newline_inside_string_is_allowed_by_repair():
    assert extract_json('{"text": "line one\nline two"}') == {"text": "line one\nline two"}


def test_repairs_combine_in_fenced_block_with_prose():
    text = "Here you go:\n```json\n{“entities”: [[“frog”, “SPECIES”],], “done”: True,}\n```\nThanks"
    assert extract_json(text, expect=dict) == {"entities": [["frog", "SPECIES"]], "done": True}


def test_strict_value_wins_over_later_repairable_one():
    assert extract_json('[1, 2,] and then [3]') == [3]


def test_never_evaluates_code():
    assert reason("__import__('os').system('echo hacked')") == "no JSON object or array found"
    assert reason("{'a': 1}").startswith("invalid JSON")  # single quotes are not repaired


# --- failures ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_response(text):
    assert reason(text) == "empty response"


def test_no_json_at_all():
    assert reason("I could not find any species in that text.") == "no JSON object or array found"


def test_truncated_object():
    assert reason('Here: {"text": "Frogs live in ponds.", "entities": [["frog", "SPE') == (
        "truncated JSON (unbalanced brackets)"
    )


def test_truncated_list_does_not_yield_its_first_item():
    assert reason('[{"a": 1}, {"a": 2}, {"a": ') == "truncated JSON (unbalanced brackets)"
    assert reason('```json\n[{"a": 1}, {"a": 2}, {"a": \n```', expect=dict) == "truncated JSON (unbalanced brackets)"


def test_truncation_reported_over_wrong_type():
    assert reason('[1] then {"a": [1, 2', expect=dict) == "truncated JSON (unbalanced brackets)"


def test_wrong_type():
    assert reason("[1, 2]", expect=dict) == "expected an object, got a list"
    assert reason('{"a": 1}', expect=list) == "expected a list, got an object"
    assert reason("3", expect=(dict, list)) == "expected an object or a list, got an integer"


def test_wrong_type_after_repair_is_reported_as_wrong_type():
    assert reason("[1, 2,]", expect=dict) == "expected an object, got a list"


def test_invalid_json_names_the_decoder_complaint_and_place():
    message = reason('Result: {"a": 1 "b": 2}')
    assert message.startswith("invalid JSON: Expecting ',' delimiter near ")
    assert '"b": 2' in message


def test_fragments_of_a_broken_value_are_not_returned():
    # the inner list parses on its own, but it is a fragment of the broken object
    assert reason('{"entities": [["frog", "SPECIES"]] "x": 1}').startswith("invalid JSON")


def test_long_answer_is_scanned_quickly():
    items = ", ".join(f'{{"id": {i}, "text": "sentence {i} [x]"}}' for i in range(3000))
    assert len(extract_json(f"Here: [{items}] done", expect=list)) == 3000
    assert reason(f"Here: [{items}") == "truncated JSON (unbalanced brackets)"
