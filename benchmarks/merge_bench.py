"""Streaming merge vs mergekit: task_arithmetic on three random ~1.1B-parameter bfloat16 Llama models.

1. **Inputs.** Three HF model directories (``config.json`` + 3 safetensors shards + index, no
   tokenizer) are written tensor by tensor with :class:`SafetensorsShardWriter`, so at most one
   float32 tensor of each model is in memory. Tensor names and shapes come from
   ``LlamaForCausalLM`` built on the meta device (TinyLlama's shape by default: hidden 2048,
   intermediate 5632, 22 layers, 32 heads, 4 KV heads, vocab 32000, untied head: 1.100B parameters).
   With a seeded generator: base θ_1 = σ·N(0,1) (norm weights 1 + σ·N(0,1)), σ = 0.02, and
   θ_k = θ_1 + ρσ·N(0,1) for k = 2, 3 (ρ = ``--noise``), each rounded once to bfloat16.
2. **Merge.** θ_out = θ_1 + 0.7·(θ_2 − θ_1) + 0.5·(θ_3 − θ_1), bfloat16 output, run as
   subprocesses one after the other by ``adaptlab merge cfg.yaml`` and by ``mergekit-yaml cfg.yaml OUT``
   in two configurations (``--mergekit-variants``):
   - ``mergekit-bf16``: ``dtype: bfloat16``, what users write. mergekit then does the arithmetic in
     bfloat16, weights included (0.7 becomes 0.69921875);
   - ``mergekit-fp32``: ``dtype: float32, out_dtype: bfloat16``, the same arithmetic as ours.
   All write output shards of the same size (``--out-shard-mb``, default: the input shard size), so
   none gains from a different layout. mergekit flags:
   - ``--out-shard-size``: its one memory knob on CPU, since it buffers a whole output shard (its
     default, 5B, would buffer the whole model);
   - ``--lazy-unpickle``: its other memory flag; it affects only .bin inputs, so it changes nothing here;
   - ``--no-copy-tokenizer`` (there is none), ``--no-write-model-card``, ``--quiet``.
   ``--low-cpu-memory``, ``--read-to-gpu`` and ``--cuda`` need an accelerator, and ``--async-write``
   trades memory for speed, so they keep their defaults. The time and memory targets compare ours
   with the best mergekit variant for each measure.
3. **Page cache.** Before every timed run: ``sync``, drop the page cache if this machine allows it
   (``/proc/sys/vm/drop_caches``; recorded in the JSON), then read every input file once, so each
   run starts with its inputs cached and the previous run's output written back (``--cold`` skips
   the reading: inputs come from disk). With ``--repeats N`` the order alternates (ours first in
   odd repeats); the summary uses the median of each tool's runs.
4. **Measures.** Wall time from spawn to exit; peak RSS of the process tree, polled every
   ``--poll-ms`` (sum over the process and all its descendants of RSS, and of RSS minus shared
   pages, which is the anonymous memory the process owns; RSS includes the memory-mapped input
   pages a process has touched); the kernel's ``ru_maxrss`` of the main process (``wait4``), which
   no polling can miss; its user + system CPU seconds (less disturbed than wall time by other work
   on the machine; the 1-minute load average before each run is recorded too); the exit code.
5. **Outputs.** Both outputs and the three inputs are read one tensor at a time, and the exact
   result r = θ_1 + Σ_k w_k (θ_k − θ_1) is computed in float64. Rounding errors scale with the
   operands, not with the result: where θ_1 and the weighted deltas nearly cancel, an output close
   to 0 may be off by thousands of its own ULPs after one bfloat16 (or even float32) rounding of an
   intermediate. So errors are measured in u = the bfloat16 spacing at s = max(|θ_1|, |θ_2|, |θ_3|,
   |r|) elementwise (u = 2^(⌊log2 s⌋−7)). **Equal within rounding** means: the same tensor names,
   shapes and dtypes, and |ours − mergekit's| ≤ u for every element. Also reported: the fraction of
   elements that are bit-identical and that are neighbouring bfloat16 values (ULP distance
   |ord(a) − ord(b)| ≤ 1, with ord(x) = bits for x ≥ 0 and −(bits & 0x7FFF) for x < 0), max |a − b|,
   and for each tool the fraction of elements equal to r correctly rounded (to nearest, ties to even)
   and its largest |out − r| / u.

Targets: every run exits 0; our peak tree RSS ≤ 0.25 × the lowest mergekit one; our wall time
≤ 0.8 × the fastest mergekit one; ours equal within rounding to mergekit-fp32 (the same arithmetic;
to mergekit-bf16 if that is the only variant run). Every file lives in one temporary directory
(under ``--workdir``, default /tmp, so inputs and outputs share a disk), removed at the end, on
failure and on Ctrl-C / SIGTERM.

    python benchmarks/merge_bench.py [--layers 22] [--repeats 1] [--mergekit-variants bf16,fp32] [--workdir /tmp]

Prints tables, writes benchmarks/results/merge_bench.json, exits 1 if any target fails.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from adaptlab.merge.tensors_io import ModelTensors, PlannedTensor, SafetensorsShardWriter, assign_shards
from adaptlab.runs import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "merge_bench.json"
BIN = Path(sys.executable).parent  # console scripts of this environment: adaptlab, mergekit-yaml
MIB = 1024 * 1024
INIT_STD = 0.02
SHARDS = 3
TARGET_RSS_RATIO, TARGET_TIME_RATIO = 0.25, 0.8
console = Console(width=140)


# -- inputs --------------------------------------------------------------------------------------------------

def llama_config(args: argparse.Namespace):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                       num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=args.vocab,
                       tie_word_embeddings=False, dtype="bfloat16", architectures=["LlamaForCausalLM"])


def tensor_layout(config) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """Names and shapes of LlamaForCausalLM's weights, from a model built on the meta device (no memory)."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return [(name, tuple(t.shape), torch.bfloat16) for name, t in model.state_dict().items()]


