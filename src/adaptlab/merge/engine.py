"""Stream a merge tensor by tensor into a complete Hugging Face model directory.

For every output tensor, in order: read it from each input, convert to float32, apply the method
(:mod:`adaptlab.merge.methods`), round once to the output dtype, and append its bytes to the
current output shard (:class:`SafetensorsShardWriter`). Methods whose output entry depends only on
the same entry of the inputs (linear, task arithmetic, DARE) run on slices of ``SLICE_ELEMENTS``
entries, so memory stays at a few slices and the arithmetic stays in the CPU cache; DARE's random
masks are then seeded by tensor name and slice index. TIES (a global magnitude threshold) and
SLERP (a global angle) take whole tensors: a few float32 copies of the largest tensor. Never a
shard or a model.

The output is built in a hidden temporary directory beside ``output`` and renamed when it is
complete (config, tokenizer, generation config, chat template, shards + index,
``mergekit_config.yml`` (the merge in mergekit's dialect), ``merge_report.json``). ``output`` must not
exist and must not be an input; on any failure the temporary directory is removed, so a half-written
model never sits where the merged one belongs.

:func:`merge_models` is the building block (search candidates, the domain-instruct recipe);
:func:`merge_run` is the command (``adaptlab merge CONFIG``, ``merge chat-vector``): its output is the
merged model directory and, in the same place, the command's run directory, so the model loads from
``--output`` as always and ``config.yaml`` (the resolved merge config), ``metrics.json`` (the merge
report again: tensors, actions, dtype, seconds, peak memory, vocabulary, per-tensor change and RMS),
``report.html`` and ``log.txt`` sit beside its weights.
"""

from __future__ import annotations

import math
import os
import queue
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adaptlab.errors import ConfigError, ModelError, RunDirError
from adaptlab.merge import files
from adaptlab.merge.config import MergeConfig
from adaptlab.merge.mergekit_export import NotExpressible, to_mergekit_yaml
from adaptlab.merge.methods import METHODS, tensor_generator
from adaptlab.merge.plan import MergePlan, TensorPlan, build_plan
from adaptlab.merge.tensors_io import ModelTensors, SafetensorsShardWriter
from adaptlab.report.html import KeyValues, Paragraph, Section, Table
from adaptlab.runs import assembled, atomic_write_json, atomic_write_text, get_logger, open_run, progress_bar

SLICE_ELEMENTS = 1 << 20
MERGEKIT_CONFIG = "mergekit_config.yml"
QUEUED_WRITES = 8  # chunks waiting for the writer thread (a few MB)


class BackgroundWriter:
    """Hands chunks to a writer thread so that disk writes overlap reading and arithmetic.

    At most ``QUEUED_WRITES`` chunks wait; an error on the thread is raised in the caller at its
    next write or when the context ends, and nothing after it is written.
    """

    def __init__(self, writer: SafetensorsShardWriter):
        self._writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUED_WRITES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="adaptlab-merge-writer", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._writer.write_chunk(*item)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._error = exc

    def write_chunk(self, name: str, chunk: torch.Tensor) -> None:
        self._raise_error()
        self._queue.put((name, chunk))

    def write(self, name: str, tensor: torch.Tensor) -> None:
        self._raise_error()
        self._writer.check_shape(name, tensor)
        self._queue.put((name, tensor.reshape(-1)))

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc_info[0] is None:
            self._raise_error()


@dataclass
class MergeResult:
    output_dir: Path
    report: dict[str, Any]


def check_output(cfg: MergeConfig) -> Path:
    """The output directory, if it can be created without touching anything that exists."""
    if not cfg.output:
        raise ConfigError("no output directory: pass --output DIR or set 'output' in the config")
    output = Path(cfg.output).resolve()
    for path in cfg.all_models():
        if Path(path).exists() and Path(path).resolve() == output:
            raise RunDirError(f"output {cfg.output} is one of the inputs; a merge never writes over an input")
    if output.exists():
        raise RunDirError(f"merge output {output} already exists; adaptlab never overwrites it. "
                          "Choose another path or remove it yourself.")
    parent = output.parent
    if not parent.exists():
        parent.mkdir(parents=True)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write in {parent} (read-only); choose another output directory")
    return output


