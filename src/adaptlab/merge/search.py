"""Coefficient search (``adaptlab merge search``): merge for each value on a grid, rank by perplexity.

Why: the chat vector's λ (and a linear merge's weights) trade domain knowledge against instruction
following, and the right value differs per model pair. Perplexity on held-out text is a cheap,
label-free proxy: domain text shows whether domain knowledge survives, general text whether the
model still writes ordinary language.

What is varied (``target``):

- ``weight``: the weight of the input model ``vary`` (a path in ``merge.models``). For the chat
  vector (task arithmetic with base B, models D weight 1 and I weight λ) this is λ for ``vary: I``.
- ``lambda``: the method-wide ``merge.parameters.lambda`` (task-arithmetic-style scaling of the
  summed deltas); ``vary`` is not used and must be left out.

Objective (lower is better)::

    score = log(ppl_domain) + general_weight · log(ppl_general)

with the general term only when ``general_text`` is given. ``log(ppl)`` is the mean negative
log-likelihood per token (see :mod:`adaptlab.metrics.lm`), so a given relative change of either
perplexity moves the score by the same amount whatever its absolute level. Ties go to the value
listed first; a candidate whose score is not finite (a diverged merge) is never chosen.

Disk: each candidate is merged into ``<run>/candidates/<index>`` and deleted once scored, unless
it is the best so far, in which case the previous best is deleted instead: at most one merged
model beyond the one being scored is on disk. With ``keep_best`` the winner is renamed to
``<run>/best`` at the end; ``candidates/`` is always removed, also when the search fails.
The table is rewritten to ``search.json`` after every candidate, so an interrupted search keeps
the rows it finished.
"""

from __future__ import annotations

import gc
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from adaptlab.config import StrictModel
from adaptlab.errors import ConfigError, ModelError
from adaptlab.merge.config import MergeConfig
from adaptlab.metrics.lm import perplexity, read_text_file
from adaptlab.report import plots
from adaptlab.report.html import Image, KeyValues, Paragraph, Section, Table
from adaptlab.runs import RunDir, atomic_write_json, get_logger, open_run, progress_bar

MergeFunction = Callable[[MergeConfig], Path]


class SearchConfig(StrictModel):
    name: str = Field("merge-search", description="names the run directory runs/<time>-<name> when output is not given")
    merge: MergeConfig = Field(description="the merge to repeat; its 'output' is replaced by the search's")
    grid: list[float] = Field(description="the values to try, in this order")
    target: Literal["weight", "lambda"] = Field(
        "weight", description="weight: the weight of model 'vary'; lambda: merge.parameters.lambda")
    vary: str | None = Field(None, description="target weight: the path (in merge.models) whose weight is varied")
    domain_text: str = Field(description="held-out domain text: UTF-8, documents separated by blank lines")
    general_text: str | None = Field(None, description="optional held-out general text, same format")
    general_weight: float = Field(1.0, ge=0, description="weight of log(ppl_general) in the score")
    max_length: int = Field(512, ge=1, description="model input tokens per perplexity window")
    stride: int | None = Field(None, ge=1, description="tokens each later window predicts; default max_length "
                               "(lm-evaluation-harness's rolling windows)")
    batch_size: int = Field(4, ge=1, description="perplexity windows per forward pass")
    max_texts: int | None = Field(None, ge=1, description="score only the first N documents of each file")
    device: str | None = Field(None, description="cpu, cuda, cuda:1, ...; default: cuda when available")
    eval_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype candidates are scored in; auto: the merged model's own")
    output: str | None = Field(
        None, description="run directory with the candidates (must not exist); default runs/<time>-<name>")
    keep_best: bool = Field(True, description="keep the best merged model as <run>/best")
    progress: bool = Field(True, description="progress bars on the console")


def objective_text(cfg: SearchConfig) -> str:
    general = f" + {cfg.general_weight:g} · log(ppl_general)" if cfg.general_text else ""
    return f"score = log(ppl_domain){general}; lower is better"


def check_search_config(cfg: SearchConfig) -> None:
    """Raise :class:`ConfigError` for a grid or ``vary`` that cannot work, before anything is merged."""
    if not cfg.grid:
        raise ConfigError("grid: give at least one value to try, e.g. grid: [0.0, 0.25, 0.5, 0.75, 1.0]")
    if not all(math.isfinite(v) for v in cfg.grid):
        raise ConfigError(f"grid: every value must be a finite number (got {cfg.grid})")
    if len(set(cfg.grid)) != len(cfg.grid):
        raise ConfigError(f"grid: values repeat ({cfg.grid}); each value is one full merge, list it once")
    if cfg.stride is not None and cfg.stride > cfg.max_length:
        raise ConfigError(f"stride: must not exceed max_length ({cfg.max_length}), got {cfg.stride}")
    paths = [m.model for m in cfg.merge.models]
    if cfg.target == "lambda":
        if cfg.vary is not None:
            raise ConfigError(f"vary: {cfg.vary!r} is only for target 'weight'; target 'lambda' sets the "
                              "method-wide merge.parameters.lambda. Remove 'vary' or set target: weight")
        return
    if cfg.vary is None:
        raise ConfigError(f"vary: target 'weight' needs the model whose weight is searched, one of {paths}")
    if paths.count(cfg.vary) != 1:
        problem = "is not one of" if cfg.vary not in paths else "appears more than once in"
        raise ConfigError(f"vary: {cfg.vary!r} {problem} merge.models {paths}; give the path exactly as listed there")


