"""RE student and text-to-triples with tiny random models on the shipped demo records; relations derived by a
schema (the biospecies preset, or any other), never by a default."""

import json
from pathlib import Path

import pytest

from adaptlab.data.records import Record, Relation, Span, read_records, write_records
from adaptlab.errors import ConfigError
from adaptlab.ie.pairs import NO_RELATION, candidate_pairs, derive_relations, head_types, record_triples
from adaptlab.ie.relations import relation_examples
from adaptlab.synth.schema import Schema, preset_schema

BIOSPECIES = preset_schema("biospecies")

DEMO = Path(__file__).resolve().parents[2] / "src" / "adaptlab" / "resources" / "demo"
FAST = ["training.progress=false", "training.min_steps=0"]


def species_record() -> Record:
    text = "Axolotl lives in canals; Olm feeds on snails and breeds by laying eggs."
    spans = [Span(0, 7, "SPECIES"), Span(17, 23, "HABITAT"), Span(25, 28, "SPECIES"),
             Span(38, 44, "FEEDING"), Span(59, 70, "BREEDING")]
    return Record(text, spans)


def test_derive_relations_pairs_nearest_preceding_species():
    record = derive_relations(species_record(), BIOSPECIES)
    assert [(r.head, r.tail, r.label) for r in record.relations] == [
        (0, 1, "live_in"), (2, 3, "feed_on"), (2, 4, "breed_by")]
    assert ("olm", "feed_on", "snails") in {(t.head, t.relation, t.tail) for t in record_triples(record)}


def test_derive_relations_follows_any_schema():
    """Nothing is biospecies by default: another schema's subject and relations give other triples."""
    schema = Schema.model_validate({
        "subject": "COMPANY", "entities": [{"name": "COMPANY"}, {"name": "CITY"}, {"name": "PERSON"}],
        "relations": [{"name": "based_in", "head": "COMPANY", "tail": "CITY"},
                      {"name": "born_in", "head": "PERSON", "tail": "CITY"}]})
    text = "Acme is based in Lyon; Bo runs Zeta from Oslo."
    record = Record(text, [Span(0, 4, "COMPANY"), Span(17, 21, "CITY"), Span(23, 25, "PERSON"), Span(31, 35, "COMPANY"),
                           Span(41, 45, "CITY")])
    derived = derive_relations(record, schema)
    assert [(r.head, r.tail, r.label) for r in derived.relations] == [(0, 1, "based_in"), (3, 4, "based_in")]
    assert derive_relations(species_record(), schema).relations == []  # no COMPANY or CITY spans: nothing derived
    assert derive_relations(record, BIOSPECIES).relations == []
    clash = schema.model_copy(update={"relations": [*schema.relations, schema.relations[0].model_copy(
        update={"name": "sells_in"})]})
    with pytest.raises(ConfigError, match="CITY is the tail of both 'based_in' and 'sells_in'"):
        derive_relations(record, clash)


def test_examples_include_negative_pairs():
    record = derive_relations(species_record(), BIOSPECIES)
    assert len(candidate_pairs(record, {"SPECIES"})) == 6
    assert candidate_pairs(record, {"SPECIES"}, {"FEEDING"}) == [(0, 3), (2, 3)]
    assert head_types([record]) == {"SPECIES"}  # the negatives start from the types that head a relation
    examples = relation_examples([record])
    assert sum(e.label == NO_RELATION for e in examples) == 3
    assert all(e.marked.count("[E1]") == 1 and e.marked.count("[/E2]") == 1 for e in examples)
    assert len(relation_examples([record], with_negatives=False)) == 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_dir):
    from adaptlab.cli import main

    root = tmp_path_factory.mktemp("re")
    assert main(["re", "train", "--train", str(DEMO / "train.jsonl"), "--model", str(tiny_bert_dir),
                 "--output", str(root / "re"), "--epochs", "1", "dev_fraction=0.15", *FAST]) == 0  # dev: 24 >= 20
    assert main(["ner", "train", "--train", str(DEMO / "train.jsonl"), "--model", str(tiny_bert_dir),
                 "--output", str(root / "ner"), "--epochs", "1", *FAST]) == 0
    return root


def test_re_model_has_marker_tokens_and_labels(runs):
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(runs / "re" / "model")
    assert tok.tokenize("[E1]Olm[/E1] feeds on [E2]snails[/E2]")[0] == "[E1]"
    config = AutoConfig.from_pretrained(runs / "re" / "model")
    assert set(config.id2label.values()) == {"breed_by", "feed_on", "live_in", NO_RELATION}
    assert config.vocab_size == len(tok)
    metrics = json.loads((runs / "re" / "metrics.json").read_text())
    assert 0.0 <= metrics["dev"]["weighted"]["f1"] <= 1.0
    assert metrics["strategies"] == {}
    assert {"config.yaml", "metrics.json", "report.html", "log.txt", "model"} <= {
        p.name for p in (runs / "re").iterdir()}


