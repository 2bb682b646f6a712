"""``adaptlab lm train``: continual pretraining (``mode: cpt``) or SFT (``mode: sft``) of a causal LM.

Read top to bottom: validate config -> tokenizer and data -> run directory (new, or the one to resume) ->
:func:`adaptlab.lm.fit.fit` (model + LoRA + strategies, StrategyTrainer with the checkpoint marker, final
evaluation, ``model/``) -> metrics.json and report.html. Under ``accelerate launch`` every process runs this;
only the main one creates, renames and writes files.
"""

from __future__ import annotations

from typing import Any

from adaptlab.errors import ConfigError
from adaptlab.lm.fit import check_settings, fit, training_run
from adaptlab.lm.loading import load_tokenizer
from adaptlab.lm.train import LMTrainConfig, load_training_data, processes_on_cpu
from adaptlab.models.checks import check_local_model
from adaptlab.models.gguf import resolve_model
from adaptlab.report.html import Image, KeyValues, Paragraph, Section, Table
from adaptlab.report.plots import loss_curve_png
from adaptlab.runs import RunDir, get_logger

__all__ = ["LMTrainConfig", "train"]

PERPLEXITY_NOTE = (
    "Held-out perplexity is exp of the token-weighted mean negative log-likelihood over every target token of "
    "the split (sum over tokens / number of tokens, exact across batches and processes). The Trainer's own "
    "eval_<split>_loss, kept beside it in metrics.json, weights each batch equally whatever its number of "
    "tokens, so it can differ slightly. The training loss is token-weighted over each optimizer step's batch "
    "(with SFT loss weights: sum w CE / sum w over the step's target tokens)."
)
NOTE_BY_MODE = {
    "cpt": " Targets are every token of the packed blocks but the first of each document (piece), which is not "
           "predicted from the document before it.",
    "sft": " Targets are the assistant tokens (with their end-of-turn token) or completions of the held-out "
           "examples.",
}


def train(cfg: LMTrainConfig) -> tuple[RunDir, dict[str, Any]]:
    """Train, evaluate on the held-out splits during training, and save ``model/``; returns the run and metrics."""
    from accelerate import PartialState

    if not cfg.model:
        raise ConfigError("no model: set 'model' to an HF model directory (or hub name) in the config")
    if not cfg.data and not cfg.dataset:
        raise ConfigError("no training data: set 'dataset' (path: a file, save_to_disk folder or hub dataset; "
                          "format: messages, sharegpt, alpaca, prompt_completion, or text for mode cpt), or in mode "
                          "cpt 'data' (a prepared corpus directory from `adaptlab lm prepare`)")
    check_settings(cfg)
    state = PartialState(cpu=processes_on_cpu())  # the same process group the Trainer will use
    model_dir = resolve_model(cfg.model, "model")
    check_local_model(model_dir, "causal_lm")
    tokenizer_source = resolve_model(cfg.tokenizer, "tokenizer") if cfg.tokenizer else model_dir
    tokenizer = load_tokenizer(tokenizer_source, "tokenizer" if cfg.tokenizer else "model")
    data = load_training_data(cfg, tokenizer, tokenizer_source)
    source = cfg.dataset.path if cfg.dataset else cfg.data

    with training_run(cfg, state) as (run, checkpoint):
        get_logger().info("%s training of %s on %s in %s%s", cfg.mode, cfg.model, source, run.path,
                          f", resuming from {checkpoint}" if checkpoint else "")
        trained = fit(cfg, run, checkpoint, model_dir, tokenizer, tokenizer_source, data, state)
        metrics = {"mode": cfg.mode, "model": cfg.model, "tokenizer": tokenizer_source, "data": source,
                   **trained, "data_stats": data.stats}
        if state.is_main_process:
            run.finish(metrics, f"LM training ({cfg.mode}): {cfg.name}", report_sections(metrics))
            get_logger().info("saved %s and metrics in %s", run.model, run.path)
    return run, metrics


def report_sections(metrics: dict[str, Any]) -> list[Section]:
    history = metrics["history"]
    evaluations = [row for row in history if any(k.endswith("_perplexity") for k in row)]
    splits = sorted({k.removeprefix("eval_").removesuffix("_perplexity") for row in evaluations for k in row
                     if k.endswith("_perplexity")})
    summary = {k: metrics[k] for k in ("mode", "model", "data", "steps", "epochs", "global_batch_size", "processes",
                                       "bf16", "liger", "torch_compile", "strategies", "resumed_from",
                                       "train_seconds")}
    summary.update({k: round(v, 4) for k, v in metrics.items() if k.startswith("final_")})
    sections = [
        Section("Run", [KeyValues(summary)]),
        Section("Loss curves", [Image(loss_curve_png(history, metrics["mode"]), alt="loss and perplexity curves"),
                                Paragraph(PERPLEXITY_NOTE + NOTE_BY_MODE[metrics["mode"]])]),
    ]
    if evaluations:
        rows = [[row["step"], *[row.get(f"eval_{s}_perplexity") for s in splits]] for row in evaluations]
        sections.append(Section("Held-out perplexity", [Table(["step", *splits], rows)]))
    stats = metrics["data_stats"]
    if "splits" in stats:  # cpt: the prepared corpus
        table = [[name, row.get("rows"), row.get("tokens")] for name, row in stats["splits"].items()]
        blocks = [Table(["split", "blocks", "tokens"], table, caption=f"block size {stats['block_size']}")]
    else:  # sft: what encoding counted, truncation included
        blocks = [KeyValues(counts, caption=name) for name, counts in stats.items()]
    sections.append(Section("Data", blocks))
    return sections


