"""Continual-pretraining throughput: ``adaptlab lm train`` (mode cpt) against a plain HF Trainer run.

1. **Model.** GPU mode: a Qwen2.5-0.5B-shaped ``Qwen2ForCausalLM`` (hidden 896, 24 layers, 14 heads,
   2 KV heads, intermediate 4864, vocab 151936, tied embeddings: N = 494,032,768 parameters), random
   init (seeded, float32 weights; bf16 mixed precision), nothing downloaded. CPU mode (``--cpu``, or
   no CUDA): a tiny model of the same family (hidden 128, 4 layers, 4 heads, 2 KV heads,
   intermediate 512, vocab 8192). A word-level tokenizer with exactly ``vocab`` entries is written to
   a folder of its own, so that the recipe's vocabulary check passes without a real tokenizer.
2. **Data.** Random token documents (log-normal lengths, median ``seq/4``, 16 to ``4·seq`` tokens,
   EOS at the end) packed by :func:`adaptlab.lm.packing.pack_documents` into full ``seq``-token
   blocks and written as a prepared corpus (``data/train``, an empty ``data/eval_domain``, so no
   evaluation runs, ``data/manifest.json``), which ``adaptlab lm train`` reads as it would read the
   output of ``adaptlab lm prepare``. Both runs train on these same blocks.
3. **Runs** (``--run``, repeatable; default ``ours`` and ``plain``), each in its own subprocess, so that
   GPU memory, compile caches and imported kernels do not leak from one to the next:
   - ``ours``: :func:`adaptlab.recipes.lm_train.train` with an ``LMTrainConfig``: packed rows with
     per-document ``position_ids`` (no attention across documents), bf16, ``torch_compile``
     (``--compile``), Liger kernels (``--liger``), the attention kernel (``--attn``; ``auto`` =
     flash_attention_2 when ``flash_attn`` is installed, else sdpa), other settings at the recipe's
     defaults. ``ours KEY=VALUE ...`` overrides any LMTrainConfig key, dotted as on the command line
     (``ours training.use_liger_kernel=false attn_implementation=sdpa``).
   - ``plain``: ``transformers.Trainer`` with ``TrainingArguments`` defaults except
     ``per_device_train_batch_size``, ``bf16``, ``max_steps`` and ``save_strategy="no"`` (nothing is
     written; saving would happen after the timed steps anyway). The same blocks are fed as ordinary
     causal-LM rows (``input_ids``, ``labels = input_ids``, no position ids): documents attend to each
     other, as with HF's ``group_texts``. ``plain KEY=VALUE ...`` overrides any TrainingArguments
     field, e.g. ``plain torch_compile=true`` or ``plain use_liger_kernel=true``.
   ``--repeats N`` runs every configuration N times, alternating the order; summaries use medians.
4. **Timing.** A ``TrainerCallback`` synchronises the device and reads the clock at the end of
   optimizer step ``w`` (``--warmup``) and of the last step ``T`` (``--steps``). Compilation, kernel
   autotuning, the first data loading and everything after the last step (saving) are outside.
   ``tokens/s = (T - w) · batch · grad_accum · seq / seconds``; every position of a block counts. Also
   recorded: each step's wall time (``median step`` tokens/s = tokens per step / the median timed step,
   which shrugs off steps slowed by other work on a shared machine; on a GPU these per-step clocks are not
   synchronised) and the worker's CPU seconds over the timed steps (``tokens/CPU-s``).
   The recipe builds its Trainer itself, so the callback reaches it through transformers'
   ``trainer.DEFAULT_CALLBACKS`` inside the ours worker process (the plain run passes it directly).
5. **MFU** = tokens/s · F / peak, with the per-token training FLOPs F = 6·N + 12·L·d·seq (the PaLM
   convention: 6N for the matrix multiplications of forward and backward with N counting the tied
   embedding once, plus causal attention over the full ``seq`` context, although packed documents
   attend over less). Peak: ``--peak-tflops``, else by GPU name: H100 and H200 989 TFLOP/s (dense bf16),
   A100 312. **Peak memory** = ``torch.cuda.max_memory_allocated`` at the last step (GPU only).

Targets: every run finishes; on GPU, ours (the first ``ours`` run) reaches MFU >= 0.50. The CPU mode
reports tokens/s of both and the ratios ours / plain (the recipe's overhead: per-document masks, its
callbacks), nothing more; no MFU, no memory.

    python benchmarks/cpt_throughput.py                       # GPU: 0.5B model, seq 2048, batch 8, 50 steps
    python benchmarks/cpt_throughput.py --no-compile --liger false --run ours --run "plain torch_compile=true"
    python benchmarks/cpt_throughput.py --cpu                 # tiny model, 2 repeats interleaved
    python benchmarks/cpt_throughput.py --cpu --dry-run       # 3 steps, nothing written unless --output

Prints tables, writes benchmarks/results/cpt_throughput.json (GPU) or cpt_throughput_cpu.json (CPU),
exits 1 if a target fails and 2 on a usage error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import transformers
import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from tables import targets_table  # noqa: E402

RESULTS = {"gpu": ROOT / "benchmarks" / "results" / "cpt_throughput.json",
           "cpu": ROOT / "benchmarks" / "results" / "cpt_throughput_cpu.json"}
QWEN25_05B = {"vocab_size": 151936, "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "intermediate_size": 4864, "max_position_embeddings": 32768,
              "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
TINY = {"vocab_size": 8192, "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 512, "tie_word_embeddings": True}
DEFAULTS = {"gpu": {"steps": 50, "warmup": 10, "seq": 2048, "repeats": 1, "run_timeout": 1800},
            "cpu": {"steps": 24, "warmup": 4, "seq": 256, "repeats": 2, "run_timeout": 900}}
PEAK_TFLOPS_BY_GPU = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks
TARGET_MFU = 0.50
PAD_ID, EOS_ID = 0, 1
console = Console(width=150)


# ---------------------------------------------------------------------------------------------- formulas


def parameter_count(config: Any) -> int:
    """N: parameters of the causal LM built from ``config`` on the meta device (a tied embedding counts once)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once


