"""``adaptlab lm train``: continual pretraining (``mode: cpt``) or chat SFT (``mode: sft``) of a causal LM.

Read top to bottom: validate config -> tokenizer and data -> run directory (new, or the one to resume) ->
model (+ LoRA) -> HF Trainer with the checkpoint marker -> final evaluation -> model/, metrics.json, report.html.
Under ``accelerate launch`` every process runs this; only the main one creates, renames and writes files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from adaptlab.config import save_config
from adaptlab.errors import AdaptlabError, ConfigError
from adaptlab.lm.checkpoints import CheckpointMarker, open_training_run
from adaptlab.lm.loading import load_tokenizer
from adaptlab.lm.packing import PackedCollator
from adaptlab.lm.train import (
    LMTrainConfig,
    LoRAConfig,
    TokenNLL,
    apply_lora,
    check_vocabulary,
    history_from_log,
    load_training_data,
    pad_token_id,
    processes_on_cpu,
    resolve_bf16,
    resolve_liger,
    save_final_model,
    training_arguments,
)
from adaptlab.models.checks import check_local_model
from adaptlab.models.gguf import resolve_model
from adaptlab.report.html import Image, KeyValues, Paragraph, Section, Table, write_report
from adaptlab.report.plots import loss_curve_png
from adaptlab.runs import RunDir, atomic_write_json, get_logger, keep_on_failure

__all__ = ["LMTrainConfig", "LoRAConfig", "train"]

PERPLEXITY_NOTE = (
    "Held-out perplexity is exp of the token-weighted mean negative log-likelihood over every target token of "
    "the split (sum over tokens / number of tokens, exact across batches and processes). The Trainer's own "
    "eval_<split>_loss, kept beside it in metrics.json, weights each batch equally whatever its number of "
    "tokens, so it can differ slightly. The training loss is token-weighted over each optimizer step's batch."
)
NOTE_BY_MODE = {
    "cpt": " Targets are every token of the packed blocks but the first of each document (piece), which is not "
           "predicted from the document before it.",
    "sft": " Targets are the assistant tokens (with their end-of-turn token) of the held-out conversations.",
}


def train(cfg: LMTrainConfig) -> tuple[RunDir, dict[str, Any]]:
    """Train, evaluate on the held-out splits during training, and save ``model/``; returns the run and metrics."""
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, PrinterCallback, Trainer, set_seed

    if not cfg.model:
        raise ConfigError("no model: set 'model' to an HF model directory (or hub name) in the config")
    if not cfg.data:
        raise ConfigError("no training data: set 'data' (mode cpt: a prepared corpus directory from "
                          "`adaptlab lm prepare`; mode sft: a JSONL file of {\"messages\": [...]})")
    resolve_bf16(cfg.bf16)  # a wrong setting fails now, before anything is written
    resolve_liger(cfg.liger)
    if cfg.lora and cfg.lora.save == "merged" and os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        raise ConfigError("lora.save: merged needs the whole model in one process; under FSDP use lora.save: "
                          "adapter and merge afterwards (peft's merge_and_unload)")
    state = PartialState(cpu=processes_on_cpu())  # the same process group the Trainer will use
    if state.num_processes > 1 and not cfg.output:
        raise ConfigError("set 'output' (--output DIR) when training with several processes, so that they all "
                          "find the same run directory")
    model_dir = resolve_model(cfg.model, "model")
    check_local_model(model_dir, "causal_lm")
    tokenizer_source = resolve_model(cfg.tokenizer, "tokenizer") if cfg.tokenizer else model_dir
    tokenizer = load_tokenizer(tokenizer_source, "tokenizer" if cfg.tokenizer else "model")
    data = load_training_data(cfg, tokenizer, tokenizer_source)

    run, checkpoint = open_run(cfg, state)
    log = get_logger()
    log.info("%s training of %s on %s in %s%s", cfg.mode, cfg.model, cfg.data, run.path,
             f", resuming from {checkpoint}" if checkpoint else "")

    set_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=cfg.attn_implementation)
    check_vocabulary(model, tokenizer, tokenizer_source)
    if cfg.lora is not None:
        model = apply_lora(model, cfg.lora)
    # evaluate at step 0 too (the baseline), but not again at the step a resumed run starts from
    args = training_arguments(cfg, str(run.path / "checkpoints"), has_eval=bool(data.evals),
                              eval_on_start=checkpoint is None)
    trainer = Trainer(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.evals or None,
        processing_class=tokenizer, data_collator=PackedCollator(pad_token_id(tokenizer)),
        compute_metrics=TokenNLL.compute_metrics if data.evals else None,
        preprocess_logits_for_metrics=TokenNLL.preprocess_logits_for_metrics if data.evals else None,
        callbacks=[CheckpointMarker(cfg.keep_checkpoints)],
    )
    if not cfg.progress:  # no log dicts on stdout either; the history goes to metrics.json and the report
        trainer.remove_callback(PrinterCallback)
    keep_on_failure(run, f"run the same command with --output {run.path} resume=auto to continue from its newest "
                         "complete checkpoint (or from step 0 if none was saved)")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started
    if data.evals and trainer.state.global_step % args.eval_steps != 0:
        trainer.evaluate()  # the last step's perplexity, when it was not an evaluation step
    save_final_model(trainer, tokenizer, cfg.lora, run.model)

    history = history_from_log(trainer.state.log_history)
    metrics = {
        "mode": cfg.mode, "model": cfg.model, "tokenizer": tokenizer_source, "data": cfg.data,
        "steps": trainer.state.global_step, "epochs": trainer.state.epoch,
        "global_batch_size": cfg.batch_size * cfg.grad_accum * state.num_processes,
        "processes": state.num_processes, "bf16": args.bf16, "liger": args.use_liger_kernel,
        "torch_compile": args.torch_compile, "lora": cfg.lora.model_dump() if cfg.lora else None,
        "resumed_from": str(checkpoint) if checkpoint else None, "train_seconds": round(seconds, 2),
        "data_stats": data.stats, **final_values(history), "history": history,
    }
    if state.is_main_process:
        atomic_write_json(run.metrics, metrics)
        write_report(run.report, f"LM training ({cfg.mode}): {cfg.name}", report_sections(metrics))
        log.info("saved %s and metrics in %s", run.model, run.path)
    return run, metrics


def open_run(cfg: LMTrainConfig, state: Any) -> tuple[RunDir, Path | None]:
    """The main process creates (or reopens, to resume) the run directory and sends it to the others.

    A refusal (non-empty output, changed config) is sent the same way, so every process stops with the same
    error instead of waiting for a main process that is gone.
    """
    from accelerate.utils import broadcast_object_list

    config = cfg.model_dump(mode="json")
    opened: list[Any] = [None]
    if state.is_main_process:
        try:
            opened = [open_training_run(config, cfg.output, cfg.name, cfg.resume)]
        except AdaptlabError as exc:
            opened = [exc]
    if state.num_processes > 1:
        broadcast_object_list(opened)
    if isinstance(opened[0], AdaptlabError):
        raise opened[0]
    run, checkpoint, reopened = opened[0]
    if state.is_main_process and not reopened:
        save_config(cfg, run.config)
    return run, checkpoint


def final_values(history: list[dict[str, Any]]) -> dict[str, float]:
    """``final_train_loss`` (the last logged window) and the last ``final_eval_<split>_{perplexity,nll}``."""
    final: dict[str, float] = {}
    for row in history:
        if "loss" in row:
            final["final_train_loss"] = row["loss"]
        for key, value in row.items():
            if key.startswith("eval_") and key.endswith(("_perplexity", "_nll")):
                final[f"final_{key}"] = value
    return final


def report_sections(metrics: dict[str, Any]) -> list[Section]:
    history = metrics["history"]
    evaluations = [row for row in history if any(k.endswith("_perplexity") for k in row)]
    splits = sorted({k.removeprefix("eval_").removesuffix("_perplexity") for row in evaluations for k in row
                     if k.endswith("_perplexity")})
    summary = {k: metrics[k] for k in ("mode", "model", "data", "steps", "epochs", "global_batch_size", "processes",
                                       "bf16", "liger", "torch_compile", "lora", "resumed_from", "train_seconds")}
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


