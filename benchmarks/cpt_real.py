"""Continual pretraining of a real model on CPU: SmolLM2-135M-Instruct on wildlife text, replay 0 and 0.1.

    python benchmarks/cpt_real.py [--steps 200] [--block-size 256] [--batch-size 1] [--replays 0,0.1]

What the tiny domain-instruct demo can only suggest, on a real instruct model: how much continual
pretraining on domain text gains on held-out domain text, how much it forgets on general text, what
replaying general text buys, and how much instruction following it costs (the loss the chat-vector
recipe exists to repair). Both runs use the package's own text (``resources/lm_demo``, written for
this project): wildlife paragraphs as the domain, everyday paragraphs as the general text.

For each replay ratio: ``adaptlab lm prepare`` (the same seed, so the same held-out documents) and
``adaptlab lm train`` (mode cpt, ``--steps`` optimizer steps of ``--batch-size`` blocks of
``--block-size`` tokens). Then ``adaptlab lm evaluate`` scores the base model and every CPT model on
held-out domain and general perplexity (lm-eval's rules), the wildlife cloze quiz and the
instruction-following probe. Both shipped texts are templated sentences, so their held-out documents
resemble the training ones; forgetting is therefore also measured on ``benchmarks/texts/
everyday_natural.txt`` (20 paragraphs of ordinary English written for this benchmark, never trained
on), as word perplexity, which does not depend on the tokenizer. The probe checks the chat format and the
stop at EOS; whether an answer stays on the question is ``probe_drift``: the share of the 16 finance answers
that bring in the wildlife text's words (``DOMAIN_WORDS``: its species and conservation words, none of which
occur in a probe prompt). Needs `make real-models`. Prints a table and writes benchmarks/results/cpt_real.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from adaptlab.models.gguf import resolve_model, smollm2_gguf
from adaptlab.recipes import lm_evaluate, lm_prepare, lm_train
from adaptlab.recipes.domain_instruct_demo import demo_resource
from adaptlab.runs import atomic_write_json

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results" / "cpt_real.json"
NATURAL_TEXT = BENCHMARKS / "texts" / "everyday_natural.txt"
COLUMNS = ("ppl_domain", "ppl_general", "ppl_natural", "wildlife_quiz_acc", "probe_stopped", "probe_chat_format",
           "probe_both", "probe_drift")
DOMAIN_WORDS = frozenset("""wild habitat conservation rangers poachers breeding species cub cubs calf calves pups
    panda pandas leopard leopards vaquita vaquitas gorilla gorillas whale whales tiger tigers orangutan orangutans
    turtle turtles kakapo krill squid antelopes gazelles sumatran hawksbill amur virunga himalayas rainforests
    savanna""".split())


def drifted(response: str) -> bool:
    """Whether a probe answer brings in the wildlife text's words (the probe asks about finance)."""
    return not DOMAIN_WORDS.isdisjoint(re.findall(r"[a-z]+", response.lower()))


def prepare(base: str, replay: float, args, output: Path) -> Path:
    cfg = lm_prepare.PrepareConfig.model_validate({
        "tokenizer": base, "block_size": args.block_size, "eval_documents": args.eval_documents,
        "replay_ratio": replay, "seed": 0, "output": str(output), "progress": False,
        "sources": [{"name": "wildlife", "path": str(demo_resource("domain.txt")), "role": "domain"},
                    {"name": "everyday", "path": str(demo_resource("general.txt")), "role": "general"}]})
    run, _ = lm_prepare.prepare(cfg)
    return run.path