def flops_per_token(parameters: int, layers: int, hidden: int, seq: int) -> float:
    """Training FLOPs per token: ``6·N + 12·L·d·seq`` (matmuls forward + backward, plus causal attention)."""
    return 6.0 * parameters + 12.0 * layers * hidden * seq


def model_flops_utilization(tokens_per_second: float, flops: float, peak_tflops: float) -> float:
    """MFU = tokens/s · FLOPs per token / peak FLOP/s."""
    return tokens_per_second * flops / (peak_tflops * 1e12)


def peak_tflops_for(gpu_name: str) -> float | None:
    """Dense bf16 peak of a known GPU (by a name such as 'NVIDIA H100 80GB HBM3'), else None."""
    return next((peak for key, peak in PEAK_TFLOPS_BY_GPU.items() if key in gpu_name.upper()), None)


# ------------------------------------------------------------------------------------- model and data


def write_model(path: Path, tokenizer_path: Path, shape: dict[str, Any], seq: int, seed: int) -> Any:
    """A seeded random Qwen2 causal LM saved to ``path``, and a word-level tokenizer of exactly ``vocab_size`` ids.

    The tokenizer has a folder of its own: beside the model's config.json, AutoTokenizer would load it as a
    Qwen2Tokenizer, which adds an unknown token of its own (one id more than the embedding has rows).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**{"max_position_embeddings": seq, **shape}, pad_token_id=PAD_ID, eos_token_id=EOS_ID,
                         bos_token_id=None)
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).save_pretrained(path)
    vocab = {"<|pad|>": PAD_ID, "<|eos|>": EOS_ID, **{f"t{i}": i for i in range(2, config.vocab_size)}}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<|pad|>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<|pad|>", eos_token="<|eos|>")
    tokenizer.save_pretrained(tokenizer_path)
    return config


def random_documents(rng: np.random.Generator, tokens: int, seq: int, vocab: int) -> list[list[int]]:
    """Documents of random ids in [2, vocab) ending in EOS, log-normal lengths (median seq/4, 16..4·seq)."""
    docs, total = [], 0
    while total < tokens:
        length = int(np.clip(rng.lognormal(np.log(seq / 4), 1.0), 16, 4 * seq))
        docs.append([*rng.integers(2, vocab, length - 1).tolist(), EOS_ID])
        total += length
    return docs


def write_prepared_corpus(root: Path, tokenizer_dir: Path, rows: int, seq: int, vocab: int, seed: int) -> dict:
    """``rows`` full packed blocks as a prepared-corpus directory (see adaptlab.lm.prepared); returns the counts."""
    from adaptlab.lm.packing import pack_documents
    from adaptlab.lm.prepared import FORMAT_VERSION, MANIFEST, packed_features

    docs = random_documents(np.random.default_rng(seed), (rows + 1) * seq, seq, vocab)
    blocks, stats = pack_documents(docs, seq, split_across_blocks=True)
    blocks = [row for row in blocks if len(row["input_ids"]) == seq][:rows]
    datasets.Dataset.from_list(blocks, features=packed_features()).save_to_disk(str(root / "data" / "train"))
    empty = datasets.Dataset.from_dict({name: [] for name in ("input_ids", "position_ids", "labels")},
                                       features=packed_features())
    empty.save_to_disk(str(root / "data" / "eval_domain"), num_shards=1)  # 0 shards would not load back
    (root / "text").mkdir(parents=True)
    (root / "text" / "eval_domain.txt").write_text("\n", encoding="utf-8")
    splits = {"train": {"rows": len(blocks), "tokens": len(blocks) * seq}, "eval_domain": {"rows": 0, "tokens": 0}}
    manifest = {"format_version": FORMAT_VERSION, "created_by": "benchmarks/cpt_throughput.py",
                "tokenizer": str(tokenizer_dir), "block_size": seq, "split_across_blocks": True, "splits": splits}
    (root / "data" / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return {"blocks": len(blocks), "block_size": seq, "packing": stats.as_dict()}


# ------------------------------------------------------------------------ worker: one run, own process


def step_timer(warmup: int, cuda: bool) -> Any:
    """A TrainerCallback that times optimizer steps ``warmup+1 .. max_steps`` (synchronised at both ends)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.step_ends: list[float] = []
            self.train_begin = self.timed_from = self.timed_to = None
            self.cpu_from = self.cpu_to = None
            self.rows_per_step = 0
            self.peak_memory_bytes = self.peak_reserved_bytes = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.train_begin = time.perf_counter()
            self.rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size

        def on_step_end(self, args, state, control, **kwargs):
            boundary = state.global_step in (warmup, state.max_steps)
            if boundary and cuda:
                torch.cuda.synchronize()
            now = time.perf_counter()
            self.step_ends.append(now)
            if state.global_step == warmup:
                self.timed_from, self.cpu_from = now, time.process_time()
            if state.global_step == state.max_steps:
                self.timed_to, self.cpu_to = now, time.process_time()
                if cuda:
                    self.peak_memory_bytes = torch.cuda.max_memory_allocated()
                    self.peak_reserved_bytes = torch.cuda.max_memory_reserved()

    return StepTimer()


