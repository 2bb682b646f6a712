"""Causal-LM training settings and pieces: continual pretraining (``cpt``) on packed blocks, SFT (``sft``).

The Trainer is built in :mod:`adaptlab.lm.fit` (the one path of ``lm train`` and ``fractal sft``) and accelerate
under it does the rest (DDP, FSDP, DeepSpeed), so ``accelerate launch --config_file ddp.yaml $(which adaptlab) lm
train`` works unchanged (``adaptlab config cp accelerate/ddp .`` copies the shipped accelerate config).

* **Settings.** ``training:`` is :class:`LMTrainerSettings` (the HF Trainer's names); the LM keys (the
  ``dataset:`` block, run directory, checkpoints, resume) stay at the top of :class:`LMTrainConfig`. A trainer
  key at the top (e.g. ``batch_size``) is an error naming its new place (``training.per_device_train_batch_size``).
* **Schedule.** The learning rate is re-warmed linearly over ``warmup_steps`` from 0, then decays by a cosine
  to ``min_lr_rate * learning_rate`` (transformers' ``cosine_with_min_lr``):
  ``lr(t) = lr * (r + (1 - r) * (1 + cos(pi * (t - w) / (T - w))) / 2)`` for ``t >= w``; re-warming and
  re-decaying is what makes continual pretraining match retraining (Ibrahim et al. 2024).
* **Training loss** is token-weighted: the cross-entropy summed over the target tokens of the whole accumulated
  batch, divided by their number (``num_items_in_batch``), across devices too; with SFT loss weights it is
  ``sum w_t CE_t / sum w_t`` over the same tokens (:class:`~adaptlab.tuning.trainer.StrategyTrainer`).
* **Held-out perplexity.** The Trainer's ``eval_<split>_loss`` averages per-batch mean losses, each batch
  weighted by the batch size, not by its number of target tokens: it is *not* exact when batches hold
  different numbers of targets (packed blocks with several documents, SFT rows of different lengths, a short
  last batch). :class:`TokenNLL` therefore reduces the logits of every row to ``(sum of -log p, targets)`` on
  the device (``preprocess_logits_for_metrics``) and ``compute_metrics`` adds them over the split, gathered
  across processes with duplicates dropped. ``eval_<split>_nll = sum(-log p) / targets`` is the exact
  token-weighted mean (unweighted by SFT loss weights: every target counts once) and
  ``eval_<split>_perplexity = exp(nll)``; both are reported beside the Trainer's loss.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from adaptlab.config import StrictModel
from adaptlab.errors import ConfigError, DataError, ModelError
from adaptlab.lm.dataset_block import DatasetBlock
from adaptlab.lm.packing import IGNORE_INDEX
from adaptlab.runs import get_logger
from adaptlab.tuning.settings import TrainerSettings
from adaptlab.tuning.strategies import StrategyBlock


class LMTrainerSettings(TrainerSettings):
    """``training:`` of causal-LM training: :class:`TrainerSettings` with continual-pretraining defaults.

    2e-5 re-warmed over 100 steps, then a cosine decay to ``min_lr_rate`` = 0.1 of it (cosine only: with another
    ``lr_scheduler_type`` it defaults to none), 1 epoch, batch 8, weight decay 0.01. Two more Trainer switches
    are keys here: ``torch_compile`` and ``use_liger_kernel`` (``auto``: when ``liger_kernel`` is installed).
    """

    learning_rate: float = Field(2e-5, gt=0, description="peak learning rate, reached after warmup_steps")
    num_train_epochs: float = Field(
        1.0, gt=0, description="passes over the training blocks or examples (max_steps > 0 overrides it)")
    per_device_eval_batch_size: int = Field(8, ge=1, description="held-out sequences per device per forward pass")
    warmup_steps: float = Field(100, ge=0, description="re-warm-up from 0: a step count, or below 1 a fraction")
    lr_scheduler_type: str = Field("cosine", description="any transformers scheduler: cosine, linear, constant, ...")
    min_lr_rate: float | None = Field(0.1, ge=0, lt=1, description="cosine: decay to this fraction of learning_rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (decoupled)")
    torch_compile: bool = Field(False, description="torch.compile the model (faster steps after a warm-up)")
    use_liger_kernel: bool | Literal["auto"] = Field(
        "auto", description="Liger kernels (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU); auto: if installed")

    @model_validator(mode="before")
    @classmethod
    def _floor_is_for_cosine(cls, data: Any) -> Any:
        """The default floor belongs to the default cosine: another scheduler without a floor gets none."""
        if isinstance(data, dict) and "min_lr_rate" not in data \
                and data.get("lr_scheduler_type", cls.model_fields["lr_scheduler_type"].default) != "cosine":
            return {**data, "min_lr_rate": None}
        return data


# top-level keys of lm train before the training layer -> their key under training:
MOVED_TO_TRAINING = {"learning_rate": "learning_rate", "lr_scheduler": "lr_scheduler_type", "warmup_steps":
                     "warmup_steps", "min_lr_ratio": "min_lr_rate", "max_steps": "max_steps", "epochs":
                     "num_train_epochs", "batch_size": "per_device_train_batch_size", "eval_batch_size":
                     "per_device_eval_batch_size", "grad_accum": "gradient_accumulation_steps", "weight_decay":
                     "weight_decay", "max_grad_norm": "max_grad_norm", "seed": "seed", "bf16": "bf16",
                     "gradient_checkpointing": "gradient_checkpointing", "torch_compile": "torch_compile",
                     "liger": "use_liger_kernel", "logging_steps": "logging_steps", "progress": "progress"}


class CausalTrainingConfig(StrictModel):
    """What every causal-LM training command shares (``lm train``, ``fractal sft``): the model, the run
    directory, checkpoints and resume, the trainer settings under ``training:`` and the ``strategy:`` block."""

    name: str = Field("lm-train", description="names the run directory runs/<time>-<name> when output is not given")
    model: str | None = Field(None, description="HF model directory or hub name")
    output: str | None = Field(
        None, description="run directory; rerunning with the same output continues it (see resume)")
    max_length: int = Field(2048, ge=8, description="sft: longer examples are cut and counted; cpt on plain text "
                                                    "(dataset): the block size")
    attn_implementation: str | None = Field(None, description="e.g. sdpa or flash_attention_2")
    strategy: StrategyBlock = Field(default_factory=StrategyBlock, description="tuning strategies, by name")
    save_steps: int = Field(500, ge=1, description="a complete, resumable checkpoint every N optimizer steps")
    keep_checkpoints: int = Field(
        2, ge=1, description="complete checkpoints kept; older ones are deleted only once a newer one is complete")
    eval_steps: int | None = Field(None, ge=1, description="defaults to save_steps")
    resume: str = Field("auto", description="auto | never | PATH (checkpoint-N or run directory)")
    training: LMTrainerSettings = Field(
        default_factory=LMTrainerSettings, description="Trainer settings, in the HF Trainer's names (causal-LM "
        "defaults)")

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "lora" in data:
                raise ConfigError("'lora' is now 'strategy.peft' (method: lora, r, lora_alpha, lora_dropout, "
                                  "target_modules, save: merged|adapter; PEFT's names)")
            moved = [key for key in data if key in MOVED_TO_TRAINING and key not in cls.model_fields]
            if moved:
                raise ConfigError("; ".join(f"'{key}' is now 'training.{MOVED_TO_TRAINING[key]}'" for key in moved)
                                  + " (trainer settings live under training:, in the HF Trainer's names)")
        return data

    @model_validator(mode="after")
    def _resume_is_top_level(self) -> CausalTrainingConfig:
        if self.training.resume_from_checkpoint:
            raise ConfigError("training.resume_from_checkpoint: causal-LM training resumes with the top-level key "
                              "'resume' (auto | never | a checkpoint-N or run directory)")
        if self.training.early_stopping_patience:
            raise ConfigError("training.early_stopping_patience: causal-LM training runs its whole schedule (the "
                              "held-out perplexity of every evaluation is in the report); remove the key")
        return self


class LMTrainConfig(CausalTrainingConfig):
    """Config of ``adaptlab lm train`` (shipped examples: ``adaptlab config show lm_cpt`` and ``lm_sft``).

    The data: ``dataset:`` (:class:`~adaptlab.lm.dataset_block.DatasetBlock`: a file, a save_to_disk folder or a
    hub dataset, its format and column names) for SFT examples, or plain text for cpt, packed into blocks of
    ``max_length`` tokens; ``eval_dataset:`` the same for a held-out split. ``data:`` is a prepared corpus
    directory for cpt (``adaptlab lm prepare``: cleaned, de-duplicated, with held-out domain and general splits),
    and for sft the shorthand of ``dataset: {path: DATA}`` (``eval_data`` likewise), as before the block.
    """

    mode: Literal["cpt", "sft"] = Field(
        "cpt", description="cpt: continual pretraining on packed blocks from lm prepare; sft: supervised fine-tuning "
        "on chat or prompt/completion examples, loss on the answers only")
    tokenizer: str | None = Field(None, description="defaults to the model's tokenizer")
    dataset: DatasetBlock | None = Field(
        None, description="the training data: {path, format, columns, roles, split, subset}; sft: examples "
                          "(messages, sharegpt, alpaca, prompt_completion), cpt: plain text (format text)")
    eval_dataset: DatasetBlock | None = Field(None, description="held-out data in the same form: perplexity on "
                                                                "its target tokens")
    data: str | None = Field(None, description="cpt: a prepared corpus directory (adaptlab lm prepare); sft: "
                                               "shorthand for dataset: {path: DATA}")
    eval_data: str | None = Field(None, description="sft: shorthand for eval_dataset: {path: EVAL_DATA}")

    @model_validator(mode="before")
    @classmethod
    def _data_given_once(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for short, block in (("data", "dataset"), ("eval_data", "eval_dataset")):
                if data.get(short) is not None and data.get(block) is not None:
                    raise ConfigError(f"'{short}' and '{block}' both name data; keep '{block}' (the dataset block: "
                                      f"path, format, columns, ...) and remove '{short}', its old shorthand")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> LMTrainConfig:
        if self.mode == "cpt" and self.eval_data:
            raise ConfigError("eval_data is for mode sft; in mode cpt a prepared corpus (data) brings its held-out "
                              "splits, and plain text (dataset) takes eval_dataset")
        if self.mode == "cpt" and self.data and (self.eval_dataset or "max_length" in self.model_fields_set):
            raise ConfigError("eval_dataset and max_length are for plain text (dataset: ..., format: text) or mode "
                              "sft; a prepared corpus (data) brings its held-out splits and block size")
        return self

    def dataset_blocks(self) -> dict[str, tuple[str, DatasetBlock]]:
        """``{"train": (config key, block), "held_out": ...}``: the blocks, or the ``data`` shorthands of sft."""
        blocks = {}
        for split, key, block, short_key, shorthand in (
                ("train", "dataset", self.dataset, "data", self.data),
                ("held_out", "eval_dataset", self.eval_dataset, "eval_data", self.eval_data)):
            if block is not None:
                blocks[split] = (key, block)
            elif shorthand and self.mode == "sft":
                blocks[split] = (short_key, DatasetBlock(path=shorthand))
        return blocks


def resolve_liger(setting: bool | str) -> bool:
    """``auto``: Liger kernels (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU) when ``liger_kernel`` imports."""
    installed = importlib.util.find_spec("liger_kernel") is not None
    if setting == "auto":
        return installed
    if setting and not installed:
        raise ConfigError("training.use_liger_kernel: true, but the liger_kernel package is not installed; "
                          "`pip install liger-kernel` (needs a CUDA GPU with Triton) or set it to auto / false")
    return bool(setting)


def processes_on_cpu() -> bool:
    """Several processes (``accelerate launch``, ``torchrun``) on a machine without CUDA: DDP over gloo on the CPU.

    accelerate builds a CPU process group only when told to use the CPU (``use_cpu``, or ``ACCELERATE_USE_CPU``
    from ``accelerate launch --cpu``); otherwise every process would train alone, all in the same run directory.
    """
    from accelerate.utils import get_int_from_env, parse_flag_from_env

    several = get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1) > 1
    return several and (not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU"))


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

    train: Any  # datasets.Dataset of {input_ids, position_ids, labels} (+ weights: weighted SFT)
    evals: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def load_training_data(cfg: LMTrainConfig, tokenizer: Any, tokenizer_source: str) -> TrainingData:
    """cpt: the splits of a prepared corpus, or plain text packed here; sft: examples encoded by
    :mod:`adaptlab.lm.sft_data`."""
    import datasets

    if cfg.mode == "cpt" and cfg.dataset is None:
        return prepared_corpus_data(Path(cfg.data or ""), tokenizer, tokenizer_source)
    if cfg.mode == "cpt":
        return packed_text_data(cfg, tokenizer)

    from adaptlab.lm.sft_data import encode_sft_dataset

    stats, splits = {}, {}
    for split, (key, block) in cfg.dataset_blocks().items():
        rows, split_stats = encode_sft_dataset(tokenizer, block, cfg.max_length, tokenizer_source, key)
        stats[split] = split_stats.as_dict()
        splits[split] = datasets.Dataset.from_list(rows)
    warn_about_cuts(stats, cfg.max_length)
    train = splits.pop("train")
    return TrainingData(train, splits, stats)


def prepared_corpus_data(path: Path, tokenizer: Any, tokenizer_source: str) -> TrainingData:
    """The training and held-out (domain, general) splits of a corpus from ``adaptlab lm prepare``."""
    if path.is_file():
        raise DataError("mode cpt's data is a prepared corpus directory (from `adaptlab lm prepare`), not a file; "
                        "give a text file as dataset: {path: FILE, format: text}, and chat data with mode: sft", path)
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


def packed_text_data(cfg: LMTrainConfig, tokenizer: Any) -> TrainingData:
    """Plain-text documents of the ``dataset`` blocks, tokenized (``[BOS] text [EOS]``) and packed into blocks of
    ``max_length`` tokens that keep document boundaries (:mod:`adaptlab.lm.packing`). No cleaning or
    de-duplication: ``adaptlab lm prepare`` does those, and holds out text, for a corpus worth it."""
    import datasets

    from adaptlab.lm.dataset_block import read_texts
    from adaptlab.lm.packing import encode_document, pack_documents

    splits, counts = {}, {}
    for split, (key, block) in cfg.dataset_blocks().items():
        rows, packing = pack_documents([encode_document(tokenizer, text) for text in read_texts(block, key)],
                                       cfg.max_length)
        splits[split] = datasets.Dataset.from_list(rows)
        counts[split] = {"rows": len(rows), **packing.as_dict()}
    train = splits.pop("train")
    return TrainingData(train, splits, {"block_size": cfg.max_length, "splits": counts})


def warn_about_cuts(stats: dict[str, dict[str, Any]], max_length: int) -> None:
    """A warning per split for examples cut at ``max_length`` and turns that teach no end of turn."""
    for name, counts in stats.items():
        if counts["truncated_conversations"] or counts["skipped_no_target_after_truncation"]:
            get_logger().warning(
                "%s: %d examples longer than max_length=%d were cut (%d tokens, %d of them targets); %d kept no "
                "target and were skipped", name, counts["truncated_conversations"], max_length,
                counts["truncated_tokens"], counts["truncated_target_tokens"],
                counts["skipped_no_target_after_truncation"])
        if counts["turns_without_special_end_token"]:
            get_logger().warning("%s: %d assistant turns end without a special token (EOS / end of turn) in the "
                                 "chat template's rendering: the model will not learn to stop there",
                                 name, counts["turns_without_special_end_token"])


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
