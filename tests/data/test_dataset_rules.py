"""One dataset's rules stay out of the generic layers: ``data convert`` and ``data inspect`` run only the line
repairs unless a schema names its clause verbs (``--preset biospecies`` or ``--schema FILE``), and the preset
reproduces the released biospecies repair exactly (pinned counts)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml
from test_inspect_repair import MESSY, TYPES

from adaptlab import example_configs
from adaptlab.data.boundary import record_words_tags
from adaptlab.data.records import read_records
from adaptlab.data.repair import RULES, repair_file
from adaptlab.errors import ConfigError
from adaptlab.synth.schema import Schema, preset_schema, resolve_schema

LINE_RULES = RULES[:12] + ["remove_duplicate"]
CLAUSE_RULES = RULES[12:21]
# A file of another domain whose sentences happen to use the biospecies verbs ("live in", "lives in").
PEOPLE = ("Anna\tB-PERSON\nBerg\tI-PERSON\nlive\tI-PERSON\nin\tO\nold\tB-CITY\nParis\tI-CITY\n;\tO\n"
          "Anna\tB-PERSON\nBerg\tI-PERSON\nwork\tO\nat\tO\nthe\tO\nLouvre\tCITY\n.\t(O)\n\n"
          "Tom\tB-PERSON\nlives\tO\nin\tO\nRome\tB-CITY\nand\tO\nNaples\tI-CITY\n")
PEOPLE_SCHEMA = {"schema": {"subject": "PERSON", "entities": [{"name": "PERSON"}, {"name": "CITY"}],
                            "relations": [{"name": "lives_in", "head": "PERSON", "tail": "CITY",
                                           "verbs": ["live", "lives"]}]}}


@pytest.fixture
def people(tmp_path):
    path = tmp_path / "people.conll"
    path.write_text(PEOPLE, encoding="utf-8")
    return path


def spans_of(record) -> list[tuple[str, str]]:
    return [(record.span_text(s), s.label) for s in record.spans]


def tag_counts(records) -> dict[str, int]:
    return dict(sorted(Counter(t for r in records for t in record_words_tags(r)[2]).items()))


def convert(run_cli, source, target, *args) -> tuple[int, str, str]:
    return run_cli("data", "convert", source, "--output", target, *args)


# ---------------------------------------------------------------- generic by default


def test_without_a_schema_only_the_line_repairs_run(people, run_cli, tmp_path):
    records, report = repair_file(people, types=["PERSON", "CITY"])
    fired = {rule: n for rule, n in report.rules.items() if n}
    assert fired == {"unbracket_tag": 1, "bare_type_to_iob": 1, "bridge_gap": 1}  # (O), bare CITY, "and/O Naples/I"
    assert not set(fired) & set(CLAUSE_RULES) and report.unrepairable == [] and report.conventions == Counter()
    assert spans_of(records[0]) == [("Anna Berg live", "PERSON"), ("old Paris", "CITY"), ("Anna Berg", "PERSON"),
                                    ("Louvre", "CITY")]  # "live" stays where the annotator put it
    assert spans_of(records[1]) == [("Tom", "PERSON"), ("Rome and Naples", "CITY")]
    code, out, err = convert(run_cli, people, tmp_path / "out.jsonl", "--types", "PERSON,CITY")
    assert code == 0, err
    assert "clause rules: off (no schema; --preset NAME or --schema FILE turns them on)" in " ".join(out.split())
    assert [spans_of(r) for r in read_records(tmp_path / "out.jsonl")] == [spans_of(r) for r in records]


def test_the_schema_of_the_data_turns_its_clause_rules_on(people, run_cli, tmp_path):
    """The same rules, driven by another schema's verbs and types: the verb leaves the PERSON span, CITY stays CITY."""
    schema = tmp_path / "people.yaml"
    schema.write_text(yaml.safe_dump(PEOPLE_SCHEMA))
    grammar = resolve_schema(schema).clause_grammar()
    assert grammar.subject_type == "PERSON" and dict(grammar.verbs) == {"live": ("lives_in", "CITY"),
                                                                      "lives": ("lives_in", "CITY")}
    records, report = repair_file(people, types=["PERSON", "CITY"], grammar=grammar)
    assert report.rules["verb_out_of_span"] == 1 and report.conventions == Counter({"outside": 2})
    assert spans_of(records[0])[0] == ("Anna Berg", "PERSON")
    code, out, err = convert(run_cli, people, tmp_path / "out.jsonl", "--types", "PERSON,CITY", "--schema", schema)
    assert code == 0, err
    assert "verb_out_of_span changed Anna Berg live [PERSON] -> Anna Berg [PERSON]" in " ".join(out.split())


