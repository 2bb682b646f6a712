"""Few-shot text classification: adaptlab's ``strategy.fewshot`` vs the ``setfit`` package vs plain fine-tuning.

Data: ``../shared/data/fewshot`` (LABEL TEXT lines; see its README). Test sets: the official ones for SST-2
(``stsa.binary.test``) and TREC (``TREC.test.all``); for CR and SUBJ a fixed seeded 25% (the rest is the pool).
Training sets: ``--shots`` labelled examples per class drawn from the pool, ``--draws`` seeded draws each; every
arm trains on the same draws. Arms, all on the packaged all-MiniLM-L6-v2:

* **a** plain fine-tuning: ``cls train`` with no strategy (the classification student's defaults, no dev set);
* **b** ``setfit`` 1.2.0 with its defaults (``SetFitModel.from_pretrained`` + ``Trainer`` with default
  ``TrainingArguments``; only ``output_dir`` is moved from ``./checkpoints`` to a temporary folder);
* **c** ours: ``cls train`` with ``strategy.fewshot`` at its defaults;
* **d** ours with layer-wise learning-rate decay in the contrastive stage (``strategy.fewshot.lr_decay: 0.9``).

Each run is a fresh worker process (``--worker``), so its numbers are its own: accuracy on the test set;
``seconds``, the wall time from loading the model to having the test predictions (training, saving where the arm
saves, prediction; imports excluded); ``peak_rss_mb``, the worker's ``ru_maxrss`` at the end (so it includes
Python, torch and the arm's imports, reported alone as ``rss_after_imports_mb``). Finished runs are appended to
``results/fewshot_cls_runs.jsonl`` and skipped on restart, so an interrupted run continues where it stopped.

``--dev`` tunes without the test set: 500 sentences of each pool are held out as a dev set, draws come from the
rest with other seeds, and the runs go to ``results/fewshot_cls_dev_runs.jsonl``; ``--fewshot KEY=VALUE`` changes
arm c's ``strategy.fewshot`` settings there (recorded with each run).

    python benchmarks/fewshot_cls.py                     # everything: 4 sets x 2 shots x 10 draws x 4 arms
    python benchmarks/fewshot_cls.py --datasets cr --shots 8 --draws 1 --arms b,c     # a smoke run
    python benchmarks/fewshot_cls.py --data /path/to/shared/data/fewshot ...          # data elsewhere
    python benchmarks/fewshot_cls.py --dev --draws 2 --arms c --fewshot num_iterations=10
    python benchmarks/fewshot_cls.py --shots 8 --draws 1 --report    # tables and JSON from the cached runs only
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from worker_runs import add_run_arguments, read_cache, run_missing, served_worker

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "fewshot"
RESULTS = ROOT / "benchmarks" / "results"
DATASETS = {  # name: (pool file, official test file or None for a seeded 25% split)
    "cr": ("custrev.all", None),
    "sst2": ("stsa.binary.train", "stsa.binary.test"),
    "trec": ("TREC.train.all", "TREC.test.all"),
    "subj": ("subj.all", None),
}
ARMS = {
    "a": "plain fine-tuning (cls train, no strategy)",
    "b": "setfit 1.2.0, its defaults",
    "c": "ours: cls train, strategy.fewshot defaults",
    "d": "ours + strategy.fewshot.lr_decay 0.9",
}
TEST_FRACTION, SPLIT_SEED, DEV_SIZE = 0.25, 0, 500
SEED_OFFSET = {"test": 0, "dev": 10_000}  # dev draws never coincide with the benchmark's draws


# ------------------------------------------------------------------------------------------------ data

def read_label_text(path: Path) -> tuple[list[str], list[str]]:
    """``LABEL TEXT`` lines; two files hold Latin-1 bytes (TREC.train.all, subj.all), decoded line by line."""
    texts, labels = [], []
    for raw in path.read_bytes().splitlines():
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("latin-1")
        label, _, text = line.strip().partition(" ")
        if text:
            texts.append(text.strip())
            labels.append(label)
    return texts, labels


def load_split(name: str, split: str, data: Path = DATA
               ) -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]]:
    """``(pool, evaluation set)``: the test set, or with ``split="dev"`` 500 sentences held out of the pool."""
    pool_file, test_file = DATASETS[name]
    texts, labels = read_label_text(data / pool_file)
    if test_file:
        pool, test = (texts, labels), read_label_text(data / test_file)
    else:
        order = np.random.default_rng(SPLIT_SEED).permutation(len(texts))
        cut = round(TEST_FRACTION * len(texts))
        pool = ([texts[i] for i in order[cut:]], [labels[i] for i in order[cut:]])
        test = ([texts[i] for i in order[:cut]], [labels[i] for i in order[:cut]])
    if split == "test":
        return pool, test
    order = np.random.default_rng(SPLIT_SEED + 1).permutation(len(pool[0]))
    dev, rest = order[:DEV_SIZE], order[DEV_SIZE:]
    return ([pool[0][i] for i in rest], [pool[1][i] for i in rest]), ([pool[0][i] for i in dev],
                                                                      [pool[1][i] for i in dev])


def draw(labels: list[str], shots: int, draw_index: int, split: str) -> list[int]:
    """``shots`` pool indices per label (seed = draw + 100 shots, + 10,000 for dev), in a seeded shuffled order."""
    rng = np.random.default_rng(draw_index + 100 * shots + SEED_OFFSET[split])
    chosen = []
    for label in sorted(set(labels)):
        having = [i for i, name in enumerate(labels) if name == label]
        chosen.extend(rng.choice(having, size=shots, replace=False).tolist())
    return [chosen[i] for i in rng.permutation(len(chosen))]


def write_label_text(path: Path, texts: list[str], labels: list[str]) -> Path:
    path.write_text("".join(f"{label} {text}\n" for text, label in zip(texts, labels)), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ worker

def run_setfit(model_path: str, texts: list[str], labels: list[str], eval_texts: list[str], tmp: Path) -> list[str]:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(model_path)
    train_set = Dataset.from_dict({"text": texts, "label": [int(label) for label in labels]})
    Trainer(model=model, args=TrainingArguments(output_dir=str(tmp / "setfit")), train_dataset=train_set).train()
    return [str(int(p)) for p in model.predict(eval_texts, as_numpy=True)]


def run_cls(model_path: str, train_file: Path, eval_file: Path, strategy: dict, tmp: Path) -> float:
    from adaptlab.recipes.cls import ClsEvalConfig, ClsTrainConfig, evaluate, train

    config = ClsTrainConfig(name="fewshot-bench", model=model_path, train=str(train_file), dev=None,
                            dev_fraction=0, output=str(tmp / "run"), format="label-text",
                            training={"progress": False}, strategy=strategy)
    run, _ = train(config)
    report, _ = evaluate(ClsEvalConfig(model=str(run.path / "model"), data=str(eval_file), format="label-text"))
    return float(report["accuracy"])


def arm_strategy(arm: str, overrides: dict[str, Any]) -> dict | None:
    return {"a": {}, "c": {"fewshot": {**overrides, "progress": False}},
            "d": {"fewshot": {**overrides, "lr_decay": 0.9, "progress": False}}}.get(arm)


def worker(spec: dict) -> dict:
    """One run in this process: train the arm on the draw, score it, report time and memory."""
    import psutil
    import torch

    if spec["arm"] == "b":
        import datasets  # noqa: F401
        import setfit  # noqa: F401
    else:
        import adaptlab.recipes.cls  # noqa: F401
    from adaptlab.ie.models import resolve_student

    rss_after_imports = psutil.Process().memory_info().rss / 2**20
    (pool_texts, pool_labels), (eval_texts, eval_labels) = load_split(spec["dataset"], spec["split"],
                                                                      Path(spec["data"]))
    chosen = draw(pool_labels, spec["shots"], spec["draw"], spec["split"])
    texts, labels = [pool_texts[i] for i in chosen], [pool_labels[i] for i in chosen]
    model_path = resolve_student("minilm")
    with tempfile.TemporaryDirectory(prefix="fewshot-bench-") as folder:
        tmp = Path(folder)
        train_file = write_label_text(tmp / "train.txt", texts, labels)
        eval_file = write_label_text(tmp / "eval.txt", eval_texts, eval_labels)
        started = time.perf_counter()
        if spec["arm"] == "b":
            predicted = run_setfit(model_path, texts, labels, eval_texts, tmp)
            accuracy = float(np.mean([p == g for p, g in zip(predicted, eval_labels)]))
        else:
            accuracy = run_cls(model_path, train_file, eval_file, arm_strategy(spec["arm"], spec["overrides"]), tmp)
        seconds = time.perf_counter() - started
    return {**spec, "accuracy": accuracy, "seconds": round(seconds, 2), "train_examples": len(texts),
            "eval_examples": len(eval_texts), "rss_after_imports_mb": round(rss_after_imports),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "torch_threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------------------ driver

def run_key(run: dict) -> tuple:
    """What identifies a run in the cache (not where the data was read from)."""
    return (run["split"], run["dataset"], run["shots"], run["draw"], run["arm"],
            json.dumps(run["overrides"], sort_keys=True))


def stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "median": statistics.median(values), "max": max(values)}


def same_draws(runs: list[dict], arms: list[str]) -> list[dict]:
    """The runs of the draws that every arm finished: arms are only compared on the same training sets."""
    finished: dict[tuple, set] = {}
    for run in runs:
        finished.setdefault((run["dataset"], run["shots"], run["draw"]), set()).add(run["arm"])
    return [run for run in runs if finished[(run["dataset"], run["shots"], run["draw"])] >= set(arms)]


def summarise(runs: list[dict]) -> list[dict]:
    """Per (dataset, shots, arm): accuracy mean ± std over draws (sample std), seconds, peak RSS."""
    cells: dict[tuple, list[dict]] = {}
    for run in runs:
        cells.setdefault((run["dataset"], run["shots"], run["arm"]), []).append(run)
    return [{"dataset": d, "shots": s, "arm": a, "draws": len(group),
             "accuracy": stats([r["accuracy"] for r in group]), "seconds": stats([r["seconds"] for r in group]),
             "process_seconds": stats([r["process_seconds"] for r in group]),
             "peak_rss_mb": stats([r["peak_rss_mb"] for r in group]),
             "rss_after_imports_mb": stats([r["rss_after_imports_mb"] for r in group])}
            for (d, s, a), group in sorted(cells.items())]


def targets(cells: list[dict], datasets: list[str]) -> list[dict]:
    """At 8 per class, averaged over ``datasets``: ours (c) vs setfit (b) and vs plain fine-tuning (a)."""
    by = {(c["dataset"], c["arm"]): c for c in cells if c["shots"] == 8}

    def average(arm: str, key: str, field: str = "mean") -> float | None:
        values = [by[(d, arm)][key][field] for d in datasets if (d, arm) in by]
        return statistics.fmean(values) if len(values) == len(datasets) else None

    ours, setfit, plain = (average(arm, "accuracy") for arm in "cba")
    rows = []
    if ours is not None and setfit is not None:
        rows.append({"target": "ours >= setfit + 0.02 (mean accuracy, 8/class)",
                     "value": f"{ours:.4f} vs {setfit:.4f}", "pass": ours >= setfit + 0.02})
        if all(by[(d, arm)]["draws"] > 1 for d in datasets for arm in "bc"):  # one draw has no spread to compare
            std_ours, std_setfit = average("c", "accuracy", "std"), average("b", "accuracy", "std")
            rows.append({"target": "ours std <= setfit std (mean over sets)",
                         "value": f"{std_ours:.4f} vs {std_setfit:.4f}", "pass": std_ours <= std_setfit})
        time_ours, time_setfit = average("c", "seconds"), average("b", "seconds")
        rows.append({"target": "ours seconds <= setfit seconds (mean per run)",
                     "value": f"{time_ours:.1f} vs {time_setfit:.1f}", "pass": time_ours <= time_setfit})
    if ours is not None and plain is not None:
        rows.append({"target": "ours >= plain fine-tuning + 0.10", "value": f"{ours:.4f} vs {plain:.4f}",
                     "pass": ours >= plain + 0.10})
    return rows


def projection(cells: list[dict]) -> dict[str, Any]:
    """Hours for the full benchmark (4 sets x 2 shots x 10 draws x 4 arms) from the measured worker times."""
    measured = {(c["dataset"], c["shots"], c["arm"]): c["process_seconds"]["mean"] for c in cells}
    per_arm = {arm: statistics.fmean(v for (_, _, a), v in measured.items() if a == arm)
               for arm in ARMS if any(a == arm for (_, _, a) in measured)}
    if not per_arm:
        return {}
    fallback = statistics.fmean(per_arm.values())
    total = sum(measured.get((d, s, a), per_arm.get(a, fallback)) * 10
                for d in DATASETS for s in (8, 16) for a in ARMS)
    return {"seconds_per_run_by_arm": {a: round(v, 1) for a, v in per_arm.items()}, "full_run_hours": total / 3600,
            "note": "cells not measured are estimated from the arm's mean over the measured cells (16 per class "
                    "costs more than 8, so a projection from 8-shot runs is low)"}


def print_tables(cells: list[dict], rows: list[dict], projected: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from tables import cell, targets_table

    table = Table(title="few-shot classification, all-MiniLM-L6-v2 (accuracy mean ± std over draws)")
    for column in ("data", "per class", "arm", "draws", "accuracy", "s/run", "peak RSS MB"):
        table.add_column(column)
    for c in cells:
        table.add_row(c["dataset"], str(c["shots"]), f"{c['arm']}: {ARMS[c['arm']]}", str(c["draws"]),
                      cell(c["accuracy"]), f"{c['seconds']['mean']:.1f}", f"{c['peak_rss_mb']['mean']:.0f}")
    console = Console()
    console.print(table)
    if rows:
        console.print(targets_table(rows))
    if projected:
        console.print(f"projected full run: {projected['full_run_hours']:.1f} h "
                      f"(s/run by arm incl. worker start: {projected['seconds_per_run_by_arm']})")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value) if value[:1] in "-0123456789[{tfn" else value
    return overrides


def describe(spec: dict) -> str:
    return f"{spec['dataset']} {spec['shots']}/class draw {spec['draw']} arm {spec['arm']}"


def result_line(result: dict) -> str:
    return (f"{describe(result)}: accuracy {result['accuracy']:.4f}, {result['seconds']:.0f}s "
            f"({result['process_seconds']:.0f}s with worker start), peak RSS {result['peak_rss_mb']} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--shots", default="8,16")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--dev", action="store_true", help="tune on a dev set held out of the pool, not the test set")
    parser.add_argument("--fewshot", nargs="*", default=[], metavar="KEY=VALUE",
                        help="with --dev: strategy.fewshot settings of arms c and d")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the fewshot data folder (default {DATA})")
    add_run_arguments(parser)
    args = parser.parse_args()
    if served_worker(args, worker):
        return
    if args.fewshot and not args.dev:
        parser.error("--fewshot changes our settings; tune with --dev, never on the test set")
    from adaptlab.runs import progress_bar

    if not (args.data / "custrev.all").is_file():
        parser.error(f"no few-shot data in {args.data}; pass --data DIR (the shared data's fewshot folder)")
    split = "dev" if args.dev else "test"
    datasets, arms = args.datasets.split(","), args.arms.split(",")
    overrides = parse_overrides(args.fewshot)
    plan = [{"split": split, "dataset": d, "shots": int(s), "draw": k, "arm": a,
             "overrides": overrides if a in "cd" else {}, "data": str(args.data)}
            for d in datasets for s in args.shots.split(",") for k in range(args.draws) for a in arms]
    cache_path = RESULTS / f"fewshot_cls{'_dev' if args.dev else ''}_runs.jsonl"
    cache = read_cache(cache_path, run_key)
    missing = [spec for spec in plan if run_key(spec) not in cache]
    todo = [] if args.report else missing
    print(f"{len(plan)} runs planned, {len(plan) - len(missing)} already in {cache_path.name}, {len(todo)} to run")
    with progress_bar(enabled=bool(todo)) as progress:
        failures = run_missing(__file__, todo, cache, cache_path, run_key, args.jobs, describe=describe,
                               result_line=result_line, progress=progress)
    runs = same_draws([cache[run_key(spec)] for spec in plan if run_key(spec) in cache], arms)
    cells = summarise(runs)
    rows = targets(cells, datasets) if not args.dev and set(datasets) == set(DATASETS) else []
    projected = projection(cells)
    print_tables(cells, rows, projected)
    out = RESULTS / f"fewshot_cls{'_dev' if args.dev else ''}.json"
    out.write_text(json.dumps({
        "setup": {"model": "all-MiniLM-L6-v2 (packaged)", "split": split, "datasets": datasets,
                  "shots": args.shots, "draws": args.draws, "arms": {a: ARMS[a] for a in arms},
                  "fewshot_overrides": overrides, "test_fraction_cr_subj": TEST_FRACTION, "split_seed": SPLIT_SEED,
                  "timing": "seconds: load model -> test predictions, in a fresh worker per run (imports excluded)",
                  "memory": "peak_rss_mb: the worker's ru_maxrss at its end (includes Python + torch + imports)"},
        "cells": cells, "targets": rows, "projection": projected, "failures": failures, "runs": runs,
    }, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
