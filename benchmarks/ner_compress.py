"""Compression of the NER student by distillation: a 3-layer student from the 6-layer MiniLM teacher.

Data: the biospecies NER file, repaired and boundary-normalised (as in ``ner_biospecies.py``), one fixed seeded
80/20 split by text (identical texts never straddle it); 10% of the training part is held out as dev (early
stopping, best epoch, and the choice of alpha and T). The test split is read only to score the final models.

* **teacher**: the packaged all-MiniLM-L6-v2 (6 layers) fine-tuned with the ``ner train`` defaults;
* **student, no KD**: layers 0, 2, 4 of the teacher, its embeddings and head (``strategy.distill.init_layers``,
  as DistilBERT did), fine-tuned on the gold labels alone (``alpha: 0``), same defaults;
* **student, KD**: the same student trained with ``strategy.distill`` (KD on the training texts), one run per
  (alpha, T) of ``--grid``; the run with the best dev strict macro F1 is the one scored on test.

Reported: strict and token macro F1 on test, and CPU inference throughput (sentences/s) through
``adaptlab.ie.ner.NERPredictor`` on the test texts, batch 32, one thread count for every model (``--threads``),
a warm-up pass excluded, the models timed back to back in each of ``--rounds`` rounds; the speed-up is the median
over rounds of the within-round ratio (see :func:`throughput`). Targets: the KD student keeps >= 97% of the
teacher's strict macro F1 at >= 1.8x its throughput. Writes ``benchmarks/results/ner_compress.json``.

    python benchmarks/ner_compress.py [--seed 13] [--grid 0.5:2,0.9:2,0.9:4] [--threads 2] [--work DIR]

``--work DIR`` keeps the trained models there and reuses every finished one when run again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import ner_biospecies
from adaptlab.data.splits import split_dev
from adaptlab.ie.models import resolve_student
from adaptlab.ie.ner import NERPredictor, train_ner
from adaptlab.metrics.spans import ner_report
from adaptlab.tuning.encoder_fit import EncoderTrainerSettings
from adaptlab.tuning.strategies import StrategyBlock
from ner_biospecies import TYPES, load_variant, summarise
from tables import targets_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ner_compress.json"
KEEP = [0, 2, 4]
BATCH = 32


def scores(model_dir: Path, records: list) -> dict:
    predicted = NERPredictor(model_dir, device="cpu").predict([r.text for r in records], batch_size=BATCH)
    return summarise(ner_report(records, predicted, labels=TYPES))


def train_arm(name: str, block: dict, fit: list, dev: list, seed: int, work: Path) -> dict:
    """Train one model (or reuse a finished one in ``work``) and score it on dev."""
    done = work / name / "arm.json"
    if done.is_file():
        print(f"{name}: reusing {done.parent}", flush=True)
        return json.loads(done.read_text())
    print(f"training {name} ...", flush=True)
    settings = EncoderTrainerSettings(seed=seed, progress=False)  # the `ner train` defaults
    started = time.perf_counter()
    result = train_ner(fit, dev, resolve_student("minilm"), settings, work / name,
                       strategy=StrategyBlock.model_validate(block))
    arm = {"arm": name, "strategy": block, "model_dir": str(result.model_dir),
           "epochs": max((row.get("epoch") or 0 for row in result.history), default=0),
           "train_seconds": round(result.train_seconds, 1), "total_seconds": round(time.perf_counter() - started, 1),
           "layers": json.loads((result.model_dir / "config.json").read_text())["num_hidden_layers"],
           "dev": scores(result.model_dir, dev)["strict"]["macro"], "distill": result.strategies.get("distill")}
    done.write_text(json.dumps(arm, indent=2) + "\n")
    print(f"{name}: dev strict macro F1 {arm['dev']:.4f} after {arm['train_seconds']}s", flush=True)
    return arm


def throughput(model_dirs: dict[str, Path], texts: list[str], rounds: int) -> dict[str, dict]:
    """Sentences per second of each model through NERPredictor on CPU, batch 32: a warm-up pass each, then
    ``rounds`` rounds in which every model tags every text once (in turn, the order reversed every other round).

    Per model: the median rate, every round's rate, and the speed-up over the first model (the teacher) as the
    median over rounds of the ratio *within* a round. On a shared machine the load can change several-fold
    within seconds; two models timed back to back see nearly the same load, so the within-round ratio holds where
    the ratio of the medians does not (two runs of the same student differed by 25% in median rate).
    """
    predictors = {name: NERPredictor(path, device="cpu") for name, path in model_dirs.items()}
    for predictor in predictors.values():
        predictor.predict(texts, batch_size=BATCH)
    rates: dict[str, list[float]] = {name: [] for name in predictors}
    for index in range(rounds):
        for name in list(predictors)[::-1 if index % 2 else 1]:
            started = time.perf_counter()
            predictors[name].predict(texts, batch_size=BATCH)
            rates[name].append(len(texts) / (time.perf_counter() - started))
    base = rates[next(iter(rates))]
    return {name: {"median": round(statistics.median(r), 2), "rounds": [round(x, 2) for x in r],
                   "speedup": round(statistics.median(mine / theirs for mine, theirs in zip(r, base)), 3)}
            for name, r in rates.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--grid", default="0.5:2,0.9:2,0.9:4", help="KD runs as alpha:T, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for every model")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds of throughput per model")
    parser.add_argument("--data", type=Path, default=ner_biospecies.DATA, help="the biospecies NER file")
    parser.add_argument("--work", type=Path, default=None, help="keep (and reuse) the trained models here")
    args = parser.parse_args(argv)
    ner_biospecies.DATA = args.data
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    records, _, _ = load_variant(normalise=True)
    train, test = split_dev(records, 0.2, args.seed)
    fit, dev = split_dev(train, 0.1, args.seed)
    grid = [(float(a), float(t)) for a, t in (pair.split(":") for pair in args.grid.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        teacher = train_arm("teacher", {}, fit, dev, args.seed, work)
        student = {"teacher": teacher["model_dir"], "init_layers": KEEP}
        plain = train_arm("student-no-kd", {"distill": {**student, "alpha": 0.0}}, fit, dev, args.seed, work)
        kd_runs = [train_arm(f"student-kd-a{alpha:g}-T{t:g}", {"distill": {**student, "alpha": alpha,
                                                                           "temperature": t}},
                             fit, dev, args.seed, work) for alpha, t in grid]
        chosen = max(kd_runs, key=lambda arm: arm["dev"])  # first of the best on dev
        arms = {"teacher": teacher, "student-no-kd": plain, "student-kd": chosen}
        for arm in arms.values():
            arm["test"] = scores(Path(arm["model_dir"]), test)
        speed = throughput({name: Path(arm["model_dir"]) for name, arm in arms.items()}, [r.text for r in test],
                           args.rounds)
    for name, arm in arms.items():
        arm["sentences_per_second"] = speed[name]
    load_after = os.getloadavg()

    teacher_f1 = teacher["test"]["strict"]["macro"]
    table = Table(title=f"NER compression, biospecies (normalised), fixed 80/20 split (seed {args.seed}), "
                        f"CPU {args.threads} threads")
    for column in ("model", "layers", "alpha", "T", "dev strict F1", "test strict F1", "test token F1",
                   "of teacher", "sent/s (median)", "speed-up (within rounds)"):
        table.add_column(column)
    for name, arm in arms.items():
        distill = arm["strategy"].get("distill", {})
        table.add_row(name, str(arm["layers"]), f"{distill.get('alpha', '-')}", f"{distill.get('temperature', '-')}",
                      f"{arm['dev']:.4f}", f"{arm['test']['strict']['macro']:.4f}",
                      f"{arm['test']['token']['macro']:.4f}", f"{arm['test']['strict']['macro'] / teacher_f1:.1%}",
                      f"{speed[name]['median']:.1f}", f"{speed[name]['speedup']:.2f}x")
    console = Console(width=150)
    console.print(table)
    ratio = chosen["test"]["strict"]["macro"] / teacher_f1
    speedup = speed["student-kd"]["speedup"]
    targets = [
        {"target": "KD student strict macro F1 >= 97% of the teacher's", "value": round(ratio, 4),
         "pass": ratio >= 0.97},
        {"target": "KD student throughput >= 1.8x the teacher's", "value": round(speedup, 2), "pass": speedup >= 1.8},
    ]
    console.print(targets_table(targets))
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "seed": args.seed, "teacher": "all-MiniLM-L6-v2 fine-tuned (ner train defaults)", "init_layers": KEEP,
        "split": "80/20 by text; dev = 10% of train", "records": {"fit": len(fit), "dev": len(dev), "test": len(test)},
        "settings": EncoderTrainerSettings(seed=args.seed, progress=False).model_dump(mode="json"),
        "grid": [{"alpha": a, "temperature": t} for a, t in grid],
        "kd_runs_dev": {arm["arm"]: arm["dev"] for arm in kd_runs}, "chosen_on_dev": chosen["arm"],
        "throughput": {"device": "cpu", "threads": args.threads, "batch_size": BATCH, "rounds": args.rounds,
                       "texts": len(test), "load_average_before": load_before, "load_average_after": load_after},
        "arms": {name: {k: v for k, v in arm.items() if k != "model_dir"} for name, arm in arms.items()},
        "targets": targets}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
