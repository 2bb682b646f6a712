"""``adaptlab lm evaluate``: models x (perplexity, multiple-choice tasks, instruction probe) in one table.

Read top to bottom: validate the config -> read every input (text files, task files, probe prompts)
so that a data mistake stops the run before any model loads -> for each model: load it once, score
every configured part, free it -> one table, models as rows -> run directory with ``metrics.json``,
``report.html`` and ``predictions/<model>/`` (``mc_<task>.jsonl`` per-item log-likelihoods,
``probe.jsonl`` every probe response).

The parts: perplexity of each text file (:func:`adaptlab.metrics.lm.perplexity`), acc / acc_norm
of each multiple-choice task (:mod:`adaptlab.lm.mc_tasks`, whose docstring defines the task
format and the scoring) and the instruction-following probe (:mod:`adaptlab.lm.probe`). A path
``packaged:NAME`` names a file shipped in ``adaptlab/resources/lm_eval`` (``NAME.jsonl``): the probe
prompts ``probe_prompts`` and two small example tasks, ``finance_sentiment`` and ``finance_basics``.
"""

from __future__ import annotations

import gc
import json
import re
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from adaptlab.config import StrictModel
from adaptlab.errors import ConfigError, ModelError
from adaptlab.lm.lm_eval_tasks import load_task
from adaptlab.lm.mc_tasks import MCTask, count_requests, score_mc_task
from adaptlab.lm.probe import load_probe_prompts, probe_skip_reason, run_probe
from adaptlab.metrics.lm import perplexity, read_text_file
from adaptlab.models.checks import check_local_model
from adaptlab.models.gguf import resolve_model
from adaptlab.report.html import KeyValues, Paragraph, Section, Table
from adaptlab.runs import RunDir, atomic_write_jsonl, get_logger, open_run, progress_bar

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
PACKAGED_PREFIX = "packaged:"


class ModelSpec(StrictModel):
    name: str = Field(pattern=NAME_PATTERN, description="row label in the table; letters, digits, . _ -")
    path: str = Field(description="HF model directory, a .gguf file (converted once, cached), or a hub name "
                                  "already in the local cache")


class PerplexityConfig(StrictModel):
    texts: dict[str, str] = Field({}, description="name -> UTF-8 text file, documents separated by blank lines")
    max_length: int | None = Field(None, ge=1, description="model input tokens per window; default: the model's "
                                  "context window (as lm-evaluation-harness)")
    stride: int | None = Field(None, ge=1, description="tokens each later window predicts; default max_length "
                               "(lm-eval's rolling windows); smaller gives more context per token")
    batch_size: int = Field(4, ge=1, description="windows per forward pass")
    max_documents: int | None = Field(None, ge=1, description="score only the first N documents of each file")


class MCConfig(StrictModel):
    tasks: dict[str, str] = Field({}, description="name -> task JSONL (format: adaptlab.lm.mc_tasks), an lm-eval "
                                  "multiple-choice task YAML (adaptlab.lm.lm_eval_tasks) or packaged:NAME")
    max_length: int | None = Field(None, ge=1, description="model input tokens per prompt + choice; longer prompts "
                                  "lose their start; default: the model's context window (as lm-eval)")
    batch_size: int = Field(8, ge=1, description="(item, choice) sequences per forward pass")
    max_items: int | None = Field(None, ge=1, description="score only the first N items of each task")


class ProbeConfig(StrictModel):
    prompts: str | None = Field("packaged:probe_prompts", description="JSONL of {prompt}; null turns the probe off")
    max_new_tokens: int = Field(128, ge=1, description="a response without EOS within this many tokens did not stop")
    batch_size: int = Field(8, ge=1, description="prompts generated together")
    examples: int = Field(3, ge=0, description="responses per model kept in metrics.json and the report")


class LMEvalConfig(StrictModel):
    """Config of ``adaptlab lm evaluate`` (shipped example: ``adaptlab config show lm_evaluate``)."""

    name: str = Field("lm-evaluate", description="names the run directory runs/<time>-<name> when output is not given")
    models: list[ModelSpec] = Field([], description="the models to compare, each {name, path}")
    perplexity: PerplexityConfig = Field(
        PerplexityConfig(), description="held-out perplexity on text files (lm-eval's rolling windows)")
    mc: MCConfig = Field(MCConfig(), description="multiple-choice tasks scored by log-likelihood (acc, acc_norm)")
    probe: ProbeConfig = Field(ProbeConfig(), description="the instruction-following probe: chat format and stopping")
    device: str = Field("auto", description="cpu, cuda, cuda:1, ...; auto: cuda when available")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="dtype the models are loaded in; auto: each model's own")
    output: str | None = Field(None, description="run directory to write (must not exist); default runs/<time>-<name>")
    progress: bool = Field(True, description="progress bars on the console")


