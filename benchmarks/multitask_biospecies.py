"""Multi-task (NER + RE, one shared MiniLM) against the two single-task students, on the endangered-species data.

Data: the NER file after ``adaptlab.data.repair`` with boundary normalisation (as ``re_biospecies.py`` part 2), one
80/20 split by text (seed 13); relations are derived from the entity types (``derive_relations``), with unrelated
SPECIES-argument pairs as ``no_relation``. ``--limit k`` keeps the first k training records after shuffling (labels
scarce; also a quick smoke run).

Arms, each scored on the same 20% held-out records:

* **single-task**: ``adaptlab.ie.ner.train_ner`` (lr 2e-4, up to 15 epochs, patience 4) and
  ``adaptlab.ie.relations.train_re`` (lr 5e-5, up to 4 epochs, patience 2), each with 10% of its training records
  as dev when that makes 20 records (as ``ner train`` and ``re train`` hold out; else no dev and the
  ``min_steps`` budget);
* **multi-task**: ``adaptlab multitask train`` with the tasks ``species`` (ner) and ``relations`` (re) on the same
  training records (10% dev per task, by the same rule), one learning rate (2e-4) and ``--sampling`` (default
  equal: the NER task gets half the batches although it has a tenth of the examples), up to ``--epochs`` epochs
  (one epoch = as many batches as both tasks' examples fill) and at least ``min_steps`` (200) steps, patience 2.

NER: strict and token macro F1 of the exported model through ``NERPredictor``; RE: macro F1 of the relation
classifier on the test records' gold span pairs through ``REPredictor``. Writes
``benchmarks/results/multitask_biospecies.json``.

    python benchmarks/multitask_biospecies.py [--limit 64] [--epochs 4] [--sampling equal]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from adaptlab.data.records import write_records
from adaptlab.data.splits import MIN_DEV_RECORDS, hold_out_dev
from adaptlab.ie.models import resolve_student
from adaptlab.ie.ner import NERPredictor, train_ner
from adaptlab.ie.pairs import derive_relations
from adaptlab.ie.relations import REPredictor, relation_examples, train_re
from adaptlab.metrics.classification import classification_prf
from adaptlab.metrics.spans import ner_report
from adaptlab.synth.schema import preset_schema
from adaptlab.tuning.encoder_fit import EncoderTrainerSettings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "biospecies" / "NER_Biospecies_data.txt"
RESULTS = ROOT / "benchmarks" / "results" / "multitask_biospecies.json"
TYPES = ["BREEDING", "FEEDING", "HABITAT", "SPECIES"]
SCHEMA = preset_schema("biospecies")
NER_CFG = EncoderTrainerSettings(num_train_epochs=15, learning_rate=2e-4, early_stopping_patience=4, progress=False)
RE_CFG = EncoderTrainerSettings(num_train_epochs=4, learning_rate=5e-5, early_stopping_patience=2, progress=False)


def split(seed: int, limit: int | None):
    from adaptlab.data.repair import repair_file

    records, _ = repair_file(DATA, normalise_boundaries=True, first_section="amphibians",
                             grammar=SCHEMA.clause_grammar())
    texts = sorted({r.text for r in records})
    random.Random(seed).shuffle(texts)
    test_texts = set(texts[: round(0.2 * len(texts))])
    train = [derive_relations(r, SCHEMA) for r in records if r.text not in test_texts]
    test = [derive_relations(r, SCHEMA) for r in records if r.text in test_texts]
    random.Random(seed).shuffle(train)
    return train[:limit] if limit else train, test


def scores(ner_dir: Path, re_dir: Path, test) -> dict:
    tagged = NERPredictor(ner_dir).predict([r.text for r in test])
    ner = ner_report(test, tagged, labels=TYPES)
    examples = relation_examples(test)
    predicted = REPredictor(re_dir).predict([e.marked for e in examples])
    relations = classification_prf([e.label for e in examples], [label for label, _ in predicted])
    return {"ner_strict_macro_f1": ner["strict"]["macro"]["f1"], "ner_token_macro_f1": ner["token"]["macro"]["f1"],
            "re_macro_f1": relations["macro"]["f1"], "re_accuracy": relations["accuracy"],
            "re_test_examples": len(examples)}


def single_task(train, test, seed: int, work: Path) -> dict:
    model = resolve_student("minilm")
    started = time.perf_counter()
    fit, dev, _ = hold_out_dev(train, 0.1, seed, MIN_DEV_RECORDS)
    ner = train_ner(fit, dev or None, model, NER_CFG.model_copy(update={"seed": seed}), work / "ner")
    fit_examples, dev_examples = relation_examples(fit), relation_examples(dev) if dev else None
    relations = train_re(fit_examples, dev_examples, model, RE_CFG.model_copy(update={"seed": seed}), work / "re")
    return {**scores(ner.model_dir, relations.model_dir, test), "seconds": round(time.perf_counter() - started, 1),
            "train_seconds": round(ner.train_seconds + relations.train_seconds, 1)}


def multi_task(train, test, seed: int, work: Path, epochs: float, sampling: str) -> dict:
    from adaptlab.config import validate_config
    from adaptlab.recipes import multitask

    data = write_records(train, work / "train.jsonl")
    cfg = validate_config(multitask.MultitaskConfig, {
        "model": "minilm", "output": str(work / "mt"), "sampling": sampling,
        "tasks": {"species": {"type": "ner", "train": str(data)},
                  "relations": {"type": "re", "train": str(data), "derive_relations": "biospecies"}},
        "training": {"learning_rate": 2e-4, "num_train_epochs": epochs, "early_stopping_patience": 2,
                     "seed": seed, "progress": False},
    })
    started = time.perf_counter()
    run, metrics = multitask.train(cfg)
    return {**scores(run.path / "tasks" / "species", run.path / "tasks" / "relations", test),
            "seconds": round(time.perf_counter() - started, 1), "train_seconds": metrics["train_seconds"],
            "sampling": metrics["sampling"], "best_mean_dev_f1": metrics["best_mean_dev_f1"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--limit", type=int, default=None, help="training records to keep (default: all)")
    parser.add_argument("--epochs", type=float, default=4, help="multi-task epochs")
    parser.add_argument("--sampling", default="equal", choices=["proportional", "equal", "temperature"])
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    if not DATA.is_file():
        print(f"data not found at {DATA}; this benchmark needs ../shared/data", file=sys.stderr)
        return 2
    train, test = split(args.seed, args.limit)
    results = {"seed": args.seed, "student": "all-MiniLM-L6-v2", "train_records": len(train),
               "test_records": len(test), "multitask_epochs": args.epochs, "sampling": args.sampling}
    with tempfile.TemporaryDirectory() as work:
        results["single_task"] = single_task(train, test, args.seed, Path(work))
        results["multi_task"] = multi_task(train, test, args.seed, Path(work), args.epochs, args.sampling)
    print(f"\n{len(train)} training records, {len(test)} test records (seed {args.seed})")
    print(f"{'arm':<12} {'NER strict':>10} {'NER token':>10} {'RE macro':>9} {'train s':>8}")
    for arm in ("single_task", "multi_task"):
        row = results[arm]
        print(f"{arm:<12} {row['ner_strict_macro_f1']:>10.4f} {row['ner_token_macro_f1']:>10.4f} "
              f"{row['re_macro_f1']:>9.4f} {row['train_seconds']:>8.1f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