def candidate_config(cfg: SearchConfig, value: float, output: Path) -> MergeConfig:
    """The merge for one grid value: ``cfg.merge`` with the varied number set and output replaced."""
    update: dict[str, Any] = {"output": str(output), "progress": False}
    if cfg.target == "lambda":
        update["parameters"] = {**cfg.merge.parameters, "lambda": value}
    else:
        update["models"] = [m.model_copy(update={"weight": value}) if m.model == cfg.vary else m
                            for m in cfg.merge.models]
    return cfg.merge.model_copy(update=update)


def engine_merge(merge_config: MergeConfig) -> Path:
    """The default merge function: the streaming engine."""
    from adaptlab.merge.engine import merge_models

    return Path(merge_models(merge_config).output_dir)


def run_search(cfg: SearchConfig, merge_fn: MergeFunction | None = None) -> tuple[RunDir, dict[str, Any]]:
    """Merge, score and rank every grid value; write the run directory. Returns it and the result."""
    check_search_config(cfg)
    merge_fn = merge_fn or engine_merge
    log = get_logger()
    domain = read_text_file(cfg.domain_text)[: cfg.max_texts]
    general = read_text_file(cfg.general_text)[: cfg.max_texts] if cfg.general_text else None
    with open_run(cfg.output, cfg.name, cfg) as run_dir:
        if cfg.merge.output:
            log.warning("merge.output (%s) is not used by the search; candidates go to %s/candidates",
                        cfg.merge.output, run_dir.path)
        result = _search(cfg, merge_fn, run_dir, domain, general)
        _finish(cfg, run_dir, result, domain, general)
    return run_dir, result


def _search(cfg: SearchConfig, merge_fn: MergeFunction, run_dir: RunDir, domain: list[str],
            general: list[str] | None) -> dict[str, Any]:
    """Every grid value merged and scored in turn; the best model kept (see the module docstring)."""
    log = get_logger()
    candidates = run_dir.path / "candidates"
    result: dict[str, Any] = {"objective": objective_text(cfg), "target": cfg.target, "vary": cfg.vary,
                              "method": cfg.merge.method, "rows": [], "best": None, "best_model": None,
                              "complete": False}
    best_dir: Path | None = None
    try:
        with progress_bar(cfg.progress) as bar:
            task = bar.add_task("merge search", total=len(cfg.grid))
            for index, value in enumerate(cfg.grid):
                bar.update(task, description=f"{cfg.target} = {value:g}")
                merged, row = _merge_and_score(cfg, merge_fn, value, candidates / f"{index:03d}", domain, general)
                result["rows"].append(row)
                log.info("%s = %g: ppl_domain %.4f, ppl_general %s, score %.5f (%.1f s)", cfg.target, value,
                         row["ppl_domain"], _fmt(row["ppl_general"]), row["score"], row["seconds"])
                is_best = _better(row, result["best"])
                if is_best:
                    result["best"] = row
                if is_best and cfg.keep_best:
                    if best_dir is not None:
                        shutil.rmtree(best_dir)
                    best_dir = merged
                else:
                    shutil.rmtree(merged)
                atomic_write_json(run_dir.path / "search.json", result)
                bar.advance(task)
        if best_dir is not None:
            best_dir.rename(run_dir.path / "best")
            result["best_model"] = str(run_dir.path / "best")
    finally:
        shutil.rmtree(candidates, ignore_errors=True)
    result["complete"] = True
    return result


def _merge_and_score(cfg: SearchConfig, merge_fn: MergeFunction, value: float, output: Path,
                     domain: list[str], general: list[str] | None) -> tuple[Path, dict[str, Any]]:
    started = time.perf_counter()
    merged = Path(merge_fn(candidate_config(cfg, value, output)))
    if merged.resolve() != output.resolve():
        raise ModelError(f"the merge function wrote to {merged}, but the search asked for {output}")
    scores = _score_model(cfg, merged, domain, general)
    domain_scores, general_scores = scores["domain"], scores.get("general")
    score = domain_scores["nll_per_token"]  # = log(ppl_domain)
    if general_scores is not None:
        score += cfg.general_weight * general_scores["nll_per_token"]
    row = {"value": value, "ppl_domain": domain_scores["perplexity"],
           "ppl_general": general_scores["perplexity"] if general_scores else None,
           "score": score, "seconds": time.perf_counter() - started, "tokens_domain": domain_scores["tokens"],
           "tokens_general": general_scores["tokens"] if general_scores else None}
    return merged, row


