"""Causal-LM training on the HF Trainer: continual pretraining (``cpt``) on packed blocks, or chat SFT (``sft``).

We build ``TrainingArguments`` and a few callbacks and let the Trainer (and accelerate under it: DDP, FSDP,
DeepSpeed) do the rest, so ``accelerate launch --config_file configs/accelerate/ddp.yaml $(which adaptlab) lm train``
works unchanged.

* **Schedule.** The learning rate is re-warmed linearly over ``warmup_steps`` from 0, then decays by a cosine
  to ``min_lr_ratio * learning_rate`` (transformers' ``cosine_with_min_lr``):
  ``lr(t) = lr * (r + (1 - r) * (1 + cos(pi * (t - w) / (T - w))) / 2)`` for ``t >= w``; re-warming and
  re-decaying is what makes continual pretraining match retraining (Ibrahim et al. 2024).
* **Training loss** is token-weighted: the model sums the cross-entropy over the target tokens of the whole
  accumulated batch and divides by their number (``num_items_in_batch``), across devices too.
* **Held-out perplexity.** The Trainer's ``eval_<split>_loss`` averages per-batch mean losses, each batch
  weighted by the batch size, not by its number of target tokens: it is *not* exact when batches hold
  different numbers of targets (packed blocks with several documents, SFT rows of different lengths, a short
  last batch). :class:`TokenNLL` therefore reduces the logits of every row to ``(sum of -log p, targets)`` on
  the device (``preprocess_logits_for_metrics``) and ``compute_metrics`` adds them over the split, gathered
  across processes with duplicates dropped. ``eval_<split>_nll = sum(-log p) / targets`` is the exact
  token-weighted mean and ``eval_<split>_perplexity = exp(nll)``; both are reported beside the Trainer's loss.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from adaptlab.config import StrictModel
from adaptlab.errors import ConfigError, DataError, ModelError
from adaptlab.lm.packing import IGNORE_INDEX
from adaptlab.runs import get_logger


class LoRAConfig(StrictModel):
    """LoRA adapters via peft; the final ``model/`` is merged into the base weights unless ``save: adapter``."""

    r: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = Field("all-linear", description="module names, or peft's 'all-linear'")
    save: Literal["merged", "adapter"] = "merged"


class LMTrainConfig(StrictModel):
    """Config of ``adaptlab lm train`` (see configs/lm_cpt.yaml and configs/lm_sft.yaml)."""

    name: str = "lm-train"
    mode: Literal["cpt", "sft"] = "cpt"
    model: str | None = Field(None, description="HF model directory or hub name")
    tokenizer: str | None = Field(None, description="defaults to the model's tokenizer")
    data: str | None = Field(None, description="cpt: prepared corpus directory; sft: JSONL of {messages}")
    eval_data: str | None = Field(None, description="sft only: held-out JSONL of {messages}")
    output: str | None = None
    max_length: int = Field(2048, ge=8, description="sft only: longer conversations are cut and counted")
    attn_implementation: str | None = Field(None, description="e.g. sdpa or flash_attention_2")
    learning_rate: float = Field(2e-5, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    warmup_steps: int = Field(100, ge=0, description="linear re-warm-up from 0")
    min_lr_ratio: float = Field(0.1, ge=0, lt=1, description="cosine only: floor as a fraction of learning_rate")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(8, ge=1, description="per device")
    eval_batch_size: int | None = Field(None, ge=1, description="per device; defaults to batch_size")
    grad_accum: int = Field(1, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    seed: int = 42
    bf16: bool | Literal["auto"] = "auto"
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    liger: bool | Literal["auto"] = "auto"
    lora: LoRAConfig | None = None
    save_steps: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="defaults to save_steps")
    logging_steps: int = Field(10, ge=1)
    resume: str = Field("auto", description="auto | never | PATH (checkpoint-N or run directory)")
    progress: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> LMTrainConfig:
        if "min_lr_ratio" in self.model_fields_set and self.lr_scheduler != "cosine" and self.min_lr_ratio:
            raise ValueError(f"min_lr_ratio applies to lr_scheduler: cosine only, not {self.lr_scheduler!r}")
        if self.mode == "cpt" and (self.eval_data or "max_length" in self.model_fields_set):
            raise ValueError("eval_data and max_length are for mode: sft; in mode cpt the held-out splits and the "
                             "block size come from the prepared corpus")
        return self


def resolve_bf16(setting: bool | str) -> bool:
    """``auto``: bf16 mixed precision when a CUDA device supports it; ``true`` on a machine without is an error."""
    supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if setting == "auto":
        return supported
    if setting and not supported:
        raise ConfigError("bf16: true, but no CUDA device with bf16 support is available; use bf16: auto or false")
    return bool(setting)


def resolve_liger(setting: bool | str) -> bool:
    """``auto``: Liger kernels (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU) when ``liger_kernel`` imports."""
    installed = importlib.util.find_spec("liger_kernel") is not None
    if setting == "auto":
        return installed
    if setting and not installed:
        raise ConfigError("liger: true, but the liger_kernel package is not installed; `pip install liger-kernel` "
                          "(needs a CUDA GPU with Triton) or set liger: auto / false")
    return bool(setting)


def processes_on_cpu() -> bool:
    """Several processes (``accelerate launch``, ``torchrun``) on a machine without CUDA: DDP over gloo on the CPU.

    accelerate builds a CPU process group only when told to use the CPU (``use_cpu``, or ``ACCELERATE_USE_CPU``
    from ``accelerate launch --cpu``); otherwise every process would train alone, all in the same run directory.
    """
    from accelerate.utils import get_int_from_env, parse_flag_from_env

    several = get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1) > 1
    return several and (not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU"))


def training_arguments(cfg: LMTrainConfig, checkpoints_dir: str, has_eval: bool, eval_on_start: bool = False) -> Any:
    """Map :class:`LMTrainConfig` onto ``TrainingArguments`` (transformers 5 names)."""
    from transformers import TrainingArguments

    scheduler, scheduler_kwargs = cfg.lr_scheduler, {}
    if cfg.lr_scheduler == "cosine" and cfg.min_lr_ratio > 0:
        scheduler, scheduler_kwargs = "cosine_with_min_lr", {"min_lr_rate": cfg.min_lr_ratio}
    return TrainingArguments(
        output_dir=checkpoints_dir,
        max_steps=cfg.max_steps or -1,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size or cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=scheduler,
        lr_scheduler_kwargs=scheduler_kwargs,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=resolve_bf16(cfg.bf16),
        activation_checkpointing=cfg.gradient_checkpointing,
        torch_compile=cfg.torch_compile,
        use_liger_kernel=resolve_liger(cfg.liger),
        eval_strategy="steps" if has_eval else "no",
        eval_on_start=has_eval and eval_on_start,
        eval_steps=cfg.eval_steps or cfg.save_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=None,  # CheckpointMarker rotates, after the new checkpoint is known to be complete
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to="none",
        use_cache=False,  # explicit: with a KV cache transformers would not mask packed documents apart
        disable_tqdm=not cfg.progress,
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=processes_on_cpu(),
    )


class TokenNLL:
    """Exact token-weighted held-out NLL for the Trainer (see the module docstring)."""

    @staticmethod
    def preprocess_logits_for_metrics(logits: Any, labels: torch.Tensor) -> torch.Tensor:
        """``[rows, 2]``: per row, the summed ``-log p`` of its shifted targets and how many there are."""
        if isinstance(logits, tuple):
            logits = logits[0]
        sums = []
        for row_logits, row_labels in zip(logits[:, :-1], labels[:, 1:], strict=True):
            targets = row_labels != IGNORE_INDEX
            nll = torch.nn.functional.cross_entropy(row_logits[targets].float(), row_labels[targets], reduction="sum")
            sums.append(torch.stack([nll, targets.sum().to(nll.dtype)]))
        return torch.stack(sums)

    @staticmethod
    def compute_metrics(prediction: Any) -> dict[str, float]:
        sums = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1, 2)
        targets = float(sums[:, 1].sum())
        if targets == 0:
            return {"nll": math.nan, "perplexity": math.nan, "tokens": 0}
        nll = float(sums[:, 0].sum()) / targets
        return {"nll": nll, "perplexity": math.exp(min(nll, 700.0)), "tokens": int(targets)}


def check_vocabulary(model: Any, tokenizer: Any, source: str) -> None:
    """Every token id the tokenizer can produce needs an embedding row."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ModelError(f"the tokenizer {source} has {len(tokenizer)} tokens but the model has only {rows} embedding "
                         "rows; use the model's own tokenizer, or resize the embeddings and save the model first")


