"""Relation extraction and text-to-triples on the endangered-species data (Atuhurra et al. 2024).

Part 1, the released RE file (marker CSV, 1,778 rows): the words between ``[/E1]`` and ``[E2]``
("live in" / "feed on" / "breed by") give the label away, so a string rule is measured beside the
RE student, and the student is measured again with those words masked (``[/E1] … [E2]``), which
shows what it learns from the arguments alone. One split: 80/20, rows of one species together.

Part 2, end to end on the NER data (repaired, boundary-normalised): raw sentence -> NER student ->
candidate (SPECIES, argument) pairs -> relation -> triples, scored by triple F1 against gold
triples derived from the gold NER spans (each argument paired with its clause's species). The
relation step is either the type rule or an RE student trained on the NER training split with
``no_relation`` negatives. Same 80/20 split for NER and RE.

    python benchmarks/re_biospecies.py
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

from adaptlab.data.formats.markers import read_marked_csv
from adaptlab.data.records import Record
from adaptlab.data.splits import split_dev
from adaptlab.ie.extract import relate
from adaptlab.ie.models import resolve_student
from adaptlab.ie.ner import NERPredictor, train_ner
from adaptlab.ie.pairs import derive_relations, triples_by_document
from adaptlab.ie.relations import RelationExample, REPredictor, relation_examples, train_re
from adaptlab.metrics.classification import classification_prf, triple_prf
from adaptlab.synth.schema import preset_schema
from adaptlab.tuning.encoder_fit import EncoderTrainerSettings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "biospecies"
RESULTS = ROOT / "benchmarks" / "results" / "re_biospecies.json"
PAPER_RE_WEIGHTED_F1 = 0.923
SCHEMA = preset_schema("biospecies")
TAIL_TYPE = {relation: typ for typ, relation in SCHEMA.relation_by_tail().items()}
CONNECTIVE = re.compile(r"\[/E1\](.*?)\[E2\]")
RE_CFG = EncoderTrainerSettings(num_train_epochs=4, learning_rate=5e-5, per_device_train_batch_size=16,
                                early_stopping_patience=2, progress=False)
NER_CFG = EncoderTrainerSettings(num_train_epochs=15, learning_rate=2e-4, per_device_train_batch_size=16,
                                 early_stopping_patience=4, progress=False)


def split_by(records: list[Record], key, seed: int, test_fraction: float = 0.2):
    groups = sorted({key(r) for r in records})
    random.Random(seed).shuffle(groups)
    test_groups = set(groups[: round(test_fraction * len(groups))])
    return [r for r in records if key(r) not in test_groups], [r for r in records if key(r) in test_groups]


def string_rule(marked: str) -> str:
    words = CONNECTIVE.search(marked).group(1).strip().lower()
    return {"live in": "live_in", "feed on": "feed_on", "breed by": "breed_by"}.get(words, "unknown")


def masked(example: RelationExample) -> RelationExample:
    return RelationExample(CONNECTIVE.sub("[/E1] … [E2]", example.marked), example.label)


def re_file_part(seed: int) -> dict:
    rows = read_marked_csv(DATA / "RE_Biospecies_data.txt", head_label="SPECIES", tail_label=TAIL_TYPE)
    train, test = split_by(rows, lambda r: r.span_text(r.spans[0]).lower(), seed)
    train_ex, test_ex = relation_examples(train, False), relation_examples(test, False)
    gold = [e.label for e in test_ex]
    out = {"rows": len(rows), "train": len(train_ex), "test": len(test_ex),
           "string_rule": classification_prf(gold, [string_rule(e.marked) for e in test_ex])}
    for name, transform in (("student", lambda e: e), ("student_connective_masked", masked)):
        with tempfile.TemporaryDirectory() as work:
            fit, dev = split_dev([transform(e) for e in train_ex], 0.1, seed, key=lambda e: e.marked)
            started = time.perf_counter()
            result = train_re(fit, dev, resolve_student("minilm"), RE_CFG, Path(work))
            predicted = REPredictor(result.model_dir).predict([transform(e).marked for e in test_ex])
            out[name] = classification_prf(gold, [p for p, _ in predicted])
            out[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"[RE file] {name}: weighted F1 {out[name]['weighted']['f1']:.4f}", flush=True)
    return out


def end_to_end_part(seed: int) -> dict:
    from adaptlab.data.repair import repair_file

    records, _ = repair_file(DATA / "NER_Biospecies_data.txt", normalise_boundaries=True, first_section="amphibians",
                             grammar=SCHEMA.clause_grammar())
    train, test = split_by(records, lambda r: r.text, seed)
    gold = [derive_relations(r, SCHEMA) for r in test]
    out: dict = {"train_records": len(train), "test_records": len(test)}
    with tempfile.TemporaryDirectory() as work:
        fit, dev = split_dev(train, 0.1, seed)
        ner = train_ner(fit, dev, resolve_student("minilm"), NER_CFG, Path(work) / "ner")
        tagged = NERPredictor(ner.model_dir).predict([r.text for r in test])
        out["ner_type_rule"] = triple_prf(triples_by_document(gold), triples_by_document(relate(tagged, None, SCHEMA)))
        re_train = [derive_relations(r, SCHEMA) for r in train]
        examples = relation_examples(re_train, with_negatives=True)
        re_fit, re_dev = split_dev(examples, 0.1, seed, key=lambda e: e.marked)
        re_run = train_re(re_fit, re_dev, resolve_student("minilm"), RE_CFG, Path(work) / "re")
        re_model = REPredictor(re_run.model_dir)
        out["ner_re_student"] = triple_prf(triples_by_document(gold),
                                           triples_by_document(relate(tagged, re_model, SCHEMA)))
        unrelated = [Record(r.text, list(r.spans)) for r in test]
        out["gold_spans_re_student"] = triple_prf(triples_by_document(gold),
                                                  triples_by_document(relate(unrelated, re_model, SCHEMA)))
        out["re_training_examples"] = len(examples)
    for name in ("ner_type_rule", "ner_re_student", "gold_spans_re_student"):
        print(f"[triples] {name}: micro F1 {out[name]['micro']['f1']:.4f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"data not found at {DATA}; this benchmark needs ../shared/data", file=sys.stderr)
        return 2
    results = {"seed": args.seed, "student": "all-MiniLM-L6-v2", "paper_re_weighted_f1": PAPER_RE_WEIGHTED_F1,
               "re_config": RE_CFG.model_dump(), "ner_config": NER_CFG.model_dump(),
               "re_file": re_file_part(args.seed), "end_to_end": end_to_end_part(args.seed)}
    re_part, e2e = results["re_file"], results["end_to_end"]
    print("\nRelation classification on the released RE file (weighted F1, 20% held-out species)")
    print(f"  paper (BERT-family)            {PAPER_RE_WEIGHTED_F1:.4f}")
    for name in ("string_rule", "student", "student_connective_masked"):
        print(f"  {name:<30} {re_part[name]['weighted']['f1']:.4f}")
    print("Text to triples on the NER data (triple micro F1, 20% held-out sequences)")
    for name in ("ner_type_rule", "ner_re_student", "gold_spans_re_student"):
        row = e2e[name]
        per = ", ".join(f"{k} {v['f1']:.3f}" for k, v in row["per_relation"].items())
        print(f"  {name:<30} {row['micro']['f1']:.4f}  ({per})")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