def test_another_datasets_preset_is_refused_before_it_relabels_the_file(people, run_cli, tmp_path):
    """The biospecies rules on this file would drop every PERSON and retype CITY to HABITAT: a one-line error."""
    target = tmp_path / "out.jsonl"
    code, out, err = convert(run_cli, people, target, "--types", "PERSON,CITY", "--preset", "biospecies")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in out + err
    assert "the schema's types BREEDING, FEEDING, HABITAT, SPECIES are not tag types of this file (CITY, PERSON)" \
        in " ".join(err.split())
    assert not target.exists()
    code, _, err = run_cli("data", "inspect", people, "--preset", "biospecies")
    assert code == 2 and "are not tag types of this file" in " ".join(err.split())


def test_inspect_checks_clauses_only_with_a_schema(people, run_cli):
    code, out, err = run_cli("data", "inspect", people, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["clauses"] is None and data["clause_conventions"] == {}
    assert set(data["problems"]) == {"stray_tag", "bare_type", "i_after_o"}  # no clause kinds, no no_relation_verb
    code, out, _ = run_cli("data", "inspect", people)
    assert code == 0 and "clause rules: off" in out


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("command", ["convert", "inspect"])
def test_an_unknown_preset_is_one_line_with_exit_2(people, run_cli, tmp_path, command):
    extra = ["--output", tmp_path / "out.jsonl"] if command == "convert" else []
    code, out, err = run_cli("data", command, people, *extra, "--preset", "biospecie")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in out + err
    assert "unknown preset 'biospecie'; known presets: biospecies" in err
    assert not (tmp_path / "out.jsonl").exists()


def test_schema_options_that_cannot_give_clause_rules_are_refused(people, run_cli, tmp_path):
    target = tmp_path / "out.jsonl"
    no_verbs = tmp_path / "no_verbs.yaml"
    no_verbs.write_text(yaml.safe_dump({"schema": {**PEOPLE_SCHEMA["schema"], "relations": [
        {"name": "lives_in", "head": "PERSON", "tail": "CITY"}]}}))
    cases = [
        (["--preset", "biospecies", "--schema", no_verbs], "--preset and --schema both name a schema; give one"),
        (["--schema", no_verbs], "no relation names its verbs"),
        (["--schema", tmp_path / "missing.yaml"], "is neither a preset (biospecies) nor a file"),
        (["--clauses"], "one record per clause needs the clauses of a schema"),
    ]
    for args, message in cases:
        code, out, err = convert(run_cli, people, target, "--types", "PERSON,CITY", *args)
        assert code == 2 and message in " ".join(err.split()) and "Traceback" not in out + err, args
        assert not target.exists()


def test_schema_verbs_are_checked():
    base = {"subject": "PERSON", "entities": [{"name": "PERSON"}, {"name": "CITY"}]}
    twice = [{"name": "lives_in", "head": "PERSON", "tail": "CITY", "verbs": ["live"]},
             {"name": "moved_to", "head": "PERSON", "tail": "CITY", "verbs": ["Live"]}]
    with pytest.raises(ValueError, match=r"verbs \['live'\] are given to more than one relation"):
        Schema.model_validate({**base, "relations": twice})
    not_subject = [{"name": "has", "head": "CITY", "tail": "PERSON", "verbs": ["has"]}]
    with pytest.raises(ValueError, match="has verbs but its head 'CITY' is not the subject 'PERSON'"):
        Schema.model_validate({**base, "relations": not_subject})
    assert Schema.model_validate(base).clause_grammar() is None
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        preset_schema("nope")


# ---------------------------------------------------------------- biospecies results do not change


def test_the_shipped_config_schema_repairs_as_the_preset(run_cli, tmp_path):
    """A schema file (the synth_biospecies config) and the preset give the same bytes on a biospecies-style file."""
    messy = tmp_path / "messy.txt"
    messy.write_text("\n\n".join("\n".join(block) for block in MESSY) + "\n", encoding="utf-8")
    outputs = {}
    for name, args in {"preset": ["--preset", "biospecies"],
                       "schema": ["--schema", example_configs.path("synth_biospecies")], "generic": []}.items():
        code, _, err = convert(run_cli, messy, tmp_path / f"{name}.jsonl", "--types", ",".join(TYPES),
                               "--normalise-boundaries", "--report", tmp_path / f"{name}.json", *args)
        assert code == 0, err
        outputs[name] = (tmp_path / f"{name}.jsonl").read_bytes()
    assert outputs["preset"] == outputs["schema"] != outputs["generic"]
    preset, generic = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("preset", "generic"))
    assert sum(preset["rules"][r] for r in CLAUSE_RULES) == 11 and sum(generic["rules"][r] for r in CLAUSE_RULES) == 0
    assert (preset["records_out"], generic["records_out"]) == (7, 9)  # the garbled and fragmented clauses need clauses
    # the generic normalisation rule still applies: "water." (the preset also trims "pools;", which its clause rule
    # shift_subject_span moved into the HABITAT span before it)
    assert (generic["normalisation"], preset["normalisation"]["punctuation_outside"]) == ({"punctuation_outside": 1}, 2)