def apply_lora(model: Any, lora: LoRAConfig) -> Any:
    """Wrap ``model`` with peft LoRA adapters (only they are trained)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # e.g. target modules not found in the model
        raise ConfigError(f"lora: {exc}") from None


def history_from_log(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training rows ``{step, epoch, loss, learning_rate, grad_norm}`` and one evaluation row per step that
    merges every split's ``eval_<split>_{loss,nll,perplexity,tokens}`` (the Trainer logs one entry per split)."""
    history: list[dict[str, Any]] = []
    evaluations: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        step = entry.get("step")
        if "loss" in entry:
            row = {"step": step, "epoch": entry.get("epoch")}
            row.update({k: entry[k] for k in ("loss", "learning_rate", "grad_norm") if k in entry})
            history.append(row)
        elif any(k.startswith("eval_") and k.endswith(("_loss", "_perplexity")) for k in entry):
            if step not in evaluations:
                evaluations[step] = {"step": step, "epoch": entry.get("epoch")}
                history.append(evaluations[step])
            evaluations[step].update({k: v for k, v in entry.items()
                                      if k.startswith("eval_") and k.endswith(("_loss", "_nll", "_perplexity",
                                                                               "_tokens"))})
    return history


# --------------------------------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    """Training rows, the held-out splits by name, and what the data preparation counted."""

    train: Any  # datasets.Dataset of {input_ids, position_ids, labels}
    evals: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def load_training_data(cfg: LMTrainConfig, tokenizer: Any, tokenizer_source: str) -> TrainingData:
    """cpt: the splits of a prepared corpus; sft: chat JSONL encoded with the tokenizer's chat template."""
    import datasets

    path = Path(cfg.data or "")
    if cfg.mode == "cpt":
        if path.is_file():
            raise DataError("mode cpt trains on a prepared corpus directory (from `adaptlab lm prepare`), not a file; "
                            "for a JSONL of chat messages use mode: sft", path)
        from adaptlab.lm.prepared import load_prepared

        corpus = load_prepared(path)
        check_corpus_tokenizer(corpus, tokenizer, tokenizer_source)
        evals = {"domain": corpus.eval_domain, "general": corpus.eval_general}
        empty = [name for name, split in evals.items() if split is not None and len(split) == 0]
        if empty:
            get_logger().warning("held-out split(s) %s of %s are empty: no perplexity for them", empty, path)
        evals = {name: split for name, split in evals.items() if split is not None and len(split) > 0}
        stats = {"block_size": corpus.block_size, "splits": corpus.manifest["splits"]}
        return TrainingData(corpus.train, evals, stats)

    from adaptlab.lm.sft_data import encode_sft_file, require_chat_template

    require_chat_template(tokenizer, tokenizer_source)
    rows, train_stats = encode_sft_file(tokenizer, path, cfg.max_length)
    stats, evals = {"train": train_stats.as_dict()}, {}
    if cfg.eval_data:
        eval_rows, eval_stats = encode_sft_file(tokenizer, cfg.eval_data, cfg.max_length)
        stats["held_out"] = eval_stats.as_dict()
        evals["held_out"] = datasets.Dataset.from_list(eval_rows)
    for name, counts in stats.items():
        if counts["truncated_conversations"] or counts["skipped_no_target_after_truncation"]:
            get_logger().warning(
                "%s: %d conversations longer than max_length=%d were cut (%d tokens, %d of them assistant "
                "targets); %d kept no target and were skipped", name, counts["truncated_conversations"],
                cfg.max_length, counts["truncated_tokens"], counts["truncated_target_tokens"],
                counts["skipped_no_target_after_truncation"])
        if counts["turns_without_special_end_token"]:
            get_logger().warning("%s: %d assistant turns end without a special token (EOS / end of turn) in the "
                                 "chat template's rendering: the model will not learn to stop there",
                                 name, counts["turns_without_special_end_token"])
    return TrainingData(datasets.Dataset.from_list(rows), evals, stats)