@dataclass
class EvalInputs:
    """Everything the models are scored on, read once before any model loads."""

    texts: dict[str, list[str]] = field(default_factory=dict)
    tasks: dict[str, MCTask] = field(default_factory=dict)
    prompts: list[dict[str, str]] | None = None
    described: dict[str, Any] = field(default_factory=dict)


def resolve_input(path: str) -> Path:
    """``packaged:NAME`` -> the shipped ``resources/lm_eval/NAME.jsonl``; anything else as given."""
    if not path.startswith(PACKAGED_PREFIX):
        return Path(path)
    root = Path(str(files("adaptlab") / "resources" / "lm_eval"))
    resolved = root / f"{path[len(PACKAGED_PREFIX):]}.jsonl"
    if not resolved.is_file():
        shipped = sorted(p.stem for p in root.glob("*.jsonl"))
        raise ConfigError(f"{path!r}: no such packaged file; packaged inputs are {shipped}")
    return resolved


def check_config(cfg: LMEvalConfig) -> None:
    """Raise :class:`ConfigError` for a config that cannot run, before reading data or loading models."""
    if not cfg.models:
        raise ConfigError("models: give at least one model, e.g. models: [{name: base, path: runs/x/model}]")
    names = [m.name for m in cfg.models]
    if len(set(names)) != len(names):
        raise ConfigError(f"models: names repeat ({names}); each row of the table needs its own name")
    for key, names_of in (("perplexity.texts", cfg.perplexity.texts), ("mc.tasks", cfg.mc.tasks)):
        for name in names_of:
            if not re.match(NAME_PATTERN, name):
                raise ConfigError(f"{key}: name {name!r} must use letters, digits, '.', '_' or '-' (it names a column)")
    if not cfg.perplexity.texts and not cfg.mc.tasks and cfg.probe.prompts is None:
        raise ConfigError("nothing to evaluate: set perplexity.texts, mc.tasks or probe.prompts")
    stride, max_length = cfg.perplexity.stride, cfg.perplexity.max_length
    if stride is not None and max_length is not None and stride > max_length:
        raise ConfigError(f"perplexity.stride ({stride}) must not exceed perplexity.max_length ({max_length})")


def load_inputs(cfg: LMEvalConfig) -> EvalInputs:
    inputs = EvalInputs(described={"texts": {}, "tasks": {}, "probe": None})
    for name, path in cfg.perplexity.texts.items():
        documents = read_text_file(resolve_input(path))
        inputs.texts[name] = documents[: cfg.perplexity.max_documents]
        inputs.described["texts"][name] = {"path": path, "documents": len(documents),
                                           "documents_used": len(inputs.texts[name])}
    for name, path in cfg.mc.tasks.items():
        task = load_task(resolve_input(path), name)
        total = len(task.items)
        task.items = task.items[: cfg.mc.max_items]
        inputs.tasks[name] = task
        inputs.described["tasks"][name] = {"path": path, "items": total, "items_used": len(task.items),
                                           "prompt_template": task.prompt_template,
                                           "choice_template": task.choice_template}
    if cfg.probe.prompts is not None:
        inputs.prompts = load_probe_prompts(resolve_input(cfg.probe.prompts))
        inputs.described["probe"] = {"path": cfg.probe.prompts, "prompts": len(inputs.prompts)}
    return inputs


