"""FRACTAL on MultiSpanQA (several bag constructions, two paths) and QA-Feedback, beside the paper's numbers.

    python benchmarks/fractal_bench.py [--datasets multispanqa,qa_feedback] [--constructions paired,half_cropped,...]
        [--paths cv,command] [--seeds 0,1,2] [--folds 5] [--limit N] [--epochs 30] [--pairs]

**MultiSpanQA.** Each construction of :mod:`adaptlab.fractal.constructions` (``paired``: the loader's own
positives plus cropped negatives; ``half_cropped``: one bag per question, half of them cropped to negatives;
``positives_min`` / ``positives_avg``: every full context, bag label from MIN / AVG of its sentence labels) is
built once per seed (the seed also draws the construction's random part), and measured on two paths:

* ``cv``: ``adaptlab fractal evaluate`` (``--folds`` folds grouped by question, that seed): cosine, BagLoss,
  FRACTAL and supervised;
* ``command``: an 80/20 question-grouped split (fold 0 of 5, that seed); ``adaptlab fractal train`` on the 80%
  written *without* sentence labels (FRACTAL with the defaults; BagLoss with ``train.weights`` cosine and
  correlation 0 and ``train.prior_mix=false``), ``adaptlab fractal score`` on the 20%, AUC against their
  sentence labels; cosine is the question–sentence cosine of the same held-out sentences.

Every construction trains with the aggregation its label rule calls for (max bags: ``lse_max``, τ 0.1; min:
``softmin``; avg: ``avg``) and the paper's MultiSpanQA weights 0.8 / 0.1 / 0.1. Each number is the mean over
seeds of one seed's AUC (the fold mean on ``cv``), ± the std over seeds. Target per construction and path:
FRACTAL AUC >= max(cosine, BagLoss) + 0.02. On ``paired`` / ``cv`` the earlier targets are kept:
FRACTAL >= BagLoss + 0.03, FRACTAL >= 0.9 x supervised, FRACTAL training <= 120 s per fold.

**QA-Feedback** as before: ``fractal evaluate`` over all seeds (``softmin``, weights 0.7 / 0.2 / 0.1), all five
methods, beside the paper's Table 2 (Sentence-T5 features and official splits, so context, not a like-for-like
comparison). Its preference pairs are left out unless ``--pairs``.

Writes ``benchmarks/results/fractal_bench.json``; exits 1 if a target fails. Needs ../shared/data/fractal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from adaptlab.cli import main as adaptlab_cli
from adaptlab.fractal.bags import write_bags
from adaptlab.fractal.constructions import BAG_RULE, CONSTRUCTIONS
from adaptlab.fractal.datasets import load_multispanqa
from adaptlab.fractal.folds import grouped_kfold
from adaptlab.metrics.ranking import sentence_auc
from adaptlab.recipes.fractal import FractalDataConfig, FractalEvalConfig, evaluate, featurize
from adaptlab.runs import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "fractal"
RESULTS = ROOT / "benchmarks" / "results" / "fractal_bench.json"
PAPER = {  # sentence AUC-ROC, Table 2 of the paper
    "multispanqa": {"fractal": 0.693, "bagloss": 0.661, "supervised": 0.729},
    "qa_feedback": {"fractal": 0.532, "bagloss": 0.509, "supervised": 0.651},
}
AGGREGATION = {"max": "lse_max", "min": "softmin", "avg": "avg"}  # per bag label rule
MSQA_METHODS = ["cosine", "bagloss", "fractal", "supervised"]
MARGIN = 0.02
BAGLOSS_OVERRIDES = ["train.weights={cosine: 0, correlation: 0}", "train.prior_mix=false"]


def msqa_train_setup(construction: str, epochs: int) -> dict:
    return {"aggregation": AGGREGATION[BAG_RULE[construction]], "loss_preset": "multispanqa", "epochs": epochs}


def cv_path(construction: str, seed: int, args, tmp: Path) -> dict:
    """``fractal evaluate`` on one construction and seed: per-method fold-mean AUC, and FRACTAL's seconds per fold."""
    cfg = FractalEvalConfig.model_validate({
        "name": f"bench-{construction}", "data": "multispanqa", "data_root": str(DATA / "multispanqa"),
        "construction": construction, "data_seed": seed, "limit": args.limit, "cache_dir": args.cache_dir,
        "folds": args.folds, "seeds": [seed], "methods": MSQA_METHODS,
        "train": msqa_train_setup(construction, args.epochs), "output": str(tmp / f"cv-{construction}-{seed}"),
    })
    _, metrics = evaluate(cfg)
    summary = metrics["summary"]
    return {"auc_roc": {m: summary[m]["auc_roc"]["mean"] for m in MSQA_METHODS},
            "fractal_seconds_per_fold": summary["fractal"]["seconds"]["mean"], "bags": metrics["bags"],
            "sentences": metrics["sentences"], "data": metrics["data"]}