def merge_models(cfg: MergeConfig) -> MergeResult:
    """Run the merge described by ``cfg``; returns the output directory and the report."""
    started = time.perf_counter()
    output = check_output(cfg)
    with ExitStack() as stack:
        inputs, sources, plan = open_and_plan(cfg, stack)  # every check of the inputs before anything is written
        with assembled(output) as temporary:
            report = write_merged_model(cfg, inputs, sources, plan, temporary, started)
    return MergeResult(output, report)


def merge_run(cfg: MergeConfig) -> MergeResult:
    """The merge as a command: the merged model directory is also its run directory (see the module docstring)."""
    started = time.perf_counter()
    output = check_output(cfg)
    with ExitStack() as stack:
        inputs, sources, plan = open_and_plan(cfg, stack)
        with open_run(output, cfg.name, cfg, atomic=True) as run:
            report = write_merged_model(cfg, inputs, sources, plan, run.path, started)
            run.finish(report, f"Merge: {cfg.method} of {', '.join(plan.inputs)}", report_sections(report))
    return MergeResult(run.path, report)


def write_merged_model(cfg: MergeConfig, inputs: list[str], sources: list[ModelTensors], plan: MergePlan,
                       directory: Path, started: float) -> dict[str, Any]:
    """Weights, side files, ``mergekit_config.yml`` and ``merge_report.json`` into ``directory`` (empty); returns
    the report."""
    stats = write_tensors(cfg, plan, sources, directory)
    files.write_side_files(cfg, plan, inputs, directory)
    mergekit = write_mergekit_config(cfg, plan, directory)
    report = merge_report(cfg, plan, stats, time.perf_counter() - started)
    report["mergekit_config"] = mergekit
    atomic_write_json(directory / "merge_report.json", report)
    get_logger().info("merged %d tensors (%s) in %.1f s", report["tensors"], cfg.method, report["seconds"])
    return report


def write_mergekit_config(cfg: MergeConfig, plan: MergePlan, directory: Path) -> str:
    """The merge in mergekit's dialect as ``mergekit_config.yml`` (mergekit's own file name), with the output dtype
    resolved; what the report says about it (the file, or why there is none)."""
    resolved = cfg.model_copy(update={"dtype": str(plan.dtype).removeprefix("torch.")})
    try:
        text = to_mergekit_yaml(resolved, [tensor.name for tensor in plan.tensors])
    except NotExpressible as exc:
        get_logger().warning("no mergekit_config.yml: %s", exc)
        return f"not written: {exc}"
    atomic_write_text(directory / MERGEKIT_CONFIG, text)
    return MERGEKIT_CONFIG


def open_and_plan(cfg: MergeConfig, stack: ExitStack) -> tuple[list[str], list[ModelTensors], MergePlan]:
    """The inputs as directories, their tensors (open until ``stack`` closes) and the checked plan."""
    inputs = [files.resolve_model_dir(path) for path in cfg.all_models()]
    sources = [stack.enter_context(ModelTensors(path, cfg.allow_pickle)) for path in inputs]
    return inputs, sources, build_plan(cfg, sources)


def check_mergeable(cfg: MergeConfig) -> None:
    """Every check :func:`merge_models` makes of its inputs (architectures, names, shapes, tokenizers, rules),
    reading headers only and writing nothing: for recipes that merge after hours of other work."""
    with ExitStack() as stack:
        open_and_plan(cfg, stack)