def check_corpus_tokenizer(corpus: Any, tokenizer: Any, tokenizer_source: str) -> None:
    """The corpus must have been tokenized by a tokenizer giving the same ids, else training learns garbage.

    ``adaptlab lm prepare`` stores the tokenizer's fingerprint in the manifest; a corpus without one
    (built by other means) is trusted with a warning.
    """
    from adaptlab.lm.prepared import tokenizer_fingerprint

    expected = corpus.manifest.get("tokenizer_fingerprint")
    if expected is None:
        get_logger().warning("%s has no tokenizer fingerprint in its manifest; make sure it was tokenized with %s",
                             corpus.path, tokenizer_source)
    elif expected != tokenizer_fingerprint(tokenizer):
        raise DataError(f"the corpus {corpus.path} was tokenized with {corpus.tokenizer}, whose ids differ from the "
                        f"training tokenizer {tokenizer_source}; prepare the corpus with the model's tokenizer")


def pad_token_id(tokenizer: Any) -> int:
    """Padding only fills rows that the collator masks out (labels -100, own positions): any id does."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


# ------------------------------------------------------------------------------------------- final model


def save_final_model(trainer: Any, tokenizer: Any, lora: LoRAConfig | None, target: Path) -> None:
    """Write the trained model (merged LoRA unless ``lora.save: adapter``) and tokenizer to ``target`` atomically.

    Saved into ``model.partial`` and renamed when complete. ``use_cache`` is switched back on for inference
    (training runs without a KV cache: with one, packed documents would attend to each other).
    """
    partial = target.with_name(target.name + ".partial")
    main = trainer.is_world_process_zero()
    if main and partial.exists():
        shutil.rmtree(partial)  # left by an interrupted earlier save of this same run
    trainer.accelerator.wait_for_everyone()
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.config.use_cache = True
    if lora is not None and lora.save == "merged":
        if main:
            model.merge_and_unload().save_pretrained(partial)
    else:
        trainer.save_model(str(partial))  # collective under FSDP / DeepSpeed; a peft model saves its adapter
    if main:
        tokenizer.save_pretrained(partial)
        (partial / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml of the run says it all
        os.replace(partial, target)
    trainer.accelerator.wait_for_everyone()