def evaluate(cfg: LMEvalConfig) -> tuple[RunDir, dict[str, Any]]:
    """Score every model on every configured part; returns the run directory and its metrics."""
    check_config(cfg)
    inputs = load_inputs(cfg)
    device = _device(cfg.device)
    model_dirs = {spec.name: resolve_model(spec.path, f"models[{index}].path") for index, spec in enumerate(cfg.models)}
    for index, spec in enumerate(cfg.models):
        _check_model_config(model_dirs[spec.name], f"models[{index}].path")
    log = get_logger()
    with open_run(cfg.output, cfg.name, cfg) as run:
        models: dict[str, Any] = {}
        with progress_bar(cfg.progress) as bar:
            for spec in cfg.models:
                log.info("evaluating %s (%s) on %s", spec.name, spec.path, device)
                started = time.perf_counter()
                model, tokenizer = load_causal_lm(model_dirs[spec.name], device, cfg.dtype)
                try:
                    task_id = bar.add_task(spec.name, total=_work_units(inputs, tokenizer))
                    scores = score_model(model, tokenizer, inputs, cfg, device,
                                         advance=lambda n, task_id=task_id: bar.advance(task_id, n))
                finally:
                    del model
                    _free_memory()
                scores = {"path": spec.path, **scores, "seconds": round(time.perf_counter() - started, 2)}
                models[spec.name] = _write_predictions(run, spec.name, scores, cfg.probe.examples)
        metrics = {"models": models, "table": results_table(models, inputs), "inputs": inputs.described,
                   "probe_skipped": {name: m["probe"]["skipped"] for name, m in models.items()
                                     if "skipped" in m.get("probe", {})}}
        run.finish(metrics, f"LM evaluation: {cfg.name}", report_sections(metrics))
    log.info("evaluation written to %s", run.path)
    return run, metrics


def _check_model_config(path: str, key: str) -> None:
    """A local directory is checked whole (config, weights, a causal LM head) and a hub name's config read, so
    that a wrong or damaged model fails before the run directory exists."""
    from transformers import AutoConfig

    if check_local_model(path, "causal_lm", key):
        return
    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{key}: cannot read a model config at {path!r} ({exc}); give an HF model directory") from None