def run_ours(spec: dict, timer: Any) -> dict:
    import transformers.trainer

    from adaptlab.config import set_dotted, validate_config
    from adaptlab.recipes.lm_train import LMTrainConfig, train

    transformers.trainer.DEFAULT_CALLBACKS.append(timer)  # train() builds the Trainer itself
    settings = {"name": "cpt-bench", "mode": "cpt", "model": spec["model"], "tokenizer": spec["tokenizer"],
                "data": spec["corpus"], "output": spec["output"], "attn_implementation": spec["attn"],
                "resume": "never",
                "training": {"max_steps": spec["steps"], "per_device_train_batch_size": spec["batch_size"],
                             "bf16": spec["cuda"], "torch_compile": spec["compile"],
                             "use_liger_kernel": spec["liger"],
                             "gradient_checkpointing": spec["gradient_checkpointing"], "progress": False}}
    for key, value in spec["overrides"].items():  # dotted keys, as on the command line: training.seed=1
        set_dotted(settings, key, value)
    cfg = validate_config(LMTrainConfig, settings)
    _, metrics = train(cfg)
    return {"resolved": {k: metrics[k] for k in ("bf16", "liger", "torch_compile")} | {
                "attn_implementation": cfg.attn_implementation,
                "gradient_checkpointing": cfg.training.gradient_checkpointing}}


