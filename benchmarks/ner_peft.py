"""PEFT parity on the NER student: LoRA r=8 against full fine-tuning, same data, same split, same run.

Data: the biospecies NER file, repaired and boundary-normalised (as in ``ner_biospecies.py``), one fixed seeded
80/20 split by text (identical texts never straddle it); 10% of the training part is held out for early stopping.
Both arms train the packaged all-MiniLM-L6-v2 through ``adaptlab.ie.ner.train_ner`` with the NER benchmark's
settings (15 epochs, early stopping patience 4, batch 16); only the learning rate differs, as LoRA needs a larger
one (full: 2e-4; LoRA: 1e-3, a common LoRA rate, chosen before looking at the test split). LoRA is
``strategy.peft`` with r=8, alpha 16, all linear layers, the classifier trained in full (``modules_to_save``).

Reported per arm: strict / token macro F1 on the 20% test split, trainable parameters and their share, wall
seconds per epoch and in total. Targets: LoRA within 0.01 strict macro F1 of full fine-tuning, with at most 5% of
the parameters trainable.

    python benchmarks/ner_peft.py [--seed 13] [--arms full,lora]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from adaptlab.data.splits import split_dev
from adaptlab.ie.models import resolve_student
from adaptlab.ie.ner import NERPredictor, train_ner
from adaptlab.metrics.spans import ner_report
from adaptlab.tuning.strategies import StrategyBlock
from ner_biospecies import OURS, TYPES, load_variant, summarise
from tables import targets_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ner_peft.json"
ARMS = {
    "full": ({}, 2e-4),
    "lora": ({"peft": {"method": "lora", "r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
                       "target_modules": "all-linear", "save": "merged"}}, 1e-3),
}


def run_arm(name: str, train: list, test: list, seed: int, work: Path) -> dict:
    block, learning_rate = ARMS[name]
    fit, dev = split_dev(train, 0.1, seed)
    settings = OURS.model_copy(update={"seed": seed, "learning_rate": learning_rate})
    started = time.perf_counter()
    result = train_ner(fit, dev, resolve_student("minilm"), settings, work / name,
                       strategy=StrategyBlock.model_validate(block))
    seconds = time.perf_counter() - started
    predicted = NERPredictor(result.model_dir).predict([r.text for r in test])
    scores = summarise(ner_report(test, predicted, labels=TYPES))
    epochs = max((row.get("epoch") or 0 for row in result.history), default=0) or settings.num_train_epochs
    peft = result.strategies.get("peft", {})
    return {"arm": name, "learning_rate": learning_rate, "strategy": block, "train_records": len(fit),
            "dev_records": len(dev), "test_records": len(test), "epochs": epochs,
            "train_seconds": round(result.train_seconds, 1),
            "seconds_per_epoch": round(result.train_seconds / epochs, 1),
            "total_seconds": round(seconds, 1), "trainable_parameters": peft.get("trainable_parameters"),
            "trainable_share": peft.get("trainable_share", 1.0), "strict": scores["strict"], "token": scores["token"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--arms", default="full,lora")
    args = parser.parse_args(argv)
    records, _, _ = load_variant(normalise=True)
    train, test = split_dev(records, 0.2, args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.arms.split(","):
            print(f"training {name} ...", flush=True)
            rows.append(run_arm(name, train, test, args.seed, Path(tmp)))
    table = Table(title=f"NER student, biospecies (normalised), fixed 80/20 split (seed {args.seed})")
    for column in ("arm", "lr", "strict macro F1", "token macro F1", "trainable", "share", "epochs", "s/epoch"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["arm"], f"{row['learning_rate']:g}", f"{row['strict']['macro']:.4f}",
                      f"{row['token']['macro']:.4f}", str(row["trainable_parameters"] or "all"),
                      f"{row['trainable_share']:.2%}", f"{row['epochs']:g}", f"{row['seconds_per_epoch']:.1f}")
    console = Console()
    console.print(table)
    by_arm = {row["arm"]: row for row in rows}
    targets = []
    if {"full", "lora"} <= by_arm.keys():
        gap = by_arm["full"]["strict"]["macro"] - by_arm["lora"]["strict"]["macro"]
        targets = [
            {"target": "LoRA strict macro F1 >= full - 0.01", "value": round(-gap, 4), "pass": gap <= 0.01},
            {"target": "LoRA trainable share <= 5%", "value": by_arm["lora"]["trainable_share"],
             "pass": by_arm["lora"]["trainable_share"] <= 0.05},
        ]
        console.print(targets_table(targets))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"seed": args.seed, "student": "all-MiniLM-L6-v2", "split": "80/20 by text",
                                   "settings": OURS.model_dump(mode="json"), "arms": rows, "targets": targets},
                                  indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