def test_re_evaluate_and_predict(runs, run_cli):
    code, out, _ = run_cli("re", "evaluate", "--model", runs / "re", "--data", DEMO / "test.jsonl", "--json")
    assert code == 0
    scores = json.loads(out)
    assert set(scores["per_class"]) >= {"live_in", "feed_on", "breed_by"}
    code, out, _ = run_cli("re", "predict", "--model", runs / "re", "--text", "[E1]Olm[/E1] eats [E2]snails[/E2]")
    assert code == 0 and json.loads(out)["label"] in scores["per_class"]
    code, _, err = run_cli("re", "predict", "--model", runs / "re", "--text", "no markers here")
    assert code == 2 and "marker" in err.lower()


def test_re_evaluate_output_writes_a_complete_run_directory(runs, run_cli, tmp_path):
    code, out, _ = run_cli("re", "evaluate", "--model", runs / "re", "--data", DEMO / "test.jsonl", "--json")
    assert code == 0
    printed = json.loads(out)
    out_dir = tmp_path / "re-eval"
    code, out, err = run_cli("re", "evaluate", "--model", runs / "re", "--data", DEMO / "test.jsonl",
                             "--output", out_dir, "--no-negatives")
    assert code == 0, err
    assert f"run directory: {out_dir}" in " ".join(out.split())
    assert {"config.yaml", "metrics.json", "report.html", "log.txt", "predictions.jsonl"} == {
        p.name for p in out_dir.iterdir()}
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["model"] == str(runs / "re") and metrics["data"] == str(DEMO / "test.jsonl")
    assert metrics["examples"] == metrics["weighted"]["support"]
    assert "negatives: false" in (out_dir / "config.yaml").read_text()
    assert "evaluating" in (out_dir / "log.txt").read_text()
    assert "Relation classification on" in (out_dir / "report.html").read_text()
    rows = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == metrics["examples"] and {"text", "gold", "label", "score"} == set(rows[0])
    assert sum(r["gold"] == r["label"] for r in rows) / len(rows) == pytest.approx(metrics["accuracy"])
    code, _, err = run_cli("re", "evaluate", "--model", runs / "re", "--data", DEMO / "test.jsonl", "--output",
                           out_dir)
    assert code == 2 and "already exists" in err
    assert printed["weighted"]["support"] > metrics["weighted"]["support"]  # with negatives: more pairs scored


def test_re_training_data_without_relations_is_refused(tmp_path, tiny_bert_dir, run_cli):
    write_records([species_record()], tmp_path / "norel.jsonl")
    code, _, err = run_cli("re", "train", "--train", tmp_path / "norel.jsonl", "--model", tiny_bert_dir)
    assert code == 2 and "no relations" in err
    derive = ["re", "train", "--train", tmp_path / "norel.jsonl", "--model", tiny_bert_dir, "--output",
              tmp_path / "run", "dev_fraction=0", "--epochs", "1", *FAST]
    code, _, err = run_cli(*derive, "derive_relations=true")  # the old form: which schema was meant is not said
    assert code == 2 and "derive_relations=biospecies (a preset)" in " ".join(err.split())
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(*derive, "derive_relations=nope")
    assert code == 2 and "'nope' is neither a preset (biospecies) nor a file" in " ".join(err.split())
    assert not (tmp_path / "run").exists()
    code, _, err = run_cli(*derive, "derive_relations=biospecies")
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train_examples"] == 6


def test_extract_prints_triples_and_scores_against_gold(runs, run_cli, tmp_path):
    code, _, err = run_cli("extract", "--ner", runs / "ner", "--text", "Axolotl lives in canals.")
    assert code == 2 and "extract needs the schema of its triples: --schema biospecies" in " ".join(err.split())
    code, out, _ = run_cli("extract", "--ner", runs / "ner", "--text", "Axolotl lives in canals.", "--schema",
                           "biospecies")
    assert code == 0
    code, out, _ = run_cli("extract", "--ner", runs / "ner", "--re", runs / "re", "--gold", DEMO / "test.jsonl",
                           "--schema", "biospecies")
    assert code == 0
    scores = json.loads(out)
    assert 0.0 <= scores["micro"]["f1"] <= 1.0 and scores["counts"]["gold"] > 0
    out_file = tmp_path / "triples.jsonl"
    assert run_cli("extract", "--ner", runs / "ner", "--input", DEMO / "test.jsonl", "--output", out_file,
                   "--schema", "biospecies")[0] == 0
    assert len(read_records(out_file)) == len(read_records(DEMO / "test.jsonl"))


def test_perfect_predictions_score_one():
    from adaptlab.recipes.relations import score_triples

    gold = [derive_relations(species_record(), BIOSPECIES)]
    assert score_triples(gold, [species_record()], BIOSPECIES)["micro"]["f1"] == 1.0
    wrong = Record(gold[0].text, gold[0].spans, [Relation(0, 1, "feed_on")])
    assert score_triples([wrong], gold, BIOSPECIES)["micro"]["f1"] == 0.0