def run_plain(spec: dict, timer: Any) -> dict:
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    blocks = datasets.load_from_disk(str(Path(spec["corpus"]) / "data" / "train")).select_columns(["input_ids"])
    blocks = blocks.map(lambda batch: {"labels": batch["input_ids"]}, batched=True)
    settings = {"output_dir": spec["output"], "per_device_train_batch_size": spec["batch_size"],
                "bf16": spec["cuda"], "max_steps": spec["steps"], "save_strategy": "no", **spec["overrides"]}
    args = TrainingArguments(**settings)
    model = AutoModelForCausalLM.from_pretrained(spec["model"])
    trainer = Trainer(model=model, args=args, train_dataset=blocks, callbacks=[timer])
    trainer.train()
    return {"resolved": {"bf16": args.bf16, "liger": args.use_liger_kernel, "torch_compile": args.torch_compile,
                         "attn_implementation": model.config._attn_implementation,
                         "gradient_checkpointing": args.gradient_checkpointing}}


def worker(spec_path: Path) -> int:
    """Run one configuration described by the JSON at ``spec_path``; write its result next to it."""
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    if spec["cuda"]:
        torch.cuda.reset_peak_memory_stats()
    timer = step_timer(spec["warmup"], spec["cuda"])
    started = time.perf_counter()
    details = (run_ours if spec["kind"] == "ours" else run_plain)(spec, timer)
    if timer.timed_to is None or timer.timed_from is None:
        raise RuntimeError(f"the step timer saw {len(timer.step_ends)} steps, expected {spec['steps']}")
    seconds = timer.timed_to - timer.timed_from
    step_seconds = [b - a for a, b in zip(timer.step_ends, timer.step_ends[1:])]  # steps 2..T
    timed_step_seconds = step_seconds[spec["warmup"] - 1:]  # steps warmup+1..T
    tokens_per_step = timer.rows_per_step * spec["seq"]
    tokens = (spec["steps"] - spec["warmup"]) * tokens_per_step
    result = {**details, "tokens_per_second": tokens / seconds, "timed_steps": spec["steps"] - spec["warmup"],
              "timed_seconds": round(seconds, 3), "tokens_per_step": tokens_per_step,
              "tokens_per_cpu_second": tokens / (timer.cpu_to - timer.cpu_from),
              "tokens_per_second_median_step": tokens_per_step / statistics.median(timed_step_seconds),
              "warmup_seconds": round(timer.timed_from - timer.train_begin, 2),
              "step_seconds": [round(x, 4) for x in step_seconds],
              "peak_memory_gb": _gigabytes(timer.peak_memory_bytes),
              "peak_reserved_gb": _gigabytes(timer.peak_reserved_bytes),
              "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "worker_seconds": round(time.perf_counter() - started, 1)}
    Path(spec["result"]).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


def _gigabytes(count: int | None) -> float | None:
    return None if count is None else round(count / 1e9, 2)


# ------------------------------------------------------------------------------------------ orchestration


def parse_run(text: str) -> tuple[str, dict[str, Any]]:
    """``"ours"`` / ``"plain torch_compile=true"`` -> (kind, overrides); values are read as YAML scalars."""
    kind, *pairs = text.split()
    if kind not in ("ours", "plain") or any("=" not in pair for pair in pairs):
        raise ValueError(f"--run {text!r}: expected 'ours' or 'plain', then KEY=VALUE pairs")
    return kind, {key: yaml.safe_load(value) for key, value in (pair.split("=", 1) for pair in pairs)}


def launch(label: str, spec: dict, workdir: Path, timeout_s: float) -> dict:
    """Run one configuration in a subprocess; the result, or ``error`` with the end of its log."""
    spec_path, log_path = workdir / f"{spec['id']}.json", workdir / f"{spec['id']}.log"
    spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log, console.status(f"{label} (repeat {spec['repeat']}) ..."):
        try:
            returncode = subprocess.run([sys.executable, __file__, "--worker", str(spec_path)], cwd=ROOT, env=env,
                                        stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            returncode = "timeout"
    base = {"label": label, "kind": spec["kind"], "repeat": spec["repeat"], "overrides": spec["overrides"],
            "wall_seconds": round(time.perf_counter() - started, 1)}
    result_path = Path(spec["result"])
    if returncode == 0 and result_path.is_file():
        return base | {"ok": True, **json.loads(result_path.read_text(encoding="utf-8"))}
    tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
    console.print(f"[red]{label} failed ({returncode}):[/red]\n" + "\n".join(tail), markup=True, highlight=False)
    return base | {"ok": False, "error": f"exit {returncode}", "log_tail": tail}


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment(cuda: bool) -> dict[str, Any]:
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "usable_cpus": len(os.sched_getaffinity(0)),
           "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__,
           **{name: package_version(name) for name in ("transformers", "accelerate", "datasets", "liger-kernel",
                                                       "flash-attn")},
           "cuda": torch.version.cuda, "gpu": None}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1),
                   cudnn=torch.backends.cudnn.version())
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=30).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def summarise(runs: list[dict], labels: list[str], flops: float, peak_tflops: float | None) -> list[dict]:
    """One row per configuration: medians over its finished repeats, and ratios to the first plain run."""
    rows = []
    for label in labels:
        done = [r for r in runs if r["label"] == label and r["ok"]]

        def median(key: str, ndigits: int = 1, done: list[dict] = done) -> float | None:
            return round(statistics.median(r[key] for r in done), ndigits) if done else None

        memory = [r["peak_memory_gb"] for r in done if r["peak_memory_gb"] is not None]
        tps = median("tokens_per_second")
        rows.append({"label": label, "finished": len(done), "repeats": sum(r["label"] == label for r in runs),
                     "tokens_per_second": tps,
                     "tokens_per_second_each": [round(r["tokens_per_second"], 1) for r in done],
                     "tokens_per_second_median_step": median("tokens_per_second_median_step"),
                     "tokens_per_cpu_second": median("tokens_per_cpu_second"),
                     "mfu": None if tps is None or peak_tflops is None
                     else round(model_flops_utilization(tps, flops, peak_tflops), 4),
                     "peak_memory_gb": max(memory) if memory else None,
                     "warmup_seconds": median("warmup_seconds", 2), "resolved": done[-1]["resolved"] if done else None})
    plain = next((row for row in rows if row["label"].split()[0] == "plain" and row["tokens_per_second"]), None)
    for row in rows:
        for key in ("tokens_per_second", "tokens_per_second_median_step", "tokens_per_cpu_second"):
            row[f"{key}_ratio_to_plain"] = round(row[key] / plain[key], 3) if plain and row[key] else None
    return rows


