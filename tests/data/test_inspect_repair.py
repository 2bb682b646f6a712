"""Lenient scanning, inspection, repair and boundary normalisation of messy CoNLL/BIO files.

The synthetic file below has one small sequence per problem family; the expected counts were
worked out by hand from it (comments name the lines). Tests marked by ``shared_data`` check the
real biospecies file, which is read at run time and never copied into the repository.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from adaptlab.data.boundary import clause_conventions, normalise_boundaries, split_clauses
from adaptlab.data.conll_scan import Entry, Sequence, classify_tag, decode_tags, infer_types, scan_conll
from adaptlab.data.formats.conll import read_conll, write_conll
from adaptlab.data.inspect import inspect_file
from adaptlab.data.records import Record, Span, read_records
from adaptlab.data.repair import RULES, repair_file
from adaptlab.synth.schema import preset_schema

TYPES = ["SPECIES", "HABITAT", "FEEDING", "BREEDING"]
BIOSPECIES = preset_schema("biospecies").clause_grammar()  # the clause rules of the file below
MESSY = [
    # S1, lines 1-21: multi-word line, space separator, glued tag, I after O, missing tags,
    # bracketed (O), zero-width space, unknown type B-VERB, truncated I-B.
    ["Green frog\tB-SPECIES", "live O", "inO", "ponds\tB-HABITAT", "and\tO", "lakes\tI-HABITAT", ";",
     "Green\tB-SPECIES", "frog\tI-SPECIES", "feed\t(O)", "on\tO", "insects\tB-FEEDING", ";\tO",
     "\u200bGreen\tB-SPECIES", "frog\tI-SPECIES", "breed\tB-VERB", "by\tO", "laying\tB-BREEDING",
     "eggs\tI-B", "in\tI-BREEDING", "water."],
    ["TWO: List of endangered Toads"],  # line 23
    # S2, lines 25-45: bare types, one with a skipped word (ants and/O beetles).
    ["Blue SPECIES", "toad\tSPECIES", "live\tO", "in\tO", "wet\tHABITAT", "woods\tHABITAT", ";\tO",
     "Blue\tSPECIES", "toad\tSPECIES", "feed\tO", "on\tO", "ants\tFEEDING", "and\tO", "beetles\tFEEDING",
     ";\tO",
     "Blue\tSPECIES", "toad\tSPECIES", "breed\tO", "by\tO", "laying\tBREEDING", "eggs\tBREEDING"],
    # S3, lines 47-60: subject span one token early (pools;/B-SPECIES Red/I newt/O), object cut short.
    ["Red\tB-SPECIES", "newt\tI-SPECIES", "live\tO", "in\tO", "cold\tB-HABITAT", "streams\tI-HABITAT",
     "and\tI-HABITAT", "quiet\tO", "pools;\tB-SPECIES", "Red\tI-SPECIES", "newt\tO", "feed\tO", "on\tO",
     "worms\tB-FEEDING"],
    # S4, lines 62-82: verb inside the subject, object one token early, HABITAT after "breed by".
    ["Gray\tB-SPECIES", "owl\tI-SPECIES", "live\tI-SPECIES", "in\tO", "old\tB-HABITAT", "forests\tI-HABITAT",
     ";\tO", "Gray\tB-SPECIES", "owl\tI-SPECIES", "feed\tO", "on\tB-FEEDING", "small\tI-FEEDING", "mice\tO",
     ";\tO", "Gray\tB-SPECIES", "owl\tI-SPECIES", "breed\tO", "by\tO", "nesting\tB-HABITAT", "in\tI-HABITAT",
     "holes\tI-HABITAT"],
    None,  # S5, lines 84-97: an exact copy of S3
    # S6, lines 99-104: SPECIES after the verb: garbled, cannot be repaired.
    ["Pink\tB-SPECIES", "frog\tI-SPECIES", "live\tO", "in\tO", "hill\tB-SPECIES", "forests\tI-SPECIES"],
    # S7, lines 106-120: span ends inside "(Foo bar)"; second subject starts one token late.
    ["Cave\tB-SPECIES", "crab\tI-SPECIES", "(Foo\tI-SPECIES", "bar)\tO", "live\tO", "in\tO",
     "caves\tB-HABITAT", ";\tO", "Cave\tO", "crab\tB-SPECIES", "(Foo\tO", "bar)\tO", "feed\tO", "on\tO",
     "algae\tB-FEEDING"],
    # S8, lines 122-150: preposition inside (kept until normalisation), I-X after a long gap,
    # adverb in the subject, dangling "of", subject without its head word.
    ["Tiny\tB-SPECIES", "snail\tI-SPECIES", "live\tO", "in\tB-HABITAT", "wet\tI-HABITAT", "moss\tI-HABITAT",
     ",\tO", "far\tO", "from\tO", "ponds\tI-HABITAT", ";\tO",
     "Tiny\tB-SPECIES", "snail\tI-SPECIES", "mostly\tI-SPECIES", "feed\tO", "on\tO", "soft\tB-FEEDING",
     "leaves\tI-FEEDING", "of\tI-FEEDING", "the\tO", "old\tO", "trees\tO", ";\tO",
     "Tiny\tB-SPECIES", "snail\tO", "breed\tO", "by\tO", "laying\tB-BREEDING", "eggs\tI-BREEDING"],
    # S9, lines 152-165: an object in pieces with wide gaps: fragmented.
    ["Sea\tB-SPECIES", "star\tI-SPECIES", "breed\tO", "by\tO", "laying\tB-BREEDING", "eggs\tO", "in\tO",
     "the\tO", "cold\tB-BREEDING", "water\tO", "near\tO", "rocks\tO", "at\tB-BREEDING", "night\tO"],
    # S10, lines 167-170: no relation verb at all.
    ["Apo\tB-SPECIES", "Swallowtail\tI-SPECIES", "montane\tB-HABITAT", "forests\tI-HABITAT"],
]
MESSY[5] = MESSY[3]


@pytest.fixture
def messy(tmp_path):
    path = tmp_path / "messy.txt"
    path.write_text("\n\n".join("\n".join(block) for block in MESSY) + "\n", encoding="utf-8")
    return path


def spans_of(record: Record) -> list[tuple[str, str]]:
    return [(record.span_text(s), s.label) for s in record.spans]


# ---------------------------------------------------------------- scanning and decoding


def test_classify_tag_kinds():
    assert classify_tag("B-SPECIES", TYPES) == ("ok", "B-SPECIES")
    assert classify_tag("O", TYPES) == ("ok", "O")
    assert classify_tag("(O)", TYPES) == ("bracketed", "O")
    assert classify_tag("HABITAT", TYPES) == ("bare", "HABITAT")
    assert classify_tag("I-B", TYPES) == ("truncated", "I-BREEDING")
    assert classify_tag("B-VERB", TYPES) == ("stray", "O")
    assert classify_tag(None, TYPES) == ("missing", None)


def test_infer_types_drops_rare_and_truncated_types():
    tags = Counter({"B-SPECIES": 500, "I-SPECIES": 400, "B-HABITAT": 300, "B-VERB": 3, "I-B": 1,
                    "BREEDING": 200, "(O)": 9, "O": 900})
    assert infer_types(tags) == ("BREEDING", "HABITAT", "SPECIES")


def test_decode_type_change_and_gap_limits():
    def decode(pairs, max_gap=2):
        seq = Sequence([Entry(w, t, i + 1) for i, (w, t) in enumerate(pairs)], None, 0)
        fired = Counter()
        return decode_tags(seq, TYPES, fired, max_gap, BIOSPECIES.verbs), fired

    tags, fired = decode([("small", "B-FEEDING"), ("fish", "I-HABITAT")])
    assert tags == ["B-FEEDING", "B-HABITAT"] and fired == {"i_type_change_to_b": 1}
    tags, fired = decode([("a", "B-HABITAT"), ("b", "O"), ("c", "O"), ("d", "O"), ("e", "I-HABITAT")])
    assert tags[-1] == "B-HABITAT" and fired == {"i_after_o_to_b": 1}
    tags, fired = decode([("a", "B-HABITAT"), ("b;", "O"), ("c", "I-HABITAT")])  # never across a clause end
    assert tags == ["B-HABITAT", "O", "B-HABITAT"]


def test_scan_messy_file_lines_sections_and_tokens(messy):
    scan = scan_conll(messy, types=TYPES)
    assert len(scan.sequences) == 10
    assert scan.n_tokens == 160  # 159 token lines; "Green frog" is two words
    assert [s.section for s in scan.sequences[:2]] == [None, "toads"]
    assert scan.headers == [(23, "TWO: List of endangered Toads")]
    first = scan.sequences[0].entries
    assert (first[0].word, first[1].word, first[1].continued) == ("Green", "frog", True)
    assert (first[3].word, first[3].tag, first[3].line) == ("in", "O", 3)
    assert first[14].word == "Green"  # zero-width space removed


def test_inspect_counts_every_problem_kind(messy):
    report = inspect_file(messy, types=TYPES, examples=2, grammar=BIOSPECIES)
    counts = {k: v for k, v in report.problem_counts().items() if v}
    assert counts == {
        "space_separator": 2,  # lines 2, 25
        "section_header": 1,  # line 23
        "invisible_char": 1,  # line 14
        "missing_tag": 2,  # lines 7 (;), 21 (water.)
        "glued_tag": 1,  # line 3
        "multiword_line": 1,  # line 1
        "bare_type": 12,  # S2
        "stray_tag": 3,  # (O), B-VERB, I-B
        "i_after_o": 2,  # lakes (line 6), ponds (line 131)
        "duplicate_sequence": 1,  # line 84
        "shifted_tags": 4,  # S3 and its copy, S4 object, S7 second subject
        "verb_in_span": 1,  # line 64
        "type_mismatch_with_verb": 1,  # line 80
        "dangling_span_end": 4,  # S3 twice, "of" (line 140), "at night" (line 164)
        "parenthesis_split": 1,  # line 108
        "punctuation_in_span": 3,  # water. and pools; twice
        "preposition_in_span": 2,  # on/B-FEEDING (line 72), in/B-HABITAT (line 125)
        "subject_boundary": 2,  # mostly (line 135), snail (line 146)
        "garbled_clause": 1,  # line 99
        "fragmented_clause": 1,  # line 152
        "no_relation_verb": 1,  # line 167
    }
    data = report.to_json()
    assert {"records", "tokens", "labels", "problems"} <= set(data)
    assert data["records"] == 10 and data["tokens"] == 160 and data["token_lines"] == 159
    assert data["labels"]["raw_tags"]["(O)"] == 1 and data["labels"]["raw_tags"]["SPECIES"] == 6
    assert data["problems"]["stray_tag"]["examples"] == [
        f"{messy}:10: feed \u21e5 (O)", f"{messy}:16: breed \u21e5 B-VERB"]
    assert data["problems"]["garbled_clause"]["examples"][0].startswith(f"{messy}:99: Pink/B-SPECIES")
    json.dumps(data)


# ---------------------------------------------------------------- repair


def test_repair_fires_each_rule_and_accounts_for_every_token(messy):
    records, report = repair_file(messy, types=TYPES, grammar=BIOSPECIES)
    fired = {k: v for k, v in report.rules.items() if v}
    assert fired == {
        "skip_section_header": 1, "strip_invisible_chars": 1, "unglue_tag": 1, "split_multiword_line": 1,
        "fill_missing_tag": 2, "unbracket_tag": 1, "expand_truncated_type": 1, "stray_type_to_o": 1,
        "bare_type_to_iob": 12, "bridge_gap": 2, "i_after_o_to_b": 1, "verb_out_of_span": 1,
        "shift_subject_span": 2, "clean_subject": 1, "complete_subject": 1, "shift_object_span": 1,
        "extend_span_to_clause_end": 2, "trim_dangling_word": 1, "close_parenthesis": 1,
        "retype_object_by_verb": 1, "remove_duplicate": 1,
    }
    assert set(fired) <= set(RULES)
    assert report.sequences_in == 10 and report.records_out == 7 and report.records_dropped == 2
    assert report.duplicates == [f"{messy}:84 duplicates line 47"]
    assert [(u["kind"], u["where"], u["action"]) for u in report.unrepairable] == [
        ("garbled_clause", f"{messy}:99", "dropped"), ("fragmented_clause", f"{messy}:152", "dropped")]
    assert report.tokens_in == 160
    assert report.tokens_in == report.tokens_out + report.tokens_in_duplicates + report.tokens_in_dropped
    assert (report.tokens_in_duplicates, report.tokens_in_dropped) == (14, 20)

    by_id = {r.meta["id"]: r for r in records}
    assert spans_of(by_id["messy-L1"]) == [
        ("Green frog", "SPECIES"), ("ponds and lakes", "HABITAT"), ("Green frog", "SPECIES"),
        ("insects", "FEEDING"), ("Green frog", "SPECIES"), ("laying eggs in water.", "BREEDING")]
    assert by_id["messy-L1"].text.startswith("Green frog live in ponds and lakes ; Green")
    assert spans_of(by_id["messy-L25"])[3] == ("ants and beetles", "FEEDING")
    assert spans_of(by_id["messy-L47"])[:3] == [
        ("Red newt", "SPECIES"), ("cold streams and quiet pools;", "HABITAT"), ("Red newt", "SPECIES")]
    assert spans_of(by_id["messy-L62"]) == [
        ("Gray owl", "SPECIES"), ("old forests", "HABITAT"), ("Gray owl", "SPECIES"),
        ("small mice", "FEEDING"), ("Gray owl", "SPECIES"), ("nesting in holes", "BREEDING")]
    assert spans_of(by_id["messy-L106"]) == [
        ("Cave crab (Foo bar)", "SPECIES"), ("caves", "HABITAT"), ("Cave crab", "SPECIES"),
        ("algae", "FEEDING")]
    assert spans_of(by_id["messy-L122"]) == [
        ("Tiny snail", "SPECIES"), ("in wet moss", "HABITAT"), ("ponds", "HABITAT"),
        ("Tiny snail", "SPECIES"), ("soft leaves", "FEEDING"), ("Tiny snail", "SPECIES"),
        ("laying eggs", "BREEDING")]
    assert spans_of(by_id["messy-L167"]) == [("Apo Swallowtail", "SPECIES"), ("montane forests", "HABITAT")]
    meta = by_id["messy-L25"].meta
    assert meta["source"] == f"{messy}:25" and meta["section"] == "toads" and meta["lines"] == [25, 45]
    assert meta["conventions"] == ["outside", "outside", "outside"]
    assert by_id["messy-L122"].meta["conventions"] == ["inside", "outside", "outside"]
    for record in records:
        record.validate()


def test_repair_keeps_unrepairable_when_asked_and_splits_clauses(messy):
    records, report = repair_file(messy, types=TYPES, drop_unrepairable=False, first_section="frogs",
                                  grammar=BIOSPECIES)
    assert report.records_out == 9 and report.records_dropped == 0
    assert {u["action"] for u in report.unrepairable} == {"kept"}
    assert records[0].meta["section"] == "frogs"
    records, report = repair_file(messy, types=TYPES, clause_records=True, grammar=BIOSPECIES)
    ids = [r.meta["id"] for r in records]
    assert ids[:3] == ["messy-L1-c1", "messy-L1-c2", "messy-L1-c3"]
    assert records[1].text == "Green frog feed on insects ;" and records[1].meta["source"] == f"{messy}:8"
    assert "messy-L99" not in " ".join(ids) and "messy-L152" not in " ".join(ids)  # single-clause, dropped
    assert report.tokens_in == report.tokens_out + report.tokens_in_duplicates + report.tokens_in_dropped


def test_repaired_output_is_clean_conll(messy, tmp_path):
    records, _ = repair_file(messy, types=TYPES, grammar=BIOSPECIES)
    out = tmp_path / "clean.conll"
    write_conll(records, out)
    assert len(read_conll(out)) == len(records)  # the strict reader accepts it
    counts = inspect_file(out, types=TYPES).problem_counts()
    for kind in ("bare_type", "stray_tag", "missing_tag", "glued_tag", "multiword_line", "i_after_o"):
        assert counts[kind] == 0, kind


# ---------------------------------------------------------------- clauses and boundaries


def test_split_clauses_finds_subjects_without_punctuation():
    words = "Oedipina grandis live in rainforests of Panama Oedipina grandis feed on small insects".split()
    clauses = split_clauses(words, BIOSPECIES)
    assert [(c.start, c.verb, c.prep, c.end, c.object_type) for c in clauses] == [
        (0, 2, 3, 7, "HABITAT"), (7, 9, 10, 13, "FEEDING")]
    words = "X feeds on nectar and its larvae feed on leaves".split()  # same relation: inside the object
    assert len(split_clauses(words, BIOSPECIES)) == 1
    words = "Y live in the island of Madeira. feed on nectar.".split()  # empty subject after a full stop
    assert [(c.start, c.verb) for c in split_clauses(words, BIOSPECIES)] == [(0, 1), (7, 7)]


def test_normalise_boundaries_one_convention_and_counts():
    text = "Cave crab (Foo bar) live in dark caves; Cave crab feed on algae, mostly."
    record = Record(text, [Span(0, 9, "SPECIES"), Span(25, 39, "HABITAT"), Span(40, 49, "SPECIES"),
                           Span(58, 64, "FEEDING")], meta={"id": "r1"})
    assert clause_conventions([record], BIOSPECIES) == Counter({"inside": 1, "outside": 1})
    (out,), counts = normalise_boundaries([record], BIOSPECIES)
    assert spans_of(out) == [("Cave crab (Foo bar)", "SPECIES"), ("dark caves", "HABITAT"),
                             ("Cave crab", "SPECIES"), ("algae", "FEEDING")]
    assert counts == Counter(
        {"preposition_outside": 1, "parenthetical_in_species": 1, "punctuation_outside": 2})
    assert record.spans[1] == Span(25, 39, "HABITAT") and out.meta == {"id": "r1"}  # input untouched
    assert clause_conventions([out], BIOSPECIES) == Counter({"outside": 2})


def test_normalise_keeps_a_separately_tagged_scientific_name_apart():
    text = "Bornean frog ( Barbourula kalimantanensis) live in streams"
    record = Record(text, [Span(0, 12, "SPECIES"), Span(15, 42, "SPECIES"), Span(51, 58, "HABITAT")])
    (out,), counts = normalise_boundaries([record], BIOSPECIES)
    assert spans_of(out) == [("Bornean frog", "SPECIES"), ("Barbourula kalimantanensis", "SPECIES"),
                             ("streams", "HABITAT")]
    assert counts == Counter({"punctuation_outside": 1})


def test_repair_with_normalised_boundaries(messy):
    records, report = repair_file(messy, types=TYPES, normalise_boundaries=True, grammar=BIOSPECIES)
    assert report.normalisation == Counter(
        {"preposition_outside": 1, "punctuation_outside": 2, "parenthetical_in_species": 1})
    by_id = {r.meta["id"]: r for r in records}
    assert spans_of(by_id["messy-L122"])[1] == ("wet moss", "HABITAT")
    assert spans_of(by_id["messy-L106"])[2] == ("Cave crab (Foo bar)", "SPECIES")
    assert spans_of(by_id["messy-L1"])[-1] == ("laying eggs in water", "BREEDING")


# ---------------------------------------------------------------- CLI


def test_cli_inspect_table_and_json(run_cli, messy):
    code, out, err = run_cli("data", "inspect", messy, "--types", ",".join(TYPES), "--examples", "1",
                             "--preset", "biospecies")
    assert code == 0, err
    assert "i_after_o" in out and "garbled_clause" in out and ":99:" in out.replace("\n", "")
    code, out, _ = run_cli("data", "inspect", messy, "--types", ",".join(TYPES), "--json", "--preset", "biospecies")
    data = json.loads(out)
    assert code == 0 and data["records"] == 10 and data["problems"]["bare_type"]["count"] == 12


def test_cli_convert_repairs_writes_jsonl_and_report(run_cli, messy, tmp_path):
    target, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    code, out, err = run_cli("data", "convert", messy, "--output", target, "--types", ",".join(TYPES),
                             "--report", report, "--normalise-boundaries", "--preset", "biospecies")
    assert code == 0, err
    assert "bridge_gap" in out and "records out 7" in out and "garbled_clause" in out
    records = read_records(target)
    assert len(records) == 7 and records[0].meta["id"] == "messy-L1"
    saved = json.loads(report.read_text())
    assert saved["rules"]["remove_duplicate"] == 1 and saved["normalisation"]["preposition_outside"] == 1
    code, _, err = run_cli("data", "convert", messy, "--output", target)
    assert code == 2 and "already exists" in err
    conll = tmp_path / "round.conll"
    code, _, err = run_cli("data", "convert", target, "--output", conll)  # canonical JSONL -> CoNLL through io
    assert code == 0, err
    assert len(read_conll(conll)) == 7


def test_cli_convert_without_repair_is_strict(run_cli, messy, tmp_path):
    code, _, err = run_cli("data", "convert", messy, "--output", tmp_path / "x.jsonl", "--no-repair", "--from", "conll")
    assert code == 2 and f"{messy}:1:" in err.replace("\n", "")


def test_cli_inspect_refuses_json(run_cli, tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"text": "Frogs live in ponds.", "spans": []}\n')
    code, _, err = run_cli("data", "inspect", path)
    assert code == 2 and f"{path}:1:" in err.replace("\n", "") and "looks like JSON" in err


@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_cli_missing_and_empty_files_exit_2_naming_the_file(run_cli, tmp_path, command):
    missing, empty = tmp_path / "missing.txt", tmp_path / "empty.txt"
    empty.write_text("\n \n")
    extra = ["--output", tmp_path / "o.jsonl"] if command == "convert" else []
    for path, message in ((missing, "file not found"), (empty, "file is empty")):
        code, out, err = run_cli("data", command, path, *extra)
        flat = err.replace("\n", "")
        assert code == 2 and str(path) in flat and message in flat and "Traceback" not in err


# ---------------------------------------------------------------- the real biospecies file


@pytest.fixture
def biospecies(shared_data):
    path = shared_data / "biospecies" / "NER_Biospecies_data.txt"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


def test_real_file_inspection_matches_the_readme(biospecies):
    report = inspect_file(biospecies, first_section="amphibians", grammar=BIOSPECIES)
    assert report.records == 407 and report.token_lines == 17047
    assert report.sections == {"amphibians": 95, "arthropods": 51, "birds": 124, "fishes": 87, "insects": 34,
                               "invertebrates": 16}
    counts = report.problem_counts()
    assert counts["bare_type"] == 1520 and counts["i_after_o"] == 187
    assert counts["missing_tag"] == 18 and counts["glued_tag"] == 1 and counts["section_header"] == 5
    assert counts["stray_tag"] == 38  # (O) x31, B-VERB x6, I-B x1
    assert counts["duplicate_sequence"] == 4
    assert counts["multiword_line"] >= 12
    assert counts["shifted_tags"] > 20 and counts["garbled_clause"] > 0
    raw = report.raw_tags
    assert (raw["(O)"], raw["B-VERB"], raw["I-B"]) == (31, 6, 1)
    assert abs(report.conventions["inside"] - 480) <= 30 and abs(report.conventions["outside"] - 563) <= 60


def test_real_file_repair_loses_no_token_and_leaves_clean_tags(biospecies, tmp_path):
    records, report = repair_file(biospecies, first_section="amphibians", grammar=BIOSPECIES)
    assert report.sequences_in == 407 and report.rules["remove_duplicate"] == 4
    assert report.tokens_in == report.tokens_out + report.tokens_in_duplicates + report.tokens_in_dropped
    assert report.records_out == 407 - 4 - report.records_dropped == len(records)
    assert report.records_dropped <= 25  # only garbled or fragmented sequences, each listed with file:line
    assert all(u["where"].startswith(f"{biospecies}:") for u in report.unrepairable)
    assert {s.label for r in records for s in r.spans} == {"SPECIES", "HABITAT", "FEEDING", "BREEDING"}
    out = tmp_path / "repaired.conll"
    write_conll(records, out)
    counts = inspect_file(out, grammar=BIOSPECIES).problem_counts()
    for kind in ("bare_type", "stray_tag", "missing_tag", "glued_tag", "i_after_o", "garbled_clause"):
        assert counts[kind] == 0, kind
    normalised, _ = normalise_boundaries(records, BIOSPECIES)
    assert clause_conventions(normalised, BIOSPECIES)["inside"] == 0


def test_repair_lists_every_span_a_rule_changed_with_file_line(messy, run_cli, tmp_path):
    _, report = repair_file(messy, types=TYPES, grammar=BIOSPECIES)
    changes = {(c["where"], c["change"], c["rule"], c["before"], c["after"]) for c in report.span_changes}
    assert (f"{messy}:80", "retyped", "retype_object_by_verb", "nesting in holes [HABITAT]",
            "nesting in holes [BREEDING]") in changes
    assert (f"{messy}:133", "changed", "clean_subject", "Tiny snail mostly [SPECIES]",
            "Tiny snail [SPECIES]") in changes
    assert len(report.span_changes) == 11 and report.to_json()["span_changes"] == report.span_changes
    code, out, _ = run_cli("data", "convert", messy, "--output", tmp_path / "out.jsonl", "--types", ",".join(TYPES),
                           "--preset", "biospecies")
    printed = " ".join(out.split())  # rich wraps long lines
    assert code == 0 and "spans the rules changed: changed 10, retyped 1" in printed
    assert f"{messy}:133: clean_subject changed Tiny snail mostly [SPECIES] -> Tiny snail [SPECIES]" in printed