def three_shard_bytes(layout: list[tuple[str, tuple[int, ...], torch.dtype]]) -> int:
    """The smallest shard size that splits ``layout`` into at most 3 shards (3 unless it is tiny)."""
    plan = [PlannedTensor(name, shape, dtype) for name, shape, dtype in layout]
    total = sum(t.nbytes for t in plan)
    low, high = max(max(t.nbytes for t in plan), math.ceil(total / SHARDS)), total
    while low < high:  # the shard count only falls as the size grows
        middle = (low + high) // 2
        low, high = (low, middle) if len(assign_shards(plan, middle)) <= SHARDS else (middle + 1, high)
    return low


def write_random_models(dirs: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """Base = σ·N(0,1) (norms 1 + σ·N(0,1)); the others = base + ρσ·N(0,1); one tensor at a time."""
    started = time.perf_counter()
    config = llama_config(args)
    layout = tensor_layout(config)
    shard_bytes = three_shard_bytes(layout)
    generator = torch.Generator().manual_seed(args.seed)
    with ExitStack() as stack:
        writers = [stack.enter_context(SafetensorsShardWriter(d, layout, shard_bytes)) for d in dirs]
        with _progress() as bar:
            task = bar.add_task("writing 3 random models", total=len(layout))
            for name, shape, _ in layout:
                base = torch.randn(shape, generator=generator).mul_(INIT_STD)
                if len(shape) == 1:
                    base.add_(1.0)
                writers[0].write(name, base.to(torch.bfloat16))
                for writer in writers[1:]:
                    noise = torch.randn(shape, generator=generator).mul_(args.noise * INIT_STD)
                    writer.write(name, noise.add_(base).to(torch.bfloat16))
                    del noise
                bar.advance(task)
    for directory in dirs:
        config.save_pretrained(directory)
    params = sum(math.prod(shape) for _, shape, _ in layout)
    return {"seconds": round(time.perf_counter() - started, 1), "parameters": params, "tensors": len(layout),
            "bytes_per_model": params * 2, "shards_per_model": len(writers[0].shards),
            "input_shard_bytes_max": shard_bytes}


# -- running the tools ---------------------------------------------------------------------------------------

MERGEKIT_VARIANTS = {"bf16": {"dtype": "bfloat16"}, "fp32": {"dtype": "float32", "out_dtype": "bfloat16"}}


def write_configs(work: Path, inputs: list[Path], args: argparse.Namespace, out_shard_mb: int) -> dict[str, Path]:
    """One YAML per tool: ``adaptlab`` and ``mergekit-<variant>``."""
    base, second, third = (str(p) for p in inputs)
    configs: dict[str, dict[str, Any]] = {"adaptlab": {
        "name": "merge_bench", "method": "task_arithmetic", "base_model": base,
        "models": [{"model": second, "weight": args.weights[0]}, {"model": third, "weight": args.weights[1]}],
        "dtype": "bfloat16", "shard_size_mb": out_shard_mb, "progress": False}}
    for variant in args.mergekit_variants:
        configs[f"mergekit-{variant}"] = {
            "merge_method": "task_arithmetic", "base_model": base,
            "models": [{"model": second, "parameters": {"weight": args.weights[0]}},
                       {"model": third, "parameters": {"weight": args.weights[1]}}],
            **MERGEKIT_VARIANTS[variant]}
    paths = {}
    for tool, config in configs.items():
        paths[tool] = work / f"{tool}.yaml"
        paths[tool].write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return paths


def tool_command(tool: str, config: Path, output: Path, out_shard_mb: int) -> list[str]:
    if tool == "adaptlab":
        return [str(BIN / "adaptlab"), "merge", str(config), "--output", str(output)]
    return [str(BIN / "mergekit-yaml"), str(config), str(output), "--out-shard-size", str(out_shard_mb * MIB),
            "--lazy-unpickle", "--no-copy-tokenizer", "--no-write-model-card", "--quiet"]


def prepare_page_cache(files: list[Path], warm: bool) -> dict[str, Any]:
    """sync; drop the page cache if allowed; then (warm) read every input file once."""
    started = time.perf_counter()
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        dropped = True
    except OSError:
        dropped = False
    if warm:
        buffer = bytearray(16 * MIB)
        for file in files:
            with open(file, "rb", buffering=0) as handle:
                while handle.readinto(buffer):
                    pass
    return {"caches_dropped": dropped, "inputs_warmed": warm, "seconds": round(time.perf_counter() - started, 1)}


def run_measured(command: list[str], log_path: Path, poll_s: float) -> dict[str, Any]:
    """Run ``command``; wall time, peak tree RSS (polled), kernel ru_maxrss of the main process, exit code."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    peaks = {"rss": 0, "anon": 0, "samples": 0}
    done = threading.Event()
    load_before = os.getloadavg()[0]  # other work on the machine slows both tools; cpu_seconds much less so
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        poller = threading.Thread(target=_poll_tree, args=(process.pid, poll_s, done, peaks), daemon=True)
        poller.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
            seconds = time.perf_counter() - started
            process.returncode = os.waitstatus_to_exitcode(status)
        finally:
            done.set()
            if process.returncode is None:  # interrupted: do not leave a merge running
                process.kill()
                process.wait()
            poller.join()
    return {"seconds": round(seconds, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "exit_code": process.returncode, "load_average_before": round(load_before, 2),
            "peak_rss_mb": round(peaks["rss"] / MIB, 1), "peak_anon_rss_mb": round(peaks["anon"] / MIB, 1),
            "ru_maxrss_mb": round(usage.ru_maxrss / 1024, 1), "rss_samples": peaks["samples"]}


def _poll_tree(pid: int, poll_s: float, done: threading.Event, peaks: dict[str, int]) -> None:
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not done.is_set():
        rss = anon = 0
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for proc in tree:
            try:
                info = proc.memory_info()
            except psutil.NoSuchProcess:
                continue
            rss += info.rss
            anon += info.rss - info.shared
        peaks["rss"], peaks["anon"] = max(peaks["rss"], rss), max(peaks["anon"], anon)
        peaks["samples"] += 1
        done.wait(poll_s)


# -- comparing outputs ---------------------------------------------------------------------------------------

def bf16_ordinal(x: torch.Tensor) -> torch.Tensor:
    """bfloat16 bit patterns -> integers in value order (adjacent values differ by 1; ±0 -> 0)."""
    bits = x.contiguous().view(torch.int16).to(torch.int32)
    magnitude = bits & 0x7FFF
    return torch.where(bits < 0, -magnitude, magnitude)


def bf16_spacing(magnitude: torch.Tensor) -> torch.Tensor:
    """Distance between consecutive bfloat16 values at |x| (2^(⌊log2|x|⌋−7); 0 gives 2^−8, never needed)."""
    _, exponent = torch.frexp(magnitude)  # |x| in [2^(e-1), 2^e)
    return torch.ldexp(torch.ones_like(magnitude), exponent - 8)


def round_to_bf16(reference: torch.Tensor) -> torch.Tensor:
    """float64 -> nearest bfloat16 (ties to even), rounding once: float64 -> float32 -> bfloat16 rounds twice and
    errs when the float32 lands exactly halfway between two bfloat16 values, so such values are nudged back toward
    the float64 one first."""
    single = reference.to(torch.float32)
    halfway = (single.view(torch.int32) & 0xFFFF) == 0x8000
    inexact = single.to(torch.float64) != reference
    toward = torch.where(reference > single.to(torch.float64), torch.inf, -torch.inf).to(torch.float32)
    return torch.where(halfway & inexact, torch.nextafter(single, toward), single).to(torch.bfloat16)


CHUNK = 1 << 22  # elements per float64 slice in the comparison (bounds its memory)


def compare_outputs(outputs: dict[str, Path], inputs: list[Path], weights: list[float]) -> dict[str, Any]:
    """Tensor by tensor, in slices: each output vs the float64 reference, and ours vs each other output."""
    tools = list(outputs)  # ours first
    elements = 0
    vs_reference = {tool: {"correctly_rounded": 0, "max_error_operand_ulps": 0.0} for tool in tools}
    vs_ours = {tool: {"exactly_equal": 0, "within_1_output_ulp": 0, "max_abs_diff": 0.0,
                      "max_diff_operand_ulps": 0.0, "worst_tensor": None} for tool in tools[1:]}
    problems: list[str] = []
    with ExitStack() as stack:
        merged = {tool: stack.enter_context(ModelTensors(path)) for tool, path in outputs.items()}
        sources = [stack.enter_context(ModelTensors(path)) for path in inputs]
        names = sources[0].names()
        for tool, model in merged.items():
            missing, extra = sorted(set(names) - set(model.names())), sorted(set(model.names()) - set(names))
            if missing or extra:
                problems.append(f"{tool}: missing {missing[:5]}, unexpected {extra[:5]}")
        with _progress() as bar:
            task = bar.add_task("comparing outputs", total=len(names))
            for name in names:
                got = {tool: model.get(name) for tool, model in merged.items() if name in model}
                wrong = {tool: f"{tuple(t.shape)} {t.dtype}" for tool, t in got.items()
                         if t.shape != sources[0].shape(name) or t.dtype != torch.bfloat16}
                if wrong:
                    problems.append(f"{name}: expected {sources[0].shape(name)} bfloat16, got {wrong}")
                if wrong or len(got) < len(tools):  # a missing name is already in problems
                    bar.advance(task)
                    continue
                flat_inputs = [source.get(name).reshape(-1) for source in sources]
                flat = {tool: t.reshape(-1) for tool, t in got.items()}
                elements += flat_inputs[0].numel()
                for start in range(0, flat_inputs[0].numel(), CHUNK):
                    piece = slice(start, start + CHUNK)
                    compare_slice(name, {t: v[piece] for t, v in flat.items()}, [v[piece] for v in flat_inputs],
                                  weights, vs_reference, vs_ours)
                bar.advance(task)
    for stats in vs_reference.values():
        stats["correctly_rounded_fraction"] = stats.pop("correctly_rounded") / max(elements, 1)
    for stats in vs_ours.values():
        stats["differing_elements"] = elements - stats["exactly_equal"]
        stats["exactly_equal_fraction"] = stats.pop("exactly_equal") / max(elements, 1)
        stats["within_1_output_ulp_fraction"] = stats.pop("within_1_output_ulp") / max(elements, 1)
        stats["equal_within_rounding"] = not problems and stats["max_diff_operand_ulps"] <= 1
    return {"elements": elements, "problems": problems, "vs_float64_reference": vs_reference, "vs_ours": vs_ours}


def compare_slice(name: str, outs: dict[str, torch.Tensor], inputs: list[torch.Tensor], weights: list[float],
                  vs_reference: dict[str, dict], vs_ours: dict[str, dict]) -> None:
    base, *models = (t.to(torch.float64) for t in inputs)
    reference = base + sum(w * (m - base) for w, m in zip(weights, models))
    unit = bf16_spacing(torch.stack([t.abs() for t in (base, *models, reference)]).amax(dim=0))
    rounded = round_to_bf16(reference)
    ours_name, ours = next(iter(outs.items()))
    for tool, out in outs.items():
        stats = vs_reference[tool]
        stats["correctly_rounded"] += int((out == rounded).sum())
        error = float(((out.to(torch.float64) - reference).abs() / unit).max())
        stats["max_error_operand_ulps"] = max(stats["max_error_operand_ulps"], round(error, 4))
        if tool == ours_name:
            continue
        stats = vs_ours[tool]
        difference = (ours.to(torch.float64) - out.to(torch.float64)).abs()
        ulp_distance = (bf16_ordinal(ours) - bf16_ordinal(out)).abs()
        stats["exactly_equal"] += int((ulp_distance == 0).sum())
        stats["within_1_output_ulp"] += int((ulp_distance <= 1).sum())
        stats["max_abs_diff"] = max(stats["max_abs_diff"], float(difference.max()))
        worst = round(float((difference / unit).max()), 4)
        if worst > stats["max_diff_operand_ulps"]:
            stats["max_diff_operand_ulps"], stats["worst_tensor"] = worst, name


# -- orchestration -------------------------------------------------------------------------------------------

def run_benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    inputs = [work / f"model{k}" for k in (1, 2, 3)]
    generation = write_random_models(inputs, args)
    console.print(f"3 models × {generation['parameters'] / 1e9:.3f}B parameters written in {generation['seconds']} s")
    input_files = sorted(f for d in inputs for f in d.iterdir())
    out_shard_mb = args.out_shard_mb or math.ceil(generation["input_shard_bytes_max"] / MIB)
    configs = write_configs(work, inputs, args, out_shard_mb)
    runs: list[dict[str, Any]] = []
    outputs: dict[str, Path] = {}
    for repeat in range(args.repeats):
        order = list(configs) if repeat % 2 == 0 else list(configs)[::-1]
        for tool in order:
            if tool in outputs:  # keep only the latest output of each tool on disk
                shutil.rmtree(outputs.pop(tool))
            output = work / f"out-{tool}-{repeat}"
            command = tool_command(tool, configs[tool], output, out_shard_mb)
            cache = prepare_page_cache(input_files, warm=not args.cold)
            console.print(f"repeat {repeat + 1}/{args.repeats}: {tool}: {shlex.join(command)}")
            result = run_measured(command, work / f"{tool}-{repeat}.log", args.poll_ms / 1000)
            runs.append({"tool": tool, "repeat": repeat, "command": shlex.join(command), "page_cache": cache, **result})
            console.print(f"  {result['seconds']} s, peak RSS {result['peak_rss_mb']} MB, exit {result['exit_code']}")
            if result["exit_code"] != 0:
                log = (work / f"{tool}-{repeat}.log").read_text(encoding="utf-8", errors="replace")
                runs[-1]["log_tail"] = log[-3000:]
                console.print(f"[red]{tool} failed:[/red]\n{log[-3000:]}")
            else:
                outputs[tool] = output
    comparison = None
    if "adaptlab" in outputs and len(outputs) > 1:
        os.sync()
        comparison = compare_outputs({tool: outputs[tool] for tool in configs if tool in outputs}, inputs,
                                     args.weights)
    return {"generation": generation, "out_shard_mb": out_shard_mb, "configs": {
        tool: yaml.safe_load(path.read_text(encoding="utf-8")) for tool, path in configs.items()},
        "runs": runs, "comparison": comparison}


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    tools = list(results["configs"])
    summary: dict[str, Any] = {}
    for tool in tools:
        ok = [r for r in results["runs"] if r["tool"] == tool and r["exit_code"] == 0]
        summary[tool] = {key: statistics.median(r[key] for r in ok) if ok else None for key in
                         ("seconds", "cpu_seconds", "peak_rss_mb", "peak_anon_rss_mb", "ru_maxrss_mb")}
    all_ok = all(r["exit_code"] == 0 for r in results["runs"])
    ours, theirs = summary["adaptlab"], [summary[tool] for tool in tools[1:]]
    rss_ratio = ours["peak_rss_mb"] / min(t["peak_rss_mb"] for t in theirs) if all_ok else None
    time_ratio = ours["seconds"] / min(t["seconds"] for t in theirs) if all_ok else None
    for tool in tools[1:]:
        if all_ok:
            summary[tool]["ours_over_this"] = {"peak_rss": _round(ours["peak_rss_mb"] / summary[tool]["peak_rss_mb"]),
                                               "seconds": _round(ours["seconds"] / summary[tool]["seconds"])}
    same_math = "mergekit-fp32" if "mergekit-fp32" in tools else tools[1]
    equality = ((results["comparison"] or {}).get("vs_ours") or {}).get(same_math, {})
    summary["targets"] = [
        {"target": "every run exits 0", "value": all_ok, "pass": all_ok},
        {"target": f"peak RSS: ours / lowest mergekit <= {TARGET_RSS_RATIO}", "value": _round(rss_ratio),
         "pass": rss_ratio is not None and rss_ratio <= TARGET_RSS_RATIO},
        {"target": f"wall time: ours / fastest mergekit <= {TARGET_TIME_RATIO}", "value": _round(time_ratio),
         "pass": time_ratio is not None and time_ratio <= TARGET_TIME_RATIO},
        {"target": f"ours equal to {same_math} within rounding (max |diff| / u <= 1)",
         "value": equality.get("max_diff_operand_ulps"), "pass": bool(equality.get("equal_within_rounding"))},
    ]
    return summary


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def print_tables(results: dict[str, Any]) -> None:
    generation = results["generation"]
    runs = Table(title=f"task_arithmetic, 3 × {generation['parameters'] / 1e9:.3f}B-parameter bfloat16 models")
    for column in ("tool", "repeat", "wall s", "CPU s", "load before", "peak RSS MB (tree)", "peak anon MB",
                   "ru_maxrss MB", "exit"):
        runs.add_column(column, justify="left" if column == "tool" else "right")
    for r in results["runs"]:
        runs.add_row(r["tool"], str(r["repeat"] + 1), f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}",
                     f"{r['load_average_before']:.2f}", f"{r['peak_rss_mb']:.0f}",
                     f"{r['peak_anon_rss_mb']:.0f}", f"{r['ru_maxrss_mb']:.0f}", str(r["exit_code"]))
    console.print(runs)
    comparison = results["comparison"]
    if comparison:
        table = Table(title=f"outputs, {comparison['elements']:,} elements (u: bf16 spacing at the operands' scale)")
        for column in ("tool", "correctly rounded", "max |out - r| / u", "bit-identical to ours",
                       "<= 1 output ULP from ours", "max |diff| from ours", "max |diff| / u"):
            table.add_column(column, justify="left" if column == "tool" else "right")
        for tool, stats in comparison["vs_float64_reference"].items():
            pair = comparison["vs_ours"].get(tool)
            cells = ([f"{pair['exactly_equal_fraction']:.6f}", f"{pair['within_1_output_ulp_fraction']:.6f}",
                      f"{pair['max_abs_diff']:.3g}", f"{pair['max_diff_operand_ulps']:.3g}"] if pair else ["–"] * 4)
            table.add_row(tool, f"{stats['correctly_rounded_fraction']:.6f}", f"{stats['max_error_operand_ulps']:.3g}",
                          *cells)
        console.print(table)
        for problem in comparison["problems"]:
            console.print(f"[red]{problem}[/red]")
    targets = Table(title="targets")
    for column in ("target", "value", "result"):
        targets.add_column(column)
    for t in results["summary"]["targets"]:
        targets.add_row(t["target"], str(t["value"]), "[green]PASS[/green]" if t["pass"] else "[red]FAIL[/red]")
    console.print(targets)


def environment() -> dict[str, Any]:
    """Machine, versions, and the git commit plus sha256 of the merge sources (they change between commits)."""
    from importlib.metadata import version

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    sources = {str(path.relative_to(ROOT)): hashlib.sha256(path.read_bytes()).hexdigest()[:16]
               for path in sorted((ROOT / "src" / "adaptlab" / "merge").glob("*.py"))}
    return {"git_head": head, "merge_sources_sha256": sources, "cpus": os.cpu_count(),
            "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "platform": platform.platform(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            **{name: version(name) for name in ("mergekit", "safetensors", "transformers", "psutil")}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--noise", type=float, default=0.1, help="ρ: models 2, 3 = base + ρ·0.02·N(0,1)")
    parser.add_argument("--weights", type=float, nargs=2, default=[0.7, 0.5], help="task weights of models 2, 3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per tool; the order alternates")
    parser.add_argument("--mergekit-variants", default="bf16,fp32",
                        help="comma list: bf16 (dtype: bfloat16), fp32 (dtype: float32, out_dtype: bfloat16)")
    parser.add_argument("--out-shard-mb", type=int, default=None, help="output shard size for both; default: input's")
    parser.add_argument("--cold", action="store_true", help="do not pre-read the inputs (needs drop_caches to mean it)")
    parser.add_argument("--poll-ms", type=float, default=50.0)
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where the temporary directory goes")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.mergekit_variants = args.mergekit_variants.split(",")
    unknown = [v for v in args.mergekit_variants if v not in MERGEKIT_VARIANTS]
    if unknown or not args.mergekit_variants:
        parser.error(f"--mergekit-variants: unknown {unknown}; choose from {', '.join(MERGEKIT_VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below on SIGTERM too
    started = time.perf_counter()
    environment_info = environment()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="merge_bench-", dir=args.workdir))
    try:
        params = sum(math.prod(shape) for _, shape, _ in tensor_layout(llama_config(args)))
        needed, free = 5.2 * params * 2, shutil.disk_usage(work).free  # 3 inputs + 2 outputs + headroom
        if free < needed:
            console.print(f"[red]{work} has {free / 1e9:.1f} GB free; the benchmark needs {needed / 1e9:.1f} GB. "
                          "Use --workdir on a bigger disk or fewer --layers.[/red]")
            return 1
        results = run_benchmark(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {"command": shlex.join([sys.executable, *sys.argv]), "environment": environment_info,
               "parameters": {k: v for k, v in vars(args).items() if k != "results"}, **results}
    results["summary"] = summarise(results)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    print_tables(results)
    atomic_write_json(args.results, results)
    console.print(f"results: {args.results} ({results['total_seconds']} s in all)")
    return 0 if all(t["pass"] for t in results["summary"]["targets"]) else 1


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        console.print("interrupted; the temporary directory was removed")
        sys.exit(130)