def train(base: str, corpus: Path, args, output: Path) -> tuple[Path, dict, float]:
    cfg = lm_train.LMTrainConfig.model_validate({
        "mode": "cpt", "model": base, "data": str(corpus), "output": str(output),
        "eval_steps": max(1, args.steps // 3), "save_steps": args.steps, "keep_checkpoints": 1, "resume": "never",
        "training": {"learning_rate": args.lr, "warmup_steps": max(1, args.steps // 10), "max_steps": args.steps,
                     "per_device_train_batch_size": args.batch_size, "gradient_accumulation_steps": 1,
                     "bf16": False, "logging_steps": 10, "progress": True}})
    started = time.perf_counter()
    run, metrics = lm_train.train(cfg)
    return run.model, metrics, time.perf_counter() - started


def evaluate(models: dict[str, str], corpus: Path, output: Path) -> dict:
    cfg = lm_evaluate.LMEvalConfig.model_validate({
        "models": [{"name": name, "path": path} for name, path in models.items()],
        "perplexity": {"texts": {"domain": str(corpus / "text" / "eval_domain.txt"),
                                 "general": str(corpus / "text" / "eval_general.txt"),
                                 "natural": str(NATURAL_TEXT)}, "batch_size": 4},
        "mc": {"tasks": {"wildlife_quiz": str(demo_resource("domain_quiz.jsonl"))}, "batch_size": 8},
        "probe": {"prompts": "packaged:probe_prompts", "max_new_tokens": 96, "batch_size": 8,
                  "examples": 16},
        "device": "cpu", "output": str(output), "progress": True})
    _, metrics = lm_evaluate.evaluate(cfg)
    return metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--replays", default="0,0.1")
    parser.add_argument("--eval-documents", type=int, default=40, help="held-out documents per role")
    args = parser.parse_args()
    gguf = smollm2_gguf()
    if gguf is None:
        print("SmolLM2-135M-Instruct is not installed: run `make real-models`", file=sys.stderr)
        return 2
    console = Console(width=200)
    started = time.perf_counter()
    base = resolve_model(str(gguf))
    results: dict = {"command": " ".join(["python", *sys.argv]), "model": "SmolLM2-135M-Instruct (Q4_1 GGUF)",
                     "settings": vars(args), "machine": {"cpu_threads": torch.get_num_threads(),
                                                        "python": platform.python_version(),
                                                        "torch": torch.__version__}, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models, corpora = {"base": base}, []
        for replay in (float(r) for r in args.replays.split(",")):
            name = f"cpt-replay{replay:g}"
            corpus = prepare(base, replay, args, tmp / f"corpus-{replay:g}")
            corpora.append(corpus)
            model, metrics, seconds = train(base, corpus, args, tmp / name)
            models[name] = str(model)
            tokens = args.steps * args.batch_size * args.block_size
            results["runs"][name] = {"replay_ratio": replay, "train_seconds": round(seconds, 1),
                                     "train_tokens": tokens, "tokens_per_second": round(tokens / seconds, 1),
                                     "history": metrics.get("history"),
                                     **{k: v for k, v in metrics.items() if k.startswith("final_")}}
        held_out = {(c / "text" / "eval_domain.txt").read_text() + (c / "text" / "eval_general.txt").read_text()
                    for c in corpora}
        results["same_held_out_documents"] = len(held_out) == 1
        metrics = evaluate(models, corpora[0], tmp / "evaluate")
    for row in metrics["table"]:
        answers = metrics["models"][row["model"]]["probe"]["examples"]
        row["probe_drift"] = sum(drifted(a["response"]) for a in answers) / len(answers)
    results["table"] = metrics["table"]
    results["word_perplexity"] = {name: {text: p["word_perplexity"] for text, p in m["perplexity"].items()}
                                  for name, m in metrics["models"].items()}
    results["probe_examples"] = {name: m.get("probe", {}).get("examples") for name, m in metrics["models"].items()}
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    table = Table(title=f"SmolLM2-135M-Instruct, CPT {args.steps} steps x {args.batch_size} x {args.block_size} "
                        "tokens on CPU (lower ppl is better; acc and probe shares higher)")
    for column in ("model", *COLUMNS):
        table.add_column(column)
    for row in metrics["table"]:
        table.add_row(row["model"], *(f"{row.get(c):.4g}" if isinstance(row.get(c), float) else str(row.get(c))
                                      for c in COLUMNS))
    console.print(table)
    console.print(json.dumps({k: {x: v[x] for x in ("train_seconds", "tokens_per_second")}
                              for k, v in results["runs"].items()}))
    atomic_write_json(RESULTS, results)
    console.print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
