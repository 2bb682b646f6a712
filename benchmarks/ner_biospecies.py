"""NER on the endangered-species data (Atuhurra et al. 2024): adaptlab vs a plain HF recipe.

k-fold cross-validation over sequences of the repaired file (identical texts never straddle
train and test), fixed seeds, both span-boundary conventions (as released = "raw", and the
documented normalisation = "normalised"). For each fold and variant it trains

* **adaptlab**: ``adaptlab.ie.ner.train_ner`` (warm-up, early stopping on dev strict F1 with 10%
  of the training fold held out, IOB2-constrained decoding), and
* **plain**: the usual HF token-classification recipe with the same student: first-subword
  labels, lr 5e-4, 20 epochs, batch 16, no dev set, per-word argmax,

and scores both with strict entity-level, overlap and token-level F1 (per type and macro).
Prints a table beside the paper's numbers and writes ``benchmarks/results/ner_biospecies.json``.

    python benchmarks/ner_biospecies.py [--folds 5] [--run-folds N] [--variants raw,normalised]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from adaptlab.data.formats.conll import record_to_tokens, tags_to_spans
from adaptlab.data.records import Record, Span
from adaptlab.data.splits import split_dev
from adaptlab.data.words import word_offsets
from adaptlab.ie.models import resolve_student
from adaptlab.ie.ner import NERPredictor, train_ner
from adaptlab.metrics.spans import ner_report
from adaptlab.synth.schema import preset_schema
from adaptlab.tuning.encoder_fit import EncoderTrainerSettings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "biospecies" / "NER_Biospecies_data.txt"
RESULTS = ROOT / "benchmarks" / "results" / "ner_biospecies.json"
TYPES = ["BREEDING", "FEEDING", "HABITAT", "SPECIES"]
BIOSPECIES_CLAUSES = preset_schema("biospecies").clause_grammar()  # the clause rules of its repair
# Atuhurra et al. 2024, Table (NER, per type and "average"); the paper does not say which F1.
PAPER = {
    "BERT": {"macro": 0.9327},
    "BioBERT": {"macro": 0.9354},
    "PubMedBERT": {"macro": 0.9414},
}
OURS = EncoderTrainerSettings(num_train_epochs=15, learning_rate=2e-4, per_device_train_batch_size=16,
                              warmup_steps=0.1, early_stopping_patience=4, progress=False)


def load_variant(normalise: bool) -> tuple[list[Record], list[Record], dict]:
    """Repaired records, the sequences repair would drop as unrepairable (scored separately), report."""
    from adaptlab.data.repair import repair_file

    options = {"normalise_boundaries": normalise, "first_section": "amphibians", "grammar": BIOSPECIES_CLAUSES}
    records, report = repair_file(DATA, **options)
    everything, _ = repair_file(DATA, drop_unrepairable=False, **options)
    kept = {r.meta["id"] for r in records}
    return records, [r for r in everything if r.meta["id"] not in kept], report.to_json()


def convention_of(record: Record) -> str:
    """'inside' / 'outside' when all of a record's clauses follow one preposition convention, else 'mixed'."""
    found = {c for c in record.meta.get("conventions", []) if c in ("inside", "outside")}
    return found.pop() if len(found) == 1 else "mixed" if found else "n/a"


def error_analysis(gold: list[Record], predicted: list[Record]) -> dict:
    """Strict/token macro F1 of pooled out-of-fold predictions per original boundary convention."""
    groups: dict[str, tuple[list, list]] = {}
    for g, p in zip(gold, predicted):
        bucket = groups.setdefault(convention_of(g), ([], []))
        bucket[0].append(g)
        bucket[1].append(p)
    out = {}
    for name, (g, p) in sorted(groups.items()):
        report = summarise(ner_report(g, p, labels=TYPES))
        out[name] = {"records": len(g), "strict_macro": report["strict"]["macro"],
                     "token_macro": report["token"]["macro"], "strict": report["strict"]}
    return out