def load_causal_lm(path: str, device: str, dtype: str = "float32"):
    """``(model, tokenizer)`` from a model directory, in eval mode on ``device``; ModelError names the path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load {path!r} as a causal LM with its tokenizer: {exc}. Give a model directory "
                         "with config, weights and tokenizer files (nothing is downloaded while HF_HUB_OFFLINE=1)"
                         ) from exc
    return model.to(device).eval(), tokenizer


def score_model(model, tokenizer, inputs: EvalInputs, cfg: LMEvalConfig, device=None, advance=None) -> dict[str, Any]:
    """Perplexity, MC and probe scores of one loaded model (MC predictions and all probe responses included)."""
    ppl, mc = cfg.perplexity, cfg.mc
    scores: dict[str, Any] = {"perplexity": {}, "mc": {}}
    for name, documents in inputs.texts.items():
        scores["perplexity"][name] = perplexity(model, tokenizer, documents, max_length=ppl.max_length,
                                                stride=ppl.stride, batch_size=ppl.batch_size, device=device)
        if advance:
            advance(1)
    for name, task in inputs.tasks.items():
        scores["mc"][name] = score_mc_task(model, tokenizer, task, batch_size=mc.batch_size,
                                           max_length=mc.max_length, device=device, advance=advance)
    if inputs.prompts is not None:
        reason = probe_skip_reason(tokenizer)
        if reason:
            get_logger().warning("probe skipped: %s", reason)
            scores["probe"] = {"skipped": reason}
        else:
            scores["probe"] = run_probe(model, tokenizer, inputs.prompts, max_new_tokens=cfg.probe.max_new_tokens,
                                        batch_size=cfg.probe.batch_size, device=device, advance=advance)
    return scores


def results_table(models: dict[str, Any], inputs: EvalInputs) -> list[dict[str, Any]]:
    """One row per model, ``{"model": name, column: value}``; every row has every column (None: not measured).

    Columns: ``ppl_<text>``, ``<task>_acc``, ``<task>_acc_norm``, ``mc_mean_acc`` and ``mc_mean_acc_norm``
    (with two or more tasks), ``probe_stopped``, ``probe_chat_format``, ``probe_both``.
    """
    rows = []
    for model_name, m in models.items():
        row: dict[str, Any] = {"model": model_name}
        row.update({f"ppl_{name}": m["perplexity"][name]["perplexity"] for name in inputs.texts})
        for name in inputs.tasks:
            row.update({f"{name}_acc": m["mc"][name]["acc"], f"{name}_acc_norm": m["mc"][name]["acc_norm"]})
        if len(inputs.tasks) > 1:
            for key in ("acc", "acc_norm"):
                row[f"mc_mean_{key}"] = sum(s[key] for s in m["mc"].values()) / len(m["mc"])
        if inputs.prompts is not None:
            row.update({f"probe_{key}": m["probe"].get(key) for key in ("stopped", "chat_format", "both")})
        rows.append(row)
    return rows


def _write_predictions(run: RunDir, model_name: str, scores: dict[str, Any], examples: int) -> dict[str, Any]:
    """Move per-item predictions and probe responses to files; metrics keep the first ``examples`` responses."""
    folder = run.path / "predictions" / model_name
    for text_name, result in scores["perplexity"].items():
        documents = result.pop("document_loglikelihoods")
        atomic_write_jsonl(folder / f"ppl_{text_name}.jsonl",
                     [{"document": i, "loglikelihood": ll} for i, ll in enumerate(documents)])
    for task_name, result in scores["mc"].items():
        atomic_write_jsonl(folder / f"mc_{task_name}.jsonl", result.pop("predictions"))
    probe = scores.get("probe", {})
    if "responses" in probe:
        responses = probe.pop("responses")
        atomic_write_jsonl(folder / "probe.jsonl", responses)
        probe["examples"] = responses[:examples]
    return scores



def _work_units(inputs: EvalInputs, tokenizer) -> int:
    probe = len(inputs.prompts) if inputs.prompts is not None and probe_skip_reason(tokenizer) is None else 0
    return len(inputs.texts) + sum(count_requests(t) for t in inputs.tasks.values()) + probe


def _device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return str(torch.device(device))
    except RuntimeError:
        raise ConfigError(f"device: {device!r} is not a torch device (use cpu, cuda, cuda:1 or auto)") from None


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


PROBE_DEFINITIONS = (
    "stopped: the response ended with an EOS id (generation config or tokenizer) within max_new_tokens. "
    "chat_format: the response has visible text and contains none of the chat template's turn markers "
    "(its role headers and special tokens, found by rendering a dummy conversation). both: the two at once.")


def report_sections(metrics: dict[str, Any]) -> list[Section]:
    """Results table (models as rows), then perplexity, per-task MC and probe sections."""
    columns = list(metrics["table"][0])
    sections = [Section("Results", [
        Paragraph("One row per model. ppl_*: perplexity on each text file (lower is better); *_acc / *_acc_norm: "
                  "multiple-choice accuracy by summed log-likelihood / by log-likelihood per character; probe_*: "
                  "shares of probe prompts (higher is better). A dash: not measured."),
        Table(columns, [[row[c] for c in columns] for row in metrics["table"]]),
    ])]
    models = metrics["models"]
    texts = metrics["inputs"]["texts"]
    if texts:
        rows = [[text, name, m["perplexity"][text]["perplexity"], m["perplexity"][text]["tokens"],
                 m["perplexity"][text]["documents"], m["perplexity"][text]["skipped_documents"]]
                for text in texts for name, m in models.items()]
        sections.append(Section("Perplexity", [
            KeyValues({name: f"{d['path']} ({d['documents_used']} of {d['documents']} documents)"
                       for name, d in texts.items()}, caption="text files"),
            Table(["text", "model", "perplexity", "tokens", "documents", "skipped documents"], rows)]))
    for task, described in metrics["inputs"]["tasks"].items():
        header = ["model", "acc", "acc_norm", "macro_f1", "items", "truncated items", "boundary mismatches"]
        rows = [[name, s["acc"], s["acc_norm"], s.get("macro_f1"), s["items"], s["truncated_items"],
                 s["boundary_mismatches"]] for name, m in models.items() for s in [m["mc"][task]]]
        sections.append(Section(f"Multiple choice: {task}", [
            KeyValues({"file": described["path"], "items": f"{described['items_used']} of {described['items']}",
                       "prompt template (JSON)": json.dumps(described["prompt_template"], ensure_ascii=False),
                       "choice template (JSON)": json.dumps(described["choice_template"], ensure_ascii=False)}),
            Table(header, rows)]))
    if metrics["inputs"]["probe"] is not None:
        sections.append(_probe_section(models, metrics["inputs"]["probe"]))
    return sections


def _probe_section(models: dict[str, Any], described: dict[str, Any]) -> Section:
    blocks: list = [Paragraph(f"{described['prompts']} prompts from {described['path']}. {PROBE_DEFINITIONS}")]
    rows = [[name, m["probe"].get("stopped"), m["probe"].get("chat_format"), m["probe"].get("both"),
             m["probe"].get("skipped", "")] for name, m in models.items()]
    blocks.append(Table(["model", "stopped", "chat_format", "both", "note"], rows))
    for name, m in models.items():
        examples = m["probe"].get("examples", [])
        if examples:
            blocks.append(Table(["prompt", "response", "stopped", "chat_format"],
                                [[e["prompt"], e["response"], e["stopped"], e["chat_format"]] for e in examples],
                                caption=f"{name}: first responses (markers in the chat template: "
                                        f"{', '.join(m['probe']['turn_markers']) or 'none'})"))
    return Section("Instruction-following probe", blocks)