def run_cli(*args: str) -> None:
    code = adaptlab_cli([str(a) for a in args])
    if code != 0:
        raise RuntimeError(f"adaptlab {' '.join(map(str, args))} exited with {code}")


def command_path(construction: str, seed: int, args, tmp: Path) -> dict:
    """``fractal train`` on an 80% question-grouped split without sentence labels, ``fractal score`` on the rest."""
    bags = load_multispanqa(DATA / "multispanqa", limit=args.limit, seed=seed, construction=construction).bags
    train_idx, test_idx = grouped_kfold([b.group for b in bags], 5, seed)[0]
    work = tmp / f"command-{construction}-{seed}"
    work.mkdir()
    write_bags([replace(bags[i], sentence_labels=None) for i in train_idx], work / "train.jsonl")
    test_bags = [bags[i] for i in test_idx]
    write_bags(test_bags, work / "test.jsonl")
    labels = [label for bag in test_bags for label in bag.sentence_labels]
    setup = msqa_train_setup(construction, args.epochs)
    common = [f"cache_dir={args.cache_dir}", f"train.seed={seed}", *(f"train.{k}={v}" for k, v in setup.items())]
    auc = {}
    for method, extra in (("fractal", []), ("bagloss", BAGLOSS_OVERRIDES)):
        tic = time.perf_counter()
        run_cli("fractal", "train", "--data", work / "train.jsonl", "--output", work / method, *common, *extra)
        run_cli("fractal", "score", "--model", work / method, "--input", work / "test.jsonl",
                "--output", work / f"{method}.jsonl")
        scores = [s for line in (work / f"{method}.jsonl").read_text().splitlines()
                  for s in json.loads(line)["scores"]]
        auc[method] = sentence_auc(labels, scores)["auc_roc"]
        auc[f"{method}_seconds"] = round(time.perf_counter() - tic, 1)
    test_data, _ = featurize(FractalDataConfig(cache_dir=args.cache_dir), test_bags)
    auc["cosine"] = sentence_auc(labels, test_data.similarities.nan_to_num(0.0).tolist())["auc_roc"]
    return {"auc_roc": {m: auc[m] for m in ("cosine", "bagloss", "fractal")},
            "seconds": {m: auc[f"{m}_seconds"] for m in ("fractal", "bagloss")},
            "train_bags": len(train_idx), "test_bags": len(test_idx), "test_sentences": len(labels)}


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def summarise(per_seed: list[dict]) -> tuple[dict, dict]:
    methods = per_seed[0]["auc_roc"].keys()
    summary = {m: mean_std([run["auc_roc"][m] for run in per_seed]) for m in methods}
    baseline = max(summary["cosine"]["mean"], summary["bagloss"]["mean"])
    gap = summary["fractal"]["mean"] - baseline
    target = {"target": f"FRACTAL AUC >= max(cosine, BagLoss) + {MARGIN}", "value": round(gap, 4),
              "pass": gap >= MARGIN}
    return summary, target


def multispanqa(args, tmp: Path, console: Console) -> tuple[dict, list[dict]]:
    paths = {"cv": cv_path, "command": command_path}
    results: dict = {}
    targets: list[dict] = []
    for construction in args.constructions.split(","):
        results[construction] = {}
        for path in args.paths.split(","):
            tic = time.perf_counter()
            per_seed = [{"seed": seed, **paths[path](construction, seed, args, tmp)} for seed in args.seed_list]
            summary, target = summarise(per_seed)
            results[construction][path] = {"per_seed": per_seed, "summary": summary, "target": target,
                                           "seconds": round(time.perf_counter() - tic, 1)}
            targets.append({"construction": construction, "path": path, **target})
            console.print(f"{construction} / {path}: " + ", ".join(
                f"{m} {s['mean']:.4f} ± {s['std']:.4f}" for m, s in summary.items())
                + f"  ({'PASS' if target['pass'] else 'FAIL'} {target['value']:+.4f})")
    table = Table(title="MultiSpanQA: sentence AUC-ROC, mean ± std over seeds")
    for column in ("construction", "path", *MSQA_METHODS, "FRACTAL − max(cos, BagLoss)", "target"):
        table.add_column(column)
    for construction, by_path in results.items():
        for path, row in by_path.items():
            cells = [f"{row['summary'][m]['mean']:.4f} ± {row['summary'][m]['std']:.4f}" if m in row["summary"]
                     else "–" for m in MSQA_METHODS]
            table.add_row(construction, path, *cells, f"{row['target']['value']:+.4f}",
                          "PASS" if row["target"]["pass"] else "FAIL")
    console.print(table)
    return results, targets