def write_tensors(cfg: MergeConfig, plan: MergePlan, sources: list[ModelTensors], out_dir: Path) -> list[dict]:
    method = METHODS[cfg.method]
    layout = [(t.name, t.shape, plan.dtype if t.floating else sources[0].dtype(stored_name(plan, 0, t.name)))
              for t in plan.tensors]
    stats = []
    with SafetensorsShardWriter(out_dir, layout, int(cfg.shard_size_mb * 1024 * 1024),
                                metadata={"merged_by": "adaptlab", "method": cfg.method}) as shards, \
            BackgroundWriter(shards) as writer, ThreadPoolExecutor(1, "adaptlab-merge-reader") as reader, \
            progress_bar(cfg.progress) as bar:
        task = bar.add_task(f"merging ({cfg.method})", total=len(plan.tensors))
        for tensor in plan.tensors:
            if method.elementwise and tensor.action == "merge" and not tensor.vocab_rows:
                row = merge_in_slices(method, plan, sources, tensor, cfg.seed, writer, reader)
            else:
                out, row = merged_tensor(method, plan, sources, tensor, cfg.seed)
                writer.write(tensor.name, out)
            stats.append(row)
            bar.advance(task)
    return stats


def stored_name(plan: MergePlan, index: int, name: str) -> str:
    return plan.aliases[index].get(name, name)


def read(plan: MergePlan, sources: list[ModelTensors], index: int, name: str) -> torch.Tensor:
    return sources[index].get(stored_name(plan, index, name))


def check_finite(plan: MergePlan, sources: list[ModelTensors], tensor: TensorPlan, sum_of_squares: float) -> None:
    """A merged tensor whose sum of squares is NaN or Inf holds such values (unless ``allow_nonfinite``): name the
    input they came from. The sum is computed for the report anyway, so the usual case costs nothing; only a
    non-finite result reads the inputs again to find the culprit."""
    if plan.allow_nonfinite or math.isfinite(sum_of_squares):
        return
    wanted = [tensor.source] if tensor.action != "merge" else [i for i in (plan.base, *plan.models) if i is not None]
    for index in dict.fromkeys(wanted):
        values = read(plan, sources, index, tensor.name)
        bad = int((~torch.isfinite(values)).sum()) if values.is_floating_point() else 0
        if bad:
            raise ModelError(f"{plan.inputs[index]}: tensor {tensor.name!r} holds {bad} NaN or Inf values, which the "
                             "merge would spread. Fix or replace that model, or set allow_nonfinite: true")
    raise ModelError(f"merging {tensor.name!r} gave NaN or Inf from finite inputs (an overflow in the output dtype?); "
                     "check the weights and parameters, or set allow_nonfinite: true")


def merge_in_slices(method, plan: MergePlan, sources: list[ModelTensors], tensor: TensorPlan, seed: int,
                    writer: BackgroundWriter, reader: ThreadPoolExecutor) -> dict[str, Any]:
    """Merge an element-wise method slice by slice; the next slice is read while this one is computed."""
    total = math.prod(tensor.shape)
    max_change, squares = 0.0, 0.0
    wanted = [i for i in dict.fromkeys([plan.base, *plan.models]) if i is not None]

    def read_slice(start: int) -> dict[int, torch.Tensor]:
        count = min(SLICE_ELEMENTS, total - start)
        return {i: sources[i].read_slice(stored_name(plan, i, tensor.name), start, count) for i in wanted}

    starts = range(0, total, SLICE_ELEMENTS)
    pending = reader.submit(read_slice, 0) if total else None
    for k, start in enumerate(starts):
        stored = pending.result()
        if start + SLICE_ELEMENTS < total:
            pending = reader.submit(read_slice, start + SLICE_ELEMENTS)
        inputs = {i: values.to(torch.float32) for i, values in stored.items()}
        base = inputs[plan.base] if plan.base is not None else None
        generator = tensor_generator(seed, f"{tensor.name}#{k}") if method.uses_density else None
        merged = method.fn(base, [inputs[i] for i in plan.models], list(tensor.weights), list(tensor.densities),
                           tensor.params, generator)
        reference = base if base is not None else inputs[plan.models[0]]
        max_change = max(max_change, float((merged - reference).abs().max()))
        squares += float(torch.sum(merged * merged, dtype=torch.float64))
        writer.write_chunk(tensor.name, merged.to(plan.dtype))
    if total == 0:
        writer.write_chunk(tensor.name, torch.empty(0, dtype=plan.dtype))
    check_finite(plan, sources, tensor, squares)
    return {"name": tensor.name, "shape": list(tensor.shape), "action": "merge", "max_abs_change": max_change,
            "rms": math.sqrt(squares / total) if total else 0.0}