def _score_model(cfg: SearchConfig, model_dir: Path, domain: list[str],
                 general: list[str] | None) -> dict[str, dict[str, Any]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = cfg.eval_dtype if cfg.eval_dtype == "auto" else getattr(torch, cfg.eval_dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    try:
        texts = {"domain": domain, **({"general": general} if general else {})}
        return {name: perplexity(model, tokenizer, docs, max_length=cfg.max_length, stride=cfg.stride,
                                 batch_size=cfg.batch_size, device=device) for name, docs in texts.items()}
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _better(row: dict[str, Any], best: dict[str, Any] | None) -> bool:
    return math.isfinite(row["score"]) and (best is None or row["score"] < best["score"])


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _finish(cfg: SearchConfig, run_dir: RunDir, result: dict[str, Any], domain: list[str],
            general: list[str] | None) -> None:
    log = get_logger()
    best = result["best"]
    unranked = [row["value"] for row in result["rows"] if not math.isfinite(row["score"])]
    if unranked:
        log.warning("%d candidate(s) have a non-finite score and were not ranked: %s", len(unranked), unranked)
    if best is None:
        log.warning("no candidate has a finite score; there is no best value")
    else:
        log.info("best %s = %g (score %.5f)%s", cfg.target, best["value"], best["score"],
                 f"; model kept at {result['best_model']}" if result["best_model"] else "")
    result["unranked"] = unranked
    result["texts"] = {"domain": {"path": cfg.domain_text, "documents": len(domain)},
                       "general": {"path": cfg.general_text, "documents": len(general)} if general else None}
    atomic_write_json(run_dir.path / "search.json", result)
    run_dir.finish({"objective": result["objective"], "target": cfg.target, "vary": cfg.vary,
                    "candidates": len(result["rows"]), "unranked": len(unranked), "best": best,
                    "best_model": result["best_model"]},
                   f"Merge search: {cfg.merge.method}, {cfg.target}" + (f" of {cfg.vary}" if cfg.vary else ""),
                   _report_sections(cfg, result))


def _report_sections(cfg: SearchConfig, result: dict[str, Any]) -> list[Section]:
    best = result["best"]
    summary = {"method": cfg.merge.method, "varied": cfg.target + (f" of {cfg.vary}" if cfg.vary else ""),
               "domain text": f"{cfg.domain_text} ({result['texts']['domain']['documents']} documents)",
               "general text": (f"{cfg.general_text} ({result['texts']['general']['documents']} documents)"
                                if cfg.general_text else "none"),
               "best value": best["value"] if best else "none", "best score": best["score"] if best else "none",
               "best model": result["best_model"] or "not kept"}
    header = ["value", "ppl domain", "ppl general", "score", "seconds", "best"]
    rows = [[r["value"], r["ppl_domain"], "–" if r["ppl_general"] is None else r["ppl_general"], r["score"],
             r["seconds"], "✓" if r is best else ""] for r in result["rows"]]
    return [
        Section("Objective", [Paragraph(result["objective"] + ". log(ppl) is the mean negative log-likelihood "
                                        "per token; ties go to the value listed first."), KeyValues(summary)]),
        Section("Candidates", [Table(header, rows),
                               Image(_search_png(cfg, result), alt="score and perplexity by value",
                                     caption=f"score and perplexity against {cfg.target}")]),
    ]


@plots.drawn
def _search_png(cfg: SearchConfig, result: dict[str, Any]) -> bytes:
    rows = sorted(result["rows"], key=lambda r: r["value"])
    values = [r["value"] for r in rows]

    def finite(key: str) -> list[float]:
        return [r[key] if r[key] is not None and math.isfinite(r[key]) else math.nan for r in rows]

    fig = plots.new_figure(9.0, 3.2)
    score_ax, ppl_ax = fig.subplots(1, 2)
    score_ax.plot(values, finite("score"), marker="o", markersize=3)
    if result["best"]:
        score_ax.axvline(result["best"]["value"], color="0.5", linestyle="--", linewidth=1, label="best")
        score_ax.legend(fontsize=8)
    score_ax.set(xlabel=cfg.target, ylabel="score (lower is better)", title="objective")
    ppl_ax.plot(values, finite("ppl_domain"), marker="o", markersize=3, label="domain")
    if cfg.general_text:
        ppl_ax.plot(values, finite("ppl_general"), marker="o", markersize=3, label="general")
    ppl_ax.set(xlabel=cfg.target, ylabel="perplexity", title="perplexity", yscale="log")
    ppl_ax.legend(fontsize=8)
    for ax in (score_ax, ppl_ax):
        ax.grid(alpha=0.3)
    return plots.figure_to_png(fig)