@pytest.fixture
def biospecies(shared_data):
    path = shared_data / "biospecies" / "NER_Biospecies_data.txt"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


# The repair of the released file as it was before the rules moved into the schema (same JSONL bytes, checked
# record by record when the preset replaced the hard-coded rules).
PINNED_RULES = {
    "skip_section_header": 5, "strip_invisible_chars": 4, "unglue_tag": 1, "split_multiword_line": 21,
    "fill_missing_tag": 18, "unbracket_tag": 31, "expand_truncated_type": 1, "stray_type_to_o": 6,
    "bare_type_to_iob": 1520, "bridge_gap": 269, "i_after_o_to_b": 2, "i_type_change_to_b": 0, "verb_out_of_span": 90,
    "shift_subject_span": 32, "clean_subject": 48, "complete_subject": 3, "shift_object_span": 25,
    "extend_span_to_clause_end": 56, "trim_dangling_word": 22, "close_parenthesis": 36, "retype_object_by_verb": 3,
    "remove_duplicate": 4,
}
PINNED_TOKENS = {"in": 17071, "out": 15935, "in_duplicates": 152, "in_dropped": 984}
PINNED_TAGS = {
    "raw": {"B-BREEDING": 369, "B-FEEDING": 369, "B-HABITAT": 372, "B-SPECIES": 1071, "I-BREEDING": 3937,
            "I-FEEDING": 2086, "I-HABITAT": 3319, "I-SPECIES": 2083, "O": 2329},
    "normalised": {"B-BREEDING": 369, "B-FEEDING": 369, "B-HABITAT": 372, "B-SPECIES": 1071, "I-BREEDING": 3758,
                   "I-FEEDING": 1930, "I-HABITAT": 3161, "I-SPECIES": 2085, "O": 2820},
}


@pytest.mark.parametrize("variant", ["raw", "normalised"])
def test_the_biospecies_preset_pins_the_released_repair(biospecies, run_cli, tmp_path, variant):
    target, report = tmp_path / "bio.jsonl", tmp_path / "report.json"
    normalise = ["--normalise-boundaries"] if variant == "normalised" else []
    code, _, err = convert(run_cli, biospecies, target, "--first-section", "amphibians", "--preset", "biospecies",
                           "--report", report, *normalise)
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["tokens"] == PINNED_TOKENS and data["rules"] == PINNED_RULES
    assert (data["records_out"], data["records_dropped"], data["unrepairable"]) == (384, 19, 36)
    assert data["clause_conventions"] == {"outside": 611, "inside": 490, "n/a": 35}
    assert data["normalisation"] == ({"preposition_outside": 486, "punctuation_outside": 304,
                                      "parenthetical_in_species": 1} if normalise else {})
    assert tag_counts(read_records(target)) == PINNED_TAGS[variant]


def test_the_biospecies_file_without_a_schema_gets_the_line_repairs_only(biospecies):
    records, report = repair_file(biospecies, first_section="amphibians")
    assert {rule: report.rules[rule] for rule in CLAUSE_RULES} == dict.fromkeys(CLAUSE_RULES, 0)
    assert {rule: report.rules[rule] for rule in LINE_RULES if rule != "bridge_gap"} == {
        rule: PINNED_RULES[rule] for rule in LINE_RULES if rule != "bridge_gap"}
    assert report.rules["bridge_gap"] == 271  # 2 more: without the schema's verbs a gap may cross "live"
    assert (report.records_out, report.records_dropped, report.tokens_out) == (403, 0, 16919)