def evaluate(summary: list[dict], cuda: bool) -> list[dict]:
    targets = [(f"{row['label']}: every repeat finished", f"{row['finished']}/{row['repeats']}",
                row["finished"] == row["repeats"]) for row in summary]
    ours = next((row for row in summary if row["label"].split()[0] == "ours"), None)
    if cuda and ours is not None:
        targets.append((f"{ours['label']}: MFU >= {TARGET_MFU:.2f}", ours["mfu"],
                        ours["mfu"] is not None and ours["mfu"] >= TARGET_MFU))
    return [{"target": name, "value": value, "pass": bool(ok)} for name, value, ok in targets]


def short_settings(resolved: dict[str, Any]) -> str:
    """``bf16 compile liger attn=sdpa``: the switches that are on, and the attention kernel."""
    names = {"bf16": "bf16", "torch_compile": "compile", "liger": "liger", "gradient_checkpointing": "ckpt"}
    return " ".join([*(short for key, short in names.items() if resolved.get(key)),
                     f"attn={resolved.get('attn_implementation')}"])


def print_results(summary: list[dict], targets: list[dict], cuda: bool) -> None:
    table = Table(title="continual pretraining throughput (medians over repeats)")
    columns = ["run", "finished", "tokens/s", "each", "/ plain", "MFU", "peak GB", "median step", "/ plain (step)",
               "tokens/CPU-s", "/ plain (CPU)", "warm-up s", "settings"]
    drop = ("tokens/CPU-s", "/ plain (CPU)") if cuda else ("MFU", "peak GB")
    columns = [c for c in columns if c not in drop]
    for column in columns:
        table.add_column(column, justify="left" if column in ("run", "each", "settings") else "right")
    for row in summary:
        cells = {"run": row["label"], "finished": f"{row['finished']}/{row['repeats']}",
                 "tokens/s": row["tokens_per_second"],
                 "each": ", ".join(f"{x:.0f}" for x in row["tokens_per_second_each"]),
                 "/ plain": row["tokens_per_second_ratio_to_plain"],
                 "MFU": None if row["mfu"] is None else f"{row['mfu']:.1%}", "peak GB": row["peak_memory_gb"],
                 "median step": row["tokens_per_second_median_step"],
                 "/ plain (step)": row["tokens_per_second_median_step_ratio_to_plain"],
                 "tokens/CPU-s": row["tokens_per_cpu_second"],
                 "/ plain (CPU)": row["tokens_per_cpu_second_ratio_to_plain"], "warm-up s": row["warmup_seconds"],
                 "settings": short_settings(row["resolved"]) if row["resolved"] else None}
        table.add_row(*("-" if cells[c] is None else str(cells[c]) for c in columns))
    console.print(table)
    console.print(targets_table(targets))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="tiny model on the CPU (the default without CUDA)")
    parser.add_argument("--dry-run", action="store_true", help="3 steps (1 warm-up), 1 repeat; writes no results "
                        "file unless --output is given")
    parser.add_argument("--steps", type=int, help="optimizer steps per run (GPU 50, CPU 24)")
    parser.add_argument("--warmup", type=int, help="first steps left out of the timing (GPU 10, CPU 4)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per step (per device)")
    parser.add_argument("--seq", type=int, help="block size in tokens (GPU 2048, CPU 256)")
    parser.add_argument("--repeats", type=int, help="runs of each configuration, order alternating (GPU 1, CPU 2)")
    parser.add_argument("--run", action="append", dest="runs", metavar="SPEC",
                        help="'ours [KEY=VALUE ...]' (LMTrainConfig keys, dotted: training.seed=1) or "
                        "'plain [KEY=VALUE ...]' (TrainingArguments fields); repeatable; default: ours, plain")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="ours: torch_compile (default: on with CUDA, off on the CPU)")
    parser.add_argument("--liger", choices=["auto", "true", "false"], default="auto",
                        help="ours: Liger kernels (auto: when liger_kernel is installed)")
    parser.add_argument("--attn", default="auto", help="ours: attn_implementation (auto: flash_attention_2 when "
                        "flash_attn is installed, else sdpa; or sdpa, flex_attention, flash_attention_3, eager)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="ours: gradient checkpointing")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the GPU (known: H100, H200, A100)")
    parser.add_argument("--seed", type=int, default=0, help="model init and data")
    parser.add_argument("--run-timeout", type=float, help="seconds allowed per run (GPU 1800, CPU 900)")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory (model, data, runs)")
    parser.add_argument("--output", type=Path, help="results JSON (default: benchmarks/results/cpt_throughput"
                        "[_cpu].json)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        args.mode = "cpu" if args.cpu or not torch.cuda.is_available() else "gpu"
        for key, value in DEFAULTS[args.mode].items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        if args.dry_run:
            args.steps, args.warmup, args.repeats = 3, 1, 1
        try:
            args.run_kinds = [parse_run(text) for text in args.runs or ["ours", "plain"]]
        except ValueError as exc:
            parser.error(str(exc))
        if not 0 < args.warmup < args.steps:
            parser.error(f"--warmup must be between 1 and --steps - 1 (got {args.warmup}, steps {args.steps})")
    return args


def main(argv: list[str] | None = None) -> int:
    args, started = parse_args(argv), time.perf_counter()
    sys.path.insert(0, str(ROOT / "src"))  # benchmark this checkout's adaptlab (the GPU machine has it nowhere else)
    if args.worker is not None:
        return worker(args.worker)
    cuda = args.mode == "gpu"
    env = environment(cuda)
    peak = args.peak_tflops or (peak_tflops_for(env["gpu"]) if cuda else None)
    if cuda and peak is None:
        console.print(f"unknown GPU {env['gpu']!r}: pass its dense bf16 peak with --peak-tflops", style="red")
        return 2
    specs, kinds = args.runs or ["ours", "plain"], args.run_kinds
    attn = args.attn if args.attn != "auto" else (
        "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa")
    shape = QWEN25_05B if cuda else TINY
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="adaptlab-cpt-bench-", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        console.print(f"{args.mode} mode: writing a random {shape['hidden_size']}x{shape['num_hidden_layers']} "
                      f"Qwen2 model and {args.steps * args.batch_size} packed blocks of {args.seq} tokens to {workdir}")
        config = write_model(workdir / "model", workdir / "tokenizer", shape, args.seq, args.seed)
        parameters = parameter_count(config)
        flops = flops_per_token(parameters, config.num_hidden_layers, config.hidden_size, args.seq)
        data = write_prepared_corpus(workdir / "corpus", workdir / "tokenizer", args.steps * args.batch_size, args.seq,
                                     config.vocab_size, args.seed)
        for repeat in range(args.repeats):
            order = list(zip(specs, kinds))[:: 1 if repeat % 2 == 0 else -1]
            for label, (kind, overrides) in order:
                run_id = f"run{len(runs)}"
                spec = {"id": run_id, "kind": kind, "overrides": overrides, "repeat": repeat, "cuda": cuda,
                        "model": str(workdir / "model"), "tokenizer": str(workdir / "tokenizer"),
                        "corpus": str(workdir / "corpus"),
                        "output": str(workdir / run_id), "result": str(workdir / f"{run_id}.result.json"),
                        "steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size, "seq": args.seq,
                        "compile": cuda if args.compile is None else args.compile, "liger": yaml.safe_load(args.liger),
                        "attn": attn, "gradient_checkpointing": args.gradient_checkpointing}
                runs.append(launch(label, spec, workdir, args.run_timeout))
                if runs[-1]["ok"]:
                    console.print(f"{label} (repeat {repeat}): {runs[-1]['tokens_per_second']:.0f} tokens/s, "
                                  f"{runs[-1]['wall_seconds']} s in all")
    summary = summarise(runs, specs, flops, peak)
    targets = evaluate(summary, cuda)
    print_results(summary, targets, cuda)
    passed = all(t["pass"] for t in targets)
    results = {"command": shlex.join(["python", *sys.argv]), "mode": args.mode, "environment": env,
               "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "model": {"family": "Qwen2ForCausalLM", **shape, "parameters": parameters,
                         "flops_per_token": flops, "peak_tflops": peak},
               "data": data, "summary": summary, "runs": runs, "targets": targets, "all_pass": passed,
               "seconds": round(time.perf_counter() - started, 1)}
    output = args.output or (None if args.dry_run else RESULTS[args.mode])
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    verdict = "all targets pass" if passed else "SOME TARGETS FAIL"
    console.print(f"{verdict} in {results['seconds']} s" + (f"; wrote {output}" if output else ""))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