def merged_tensor(method, plan: MergePlan, sources: list[ModelTensors], tensor: TensorPlan,
                  seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """The output tensor (in its output dtype) and its statistics row for the report."""
    row: dict[str, Any] = {"name": tensor.name, "shape": list(tensor.shape), "action": tensor.action}
    if not tensor.floating:
        values = [read(plan, sources, i, tensor.name) for i in range(len(sources))]
        if any(not torch.equal(values[0], v) for v in values[1:]):
            raise_different_buffers(plan, tensor.name)
        return values[0], row
    if tensor.vocab_rows:  # every input's rows in the output token order (see merge/vocab.py)
        inputs = plan.vocab.align([read(plan, sources, i, tensor.name) for i in range(len(sources))])
    else:
        wanted = {tensor.source} if tensor.action != "merge" else {plan.base, *plan.models} - {None}
        inputs = {i: read(plan, sources, i, tensor.name).to(torch.float32) for i in wanted}
    if tensor.action in ("skip", "copy"):
        row["source"] = plan.inputs[tensor.source]
        copied = inputs[tensor.source]
        check_finite(plan, sources, tensor, float(torch.sum(copied * copied, dtype=torch.float64)))
        return copied.to(plan.dtype), row
    base = inputs[plan.base] if plan.base is not None else None
    models = [inputs[i] for i in plan.models]
    generator = tensor_generator(seed, tensor.name)
    merged = method.fn(base, models, list(tensor.weights), list(tensor.densities), tensor.params, generator)
    reference = base if base is not None else models[0]
    squares = float(torch.sum(merged * merged, dtype=torch.float64))
    check_finite(plan, sources, tensor, squares)
    row["max_abs_change"] = float((merged - reference).abs().max()) if merged.numel() else 0.0
    row["rms"] = math.sqrt(squares / merged.numel()) if merged.numel() else 0.0
    return merged.to(plan.dtype), row


def raise_different_buffers(plan: MergePlan, name: str) -> None:
    raise ModelError(f"{name} is not a floating-point tensor, so it cannot be merged, and it differs between the "
                     f"inputs ({', '.join(plan.inputs)})")


def merge_report(cfg: MergeConfig, plan: MergePlan, stats: list[dict], seconds: float) -> dict[str, Any]:
    return {
        "config": cfg.model_dump(mode="json"),
        "inputs": plan.inputs,
        "output_dtype": str(plan.dtype).removeprefix("torch."),
        "tensors": len(plan.tensors),
        "actions": {a: sum(t.action == a for t in plan.tensors) for a in ("merge", "skip", "copy")},
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "vocab": plan.vocab.report() if plan.vocab is not None else {"mode": cfg.vocab},
        "per_tensor": stats,
    }


def report_sections(report: dict[str, Any]) -> list[Section]:
    """``report.html`` of a merge: what went in, what came out, and how far each tensor moved."""
    vocab = {key: value for key, value in report["vocab"].items() if not isinstance(value, dict | list)}
    rows = [[row["name"], row["action"], "×".join(map(str, row["shape"])), row.get("max_abs_change"), row.get("rms")]
            for row in report["per_tensor"]]
    return [
        Section("Merge", [KeyValues({"method": report["config"]["method"], "inputs": ", ".join(report["inputs"]),
                                     "output dtype": report["output_dtype"], "tensors": report["tensors"],
                                     **{f"tensors {action}": n for action, n in report["actions"].items()},
                                     "seconds": report["seconds"], "peak RSS (MB)": report["peak_rss_mb"]}),
                          KeyValues(vocab, caption="vocabulary (all counts in metrics.json)")]),
        Section("Tensors", [Paragraph("max |change|: the largest entry-wise change from the base model (from the "
                                      "first model when there is no base); RMS: the merged tensor's root mean "
                                      "square; a dash: not merged or not measured."),
                            Table(["tensor", "action", "shape", "max |change|", "RMS"], rows)]),
    ]