def paired_cv_targets(paired_cv: dict) -> list[dict]:
    """The earlier targets on the project's own construction (cross-validation path)."""
    summary = paired_cv["summary"]
    fractal, bagloss, supervised = (summary[m]["mean"] for m in ("fractal", "bagloss", "supervised"))
    seconds = statistics.fmean(run["fractal_seconds_per_fold"] for run in paired_cv["per_seed"])
    return [
        {"target": "paired/cv: FRACTAL AUC >= BagLoss AUC + 0.03", "value": round(fractal - bagloss, 4),
         "pass": fractal >= bagloss + 0.03},
        {"target": "paired/cv: FRACTAL AUC >= 0.9 x supervised AUC", "value": round(fractal / supervised, 4),
         "pass": fractal >= 0.9 * supervised},
        {"target": "paired/cv: FRACTAL training <= 120 s per fold", "value": round(seconds, 1),
         "pass": seconds <= 120},
    ]


def qa_feedback(args, tmp: Path, console: Console) -> dict:
    setup = {"aggregation": "softmin", "loss_preset": "qa_feedback"}
    cfg = FractalEvalConfig.model_validate({
        "name": "bench-qa_feedback", "data": "qa_feedback", "data_root": str(DATA / "qa_feedback"),
        "limit": args.limit, "cache_dir": args.cache_dir, "folds": args.folds, "pairs": args.pairs,
        "seeds": args.seed_list, "train": {**setup, "epochs": args.epochs}, "output": str(tmp / "qa_feedback"),
    })
    tic = time.perf_counter()
    _, metrics = evaluate(cfg)
    table = Table(title="qa_feedback: sentence AUC-ROC (mean ± std over folds × seeds)")
    for column in ("method", "ours", "paper", "ours AUC-PR", "bag accuracy"):
        table.add_column(column)
    for method, row in metrics["summary"].items():
        table.add_row(method, f"{row['auc_roc']['mean']:.4f} ± {row['auc_roc']['std']:.4f}",
                      f"{PAPER['qa_feedback'].get(method, float('nan')):.3f}", f"{row['auc_pr']['mean']:.4f}",
                      f"{row['bag_accuracy']['mean']:.4f}")
    console.print(table)
    return {"setup": {**setup, "pairs": args.pairs}, "seconds": round(time.perf_counter() - tic, 1),
            **{k: metrics[k] for k in ("data", "bags", "sentences", "summary", "fractal_train_seconds_per_fold",
                                       "pairs")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="multispanqa,qa_feedback")
    parser.add_argument("--constructions", default=",".join(CONSTRUCTIONS))
    parser.add_argument("--paths", default="cv,command", help="cv (fractal evaluate), command (train -> score)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pairs", action="store_true", help="also train on QA-Feedback's preference pairs")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--limit", type=int, default=None, help="source records per dataset")
    parser.add_argument("--cache-dir", default=str(ROOT / ".adaptlab-cache" / "features"))
    args = parser.parse_args()
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    unknown = set(args.constructions.split(",")) - set(CONSTRUCTIONS)
    unknown |= set(args.paths.split(",")) - {"cv", "command"}
    if unknown:
        parser.error(f"unknown construction or path: {sorted(unknown)}")
    if not DATA.is_dir():
        print(f"evaluation data not found at {DATA}", file=sys.stderr)
        return 2
    console = Console(width=160)
    results: dict = {"command": " ".join(["python", *sys.argv]), "paper": PAPER, "datasets": {}, "targets": []}
    started = time.perf_counter()
    datasets = args.datasets.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        if "multispanqa" in datasets:
            constructions, targets = multispanqa(args, Path(tmp), console)
            results["datasets"]["multispanqa"] = {"paths": args.paths.split(","), "seeds": args.seed_list,
                                                  "folds": args.folds, "limit": args.limit,
                                                  "constructions": constructions}
            results["targets"] += targets
            if "cv" in constructions.get("paired", {}):
                results["targets"] += paired_cv_targets(constructions["paired"]["cv"])
        if "qa_feedback" in datasets:
            results["datasets"]["qa_feedback"] = qa_feedback(args, Path(tmp), console)
    for t in results["targets"]:
        where = f"{t['construction']}/{t['path']}: " if "construction" in t else ""
        console.print(f"{where}{t['target']}: {t['value']} {'PASS' if t['pass'] else 'FAIL'}")
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(RESULTS, results)
    console.print(f"wrote {RESULTS} in {results['total_seconds']} s")
    return 0 if all(t["pass"] for t in results["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