def folds_of(records: list[Record], k: int, seed: int) -> list[list[int]]:
    """Indices per fold; records with identical text share a fold."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r.text, []).append(i)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    folds: list[list[int]] = [[] for _ in range(k)]
    for n, key in enumerate(keys):
        folds[n % k].extend(groups[key])
    return folds


def summarise(report: dict) -> dict:
    out = {}
    for mode in ("strict", "overlap", "token"):
        out[mode] = {t: report[mode]["per_type"].get(t, {}).get("f1", 0.0) for t in TYPES}
        out[mode]["macro"] = report[mode]["macro"]["f1"]
        out[mode]["micro"] = report[mode]["micro"]["f1"]
    return out


def plain_hf_recipe(train: list[Record], tests: list[list[str]], work: Path, seed: int) -> list[list[Record]]:
    """The usual HF token-classification recipe, written out as users copy it from the docs.

    It reads the same repaired data in CoNLL form (the words and IOB2 tags that
    ``adaptlab data convert x.jsonl x.conll`` writes), labels first subwords, trains with lr 5e-4,
    20 epochs, batch 16, linear decay without warm-up and no dev set, and tags by per-word argmax.
    """
    from datasets import Dataset
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(seed)
    student = resolve_student("minilm")
    columns = [record_to_tokens(r) for r in train]
    labels = sorted({t for _, tags in columns for t in tags})
    label2id = {t: i for i, t in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(student)

    def encode(tokens: list[str], tags: list[str] | None):
        enc = tokenizer(tokens, is_split_into_words=True, truncation=True, max_length=256)
        previous, ids = None, []
        for w in enc.word_ids():
            ids.append(-100 if w is None or w == previous or tags is None else label2id[tags[w]])
            previous = w
        enc["labels"] = ids
        return enc

    train_ds = Dataset.from_list([dict(encode(t, g)) for t, g in columns])
    model = AutoModelForTokenClassification.from_pretrained(
        student, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    args = TrainingArguments(output_dir=str(work), learning_rate=5e-4, num_train_epochs=20,
                             per_device_train_batch_size=16, save_strategy="no", report_to="none",
                             seed=seed, disable_tqdm=True, logging_strategy="no")
    Trainer(model=model, args=args, train_dataset=train_ds,
            data_collator=DataCollatorForTokenClassification(tokenizer)).train()
    model.eval()

    def tag(text: str) -> Record:
        offsets = word_offsets(text)
        tokens = [text[s:e] for s, e in offsets]
        enc = tokenizer(tokens, is_split_into_words=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            best = model(**enc).logits[0].argmax(-1).tolist()
        tags, seen = ["O"] * len(tokens), set()
        for pos, w in enumerate(enc.word_ids()):
            if w is not None and w not in seen:
                seen.add(w)
                tags[w] = labels[best[pos]]
        spans = [Span(offsets[a][0], offsets[b - 1][1], label) for a, b, label in tags_to_spans(tags)]
        return Record(text, spans)

    return [[tag(text) for text in texts] for texts in tests]


def run_fold(train: list[Record], tests: list[list[Record]], recipe: str, work: Path, seed: int):
    """Train on ``train``; return (fold row with timing, predictions for each list in ``tests``)."""
    started = time.perf_counter()
    epochs = None
    texts = [[r.text for r in test] for test in tests]
    if recipe == "adaptlab":
        fit, dev = split_dev(train, 0.1, seed)
        result = train_ner(fit, dev, resolve_student("minilm"), OURS.model_copy(update={"seed": seed}), work)
        predictor = NERPredictor(result.model_dir)
        predictions = [predictor.predict(t) if t else [] for t in texts]
        epochs = result.history[-1].get("epoch") if result.history else None
    else:
        predictions = plain_hf_recipe(train, texts, work, seed)
    seconds = time.perf_counter() - started
    scores = summarise(ner_report(tests[0], predictions[0], labels=TYPES))
    return {"seconds": round(seconds, 1), "epochs": epochs, **scores}, predictions


def mean_std(rows: list[dict]) -> dict:
    out = {}
    for mode in ("strict", "overlap", "token"):
        out[mode] = {}
        for key in TYPES + ["macro", "micro"]:
            values = [r[mode][key] for r in rows]
            out[mode][key] = {"mean": statistics.fmean(values),
                              "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    out["seconds"] = {"mean": statistics.fmean(r["seconds"] for r in rows), "max": max(r["seconds"] for r in rows)}
    return out


def print_table(results: dict) -> None:
    print("\nNER on biospecies, mean +- std over folds (F1)")
    header = f"{'variant':<11}{'recipe':<10}{'level':<9}" + "".join(f"{t:>16}" for t in TYPES + ["macro"])
    print(header + f"{'s/fold':>9}")
    for variant, by_recipe in results["variants"].items():
        for recipe, res in by_recipe.items():
            s = res["summary"]
            for mode in ("strict", "overlap", "token"):
                cells = "".join(f"{s[mode][k]['mean']:>10.4f}+-{s[mode][k]['std']:.3f}" for k in TYPES + ["macro"])
                print(f"{variant:<11}{recipe:<10}{mode:<9}{cells}{s['seconds']['mean']:>9.0f}")
    print("\nStrict / token macro F1 of pooled out-of-fold predictions by the record's original boundary convention,"
          "\nand on the sequences repair drops as unrepairable (mean over fold models):")
    for variant, by_recipe in results["variants"].items():
        for recipe, res in by_recipe.items():
            groups = ", ".join(f"{name} ({g['records']}) {g['strict_macro']:.3f}/{g['token_macro']:.3f}"
                               for name, g in res["by_convention"].items())
            hard = res["unrepairable_sequences"]
            extra = ""
            if hard:
                extra = (f"; unrepairable ({hard['records']}) "
                         f"{hard['strict_macro_mean']:.3f}/{hard['token_macro_mean']:.3f}")
            print(f"  {variant:<11}{recipe:<10}{groups}{extra}")
    print("paper (type of F1 not stated): " + ", ".join(f"{m} {v['macro']:.4f}" for m, v in PAPER.items()))


def recipe_entry(rows: list[dict], gold: list[Record], predicted: list[Record], unrepairable: list[Record],
                 unrepairable_predictions: list[list[Record]]) -> dict:
    scores = [summarise(ner_report(unrepairable, p, labels=TYPES)) for p in unrepairable_predictions]
    return {
        "folds": rows,
        "summary": mean_std(rows),
        "by_convention": error_analysis(gold, predicted),
        "unrepairable_sequences": {
            "records": len(unrepairable),
            "strict_macro_mean": statistics.fmean(s["strict"]["macro"] for s in scores),
            "token_macro_mean": statistics.fmean(s["token"]["macro"] for s in scores),
        } if unrepairable else None,
    }


def write_results(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--run-folds", type=int, default=None, help="run only the first N folds")
    parser.add_argument("--variants", default="raw,normalised")
    parser.add_argument("--recipes", default="adaptlab,plain")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--merge", action="store_true",
                        help="keep the other variants/recipes already in --output (same folds and seed)")
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"data not found at {DATA}; this benchmark needs ../shared/data", file=sys.stderr)
        return 2

    results: dict = {"data": str(DATA), "folds": args.folds, "seed": args.seed, "student": "all-MiniLM-L6-v2",
                     "ours_config": OURS.model_dump(),
                     "plain_config": {"learning_rate": 5e-4, "epochs": 20, "batch_size": 16},
                     "paper": PAPER, "variants": {}, "repair": {}}
    if args.merge and Path(args.output).exists():
        previous = json.loads(Path(args.output).read_text())
        if (previous["folds"], previous["seed"]) != (args.folds, args.seed):
            print("--merge needs the same --folds and --seed as the results it extends", file=sys.stderr)
            return 2
        results["variants"], results["repair"] = previous["variants"], previous["repair"]
    for variant in args.variants.split(","):
        records, unrepairable, repair = load_variant(variant == "normalised")
        folds = folds_of(records, args.folds, args.seed)
        results["repair"][variant] = repair
        results["variants"].setdefault(variant, {})
        for recipe in args.recipes.split(","):
            rows, pooled_gold, pooled_pred, hard_preds = [], [], [], []
            for k, test_idx in enumerate(folds[: args.run_folds or args.folds]):
                held = set(test_idx)
                train = [r for i, r in enumerate(records) if i not in held]
                test = [records[i] for i in test_idx]
                with tempfile.TemporaryDirectory() as work:
                    row, (predicted, hard) = run_fold(train, [test, unrepairable], recipe, Path(work), args.seed + k)
                rows.append({"fold": k, "train": len(train), "test": len(test), **row})
                pooled_gold += test
                pooled_pred += predicted
                hard_preds.append(hard)
                print(f"[{variant} {recipe} fold {k}] strict macro {row['strict']['macro']:.4f} "
                      f"token macro {row['token']['macro']:.4f} ({row['seconds']:.0f}s)", flush=True)
                # after every fold, so a stopped run keeps what it measured ("folds" says how many)
                results["variants"][variant][recipe] = recipe_entry(rows, pooled_gold, pooled_pred, unrepairable,
                                                                    hard_preds)
                write_results(results, Path(args.output))
    print_table(results)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
