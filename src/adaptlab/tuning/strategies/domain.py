"""``strategy.domain``: task- and domain-adaptive pretraining (TAPT, DAPT) of an encoder before fine-tuning.

Gururangan et al. 2020 ("Don't Stop Pretraining"): continuing the masked-LM objective of an encoder on unlabeled
text of the task (TAPT: the task's own training texts) or of its domain (DAPT: a larger domain corpus) before
fine-tuning helps in every domain they tried, most when labels are few. Here both are one stage before training
proper, in the same run (:meth:`Domain.before_training`):

1. **Texts.** ``texts`` files (one text per line, or records JSONL/CoNLL: their texts), or by default the task's
   own training texts. They are stripped, empty ones dropped and exact duplicates removed (counted in the summary);
   nothing left is an error naming the files.
2. **A masked-LM model shaped like the task model's encoder.** ``AutoModelForMaskedLM`` with the task model's
   config, its head loaded from the checkpoint the task model came from when that has one (a BERT checkpoint
   does; a sentence-transformers encoder such as the packaged MiniLM does not, and then a new head is initialised
   and learnt in the stage, which the log says). The task model's *current* encoder weights are copied in, so a
   student another strategy initialised before this one (``strategy.distill.init_layers``) is the one adapted.
3. **Masked-LM training** with whole-word masking (:mod:`adaptlab.tuning.masking`: a share ``mlm_probability``
   of the words, all their subwords, 80/10/10 replacement) for ``max_steps`` steps, through the training layer
   (:func:`~adaptlab.tuning.settings.training_arguments`, :class:`~adaptlab.tuning.masked_lm_loss.MaskedLMTrainer`,
   whose head scores the masked positions only: the same loss, about half the work for a small encoder).
   The loss on up to 256 of the texts, with fixed masks, is measured before and after (``mlm_loss_before``,
   ``mlm_loss_after``).
4. **Transfer.** The adapted encoder's weights (embeddings and every transformer layer) are copied by name into
   the task model's encoder, all of them or an error; the task's head keeps its fresh initialisation, and a pooler
   (which the masked-LM objective does not train) its pretrained weights.

The stage is resumable (:mod:`adaptlab.tuning.stages`): it writes ``<run>/domain/`` (``stage.json``, marked
checkpoints every ``save_steps``, the adapted masked-LM model in ``model/``, usable as a fill-mask model, and
``done.json`` last). Running the same command again with the same ``--output`` skips a finished stage and resumes an
interrupted one from its newest complete checkpoint, which gives the same weights as an uninterrupted run (the
masks are drawn from torch's random state, which each checkpoint saves).
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from adaptlab.config import StrictModel
from adaptlab.errors import ModelError, StrategyError
from adaptlab.runs import RunDir, get_logger, keep_on_failure
from adaptlab.tuning.families import Family, unwrap
from adaptlab.tuning.stages import finish_stage, finished_summary, start_stage
from adaptlab.tuning.strategies import register
from adaptlab.tuning.strategies.base import Strategy, TaskData

LOSS_SAMPLE = 256  # texts on which the loss before and after the stage is measured, with fixed masks


class DomainConfig(StrictModel):
    """Continued masked-LM pretraining of the encoder on unlabeled text before fine-tuning (TAPT / DAPT)."""

    texts: list[str] = Field(default_factory=list,
                             description="files of unlabeled domain text (one text per line, or records JSONL/CoNLL: "
                                         "their texts): DAPT; empty: the task's own training texts (TAPT)")
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="share of the words (whole-word masking) or "
                                                                 "subwords that are masked and predicted")
    whole_word_masking: bool = Field(True, description="mask all subwords of a chosen word together (words as the "
                                                       "tokenizer's pre-tokenizer splits them)")
    max_steps: int = Field(500, ge=1, description="optimizer steps of masked-LM training")
    learning_rate: float = Field(1e-4, gt=0, description="peak learning rate (linear warm-up and decay)")
    per_device_train_batch_size: int = Field(32, ge=1, description="texts per batch and device")
    max_length: int | None = Field(None, ge=8, description="subwords per text; default: the task's max_length")
    warmup_steps: float = Field(0.06, ge=0, description="a step count, or below 1 a fraction of max_steps")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not on biases and norms)")
    save_steps: int = Field(100, ge=1, description="a resumable checkpoint every this many steps")
    seed: int | None = Field(None, description="masking and data order; default: the training seed")


@dataclass
class CleanTexts:
    """Unlabeled texts after cleaning, and what cleaning removed."""

    texts: list[str]
    source: str  # "task" or the files
    read: int
    empty: int
    duplicates: int


def clean_texts(raw: list[str], source: str) -> CleanTexts:
    """Strip, drop empty texts and exact duplicates (the first occurrence is kept, in order)."""
    stripped = [text.strip() for text in raw]
    kept = list(dict.fromkeys(text for text in stripped if text))
    empty = sum(not text for text in stripped)
    return CleanTexts(kept, source, len(raw), empty, len(raw) - empty - len(kept))


def domain_texts(files: list[str], task_texts: list[str]) -> CleanTexts:
    """The cleaned texts of ``files`` (or of the task's training texts when there are none); nothing left is a
    :class:`StrategyError` naming where they came from."""
    from adaptlab.data.texts import read_texts

    raw = [text for path in files for text in read_texts(path, None)] if files else list(task_texts)
    cleaned = clean_texts(raw, ", ".join(files) if files else "task")
    if not cleaned.texts:
        where = f"texts {files}" if files else "the task's training texts (texts: [] means TAPT on them)"
        raise StrategyError(Domain.name, f"no text is left after cleaning {where}: {cleaned.read} read, all empty; "
                                         "give files with one text per line, or records JSONL/CoNLL")
    return cleaned


def encoder_names(model: Any, family: Family) -> set[str]:
    """Names (relative to the base model) of the encoder's parameters: embeddings and transformer layers."""
    positions = family.positions(model)
    return {name for name, param in family.base(model).named_parameters() if positions[id(param)] != "head"}


def copy_encoder(source: Any, target: Any, required: set[str], what: str) -> list[str]:
    """Copy every parameter the two base models share by name and shape from ``source`` to ``target``; each of
    ``required`` must be among them (a :class:`ModelError` otherwise). Returns ``target``'s parameters left as
    they were (a pooler)."""
    import torch

    sources, targets = dict(source.named_parameters()), dict(target.named_parameters())
    shared = {name for name in sources.keys() & targets.keys() if sources[name].shape == targets[name].shape}
    unmatched = sorted(required - shared)
    if unmatched:
        raise ModelError(f"copying {what}: {len(unmatched)} encoder weights have no counterpart of the same shape "
                         f"({', '.join(unmatched[:4])}, ...); this encoder cannot be adapted this way")
    with torch.no_grad():
        for name in shared:
            targets[name].copy_(sources[name])
    return sorted(targets.keys() - shared)


def masked_lm_like(model: Any) -> tuple[Any, bool]:
    """``(masked-LM model with model's config, whether its head is the checkpoint's own)``: the head is loaded
    from the checkpoint the model came from when that has one (local files only), else initialised anew."""
    from transformers import AutoModelForMaskedLM

    config = copy.deepcopy(unwrap(model).config)
    config.architectures = None
    source = getattr(config, "_name_or_path", "") or ""
    if source:
        try:
            masked_lm, info = AutoModelForMaskedLM.from_pretrained(
                source, config=config, output_loading_info=True, local_files_only=True, ignore_mismatched_sizes=True)
        except (OSError, ValueError):
            pass
        else:
            prefix = masked_lm.base_model_prefix + "."
            not_loaded = set(info["missing_keys"]) | {key for key, *_ in info["mismatched_keys"]}
            return masked_lm, not any(not key.startswith(prefix) for key in not_loaded)
    return AutoModelForMaskedLM.from_config(config), False


def fixed_mask_loss(masked_lm: Any, rows: dict[str, list], tokenizer: Any, probability: float, seed: int) -> float:
    """The masked-LM loss over the first :data:`LOSS_SAMPLE` rows, the same masks at every call (``seed``):
    ``sum CE / number of masked subwords``."""
    import torch

    from adaptlab.tuning.masking import WholeWordMaskCollator

    collate = WholeWordMaskCollator(tokenizer, probability, torch.Generator().manual_seed(seed))
    count = min(LOSS_SAMPLE, len(rows["input_ids"]))
    device = next(masked_lm.parameters()).device
    was_training, total, masked = masked_lm.training, 0.0, 0
    masked_lm.eval()
    with torch.no_grad():
        for start in range(0, count, 32):
            batch = collate([{key: values[i] for key, values in rows.items()}
                             for i in range(start, min(start + 32, count))])
            batch = {key: value.to(device) for key, value in batch.items()}
            n = int((batch["labels"] != -100).sum())
            total += float(masked_lm(**batch).loss) * n
            masked += n
    masked_lm.train(was_training)
    return total / masked


class Domain(Strategy):
    name = "domain"
    config: DomainConfig

    def __init__(self, config: DomainConfig, family: Family):
        super().__init__(config, family)
        self.done: dict[str, Any] = {}

    def check(self, model: Any, others: dict[str, Strategy]) -> None:
        if self.family.kind != "encoder":
            raise StrategyError(self.name, "continued masked-LM pretraining is for encoder students (NER, RE, text "
                                           "classification); for a causal LM use `adaptlab lm train` with mode: cpt")
        from transformers import MODEL_FOR_MASKED_LM_MAPPING

        config = unwrap(model).config
        if type(config) not in MODEL_FOR_MASKED_LM_MAPPING:
            raise StrategyError(self.name, f"{self.family.describe(model)} has no masked-LM form in transformers "
                                           "(AutoModelForMaskedLM); use a BERT-family encoder (BERT, MiniLM, RoBERTa, "
                                           "DistilBERT, ...)")

    def before_training(self, model: Any, task: TaskData) -> Any:
        tokenizer = task.tokenizer
        if tokenizer.mask_token_id is None:
            raise StrategyError(self.name, f"the tokenizer of {self.family.describe(model)} has no mask token")
        if self.config.whole_word_masking and not getattr(tokenizer, "is_fast", False):
            raise StrategyError(self.name, "whole_word_masking needs a fast tokenizer (its word ids); set "
                                           "whole_word_masking: false")
        texts = domain_texts(self.config.texts, task.texts)
        seed = task.seed if self.config.seed is None else self.config.seed
        max_length = self.config.max_length or task.max_length or 512
        max_length = min(max_length, getattr(unwrap(model).config, "max_position_embeddings", max_length))
        stage = task.output_dir / self.name
        self.start(stage, model, texts, seed, max_length)
        keep_on_failure(RunDir(task.output_dir), f"run the same command again with --output {task.output_dir}: the "
                                                 f"domain-adaptive pretraining in {stage} continues where it stopped")
        finished = finished_summary(stage)
        if finished is not None:
            from transformers import AutoModelForMaskedLM

            get_logger().info("domain-adaptive pretraining already done: %s", stage / "model")
            masked_lm = AutoModelForMaskedLM.from_pretrained(stage / "model")
            self.done = {**finished, "reused": True}
        else:
            masked_lm = self.pretrain(model, task, texts, seed, max_length, stage)
        left = copy_encoder(masked_lm.base_model, self.family.base(model), encoder_names(model, self.family),
                            "the adapted encoder into the task model")
        if left:
            get_logger().info("kept the pretrained %s of the task model (the masked-LM objective does not train it)",
                              ", ".join(left))
        return model

    def start(self, stage: Path, model: Any, texts: CleanTexts, seed: int, max_length: int) -> None:
        """Record what the stage is made from; a stage in this run made from anything else is refused."""
        digest = hashlib.sha256("\n".join(texts.texts).encode("utf-8")).hexdigest()
        made_from = {"model": getattr(unwrap(model).config, "_name_or_path", ""), "seed": seed,
                     "max_length": max_length, "texts": len(texts.texts), "texts_sha256": digest,
                     "settings": self.config.model_dump(mode="json", exclude={"seed", "max_length"})}
        earlier = start_stage(stage, made_from)
        if earlier is not None:
            changed = sorted(key for key in made_from if earlier.get(key) != made_from[key])
            raise StrategyError(self.name, f"{stage} holds a stage made from other {', '.join(changed)}; give "
                                           "another output directory (adaptlab never overwrites a stage)")

    def pretrain(self, model: Any, task: TaskData, texts: CleanTexts, seed: int, max_length: int,
                 stage: Path) -> Any:
        """Masked-LM training of a copy of ``model``'s encoder; returns the adapted masked-LM model."""
        from datasets import Dataset

        from adaptlab.lm.checkpoints import CheckpointMarker, newest_valid_checkpoint
        from adaptlab.tuning.masked_lm_loss import MaskedLMTrainer
        from adaptlab.tuning.masking import WholeWordMaskCollator, masking_rows
        from adaptlab.tuning.settings import TrainerSettings, training_arguments
        from adaptlab.tuning.tracking import attach_trackers

        log, config = get_logger(), self.config
        masked_lm, pretrained_head = masked_lm_like(model)
        copy_encoder(self.family.base(model), masked_lm.base_model, encoder_names(model, self.family),
                     "the task model's encoder into the masked-LM model")
        if not pretrained_head:
            log.info("%s has no masked-LM head: a new one is initialised and learnt in this stage",
                     getattr(masked_lm.config, "_name_or_path", "") or "the model")
        rows = masking_rows(texts.texts, task.tokenizer, max_length, config.whole_word_masking)
        loss_before = fixed_mask_loss(masked_lm, rows, task.tokenizer, config.mlm_probability, seed)
        settings = TrainerSettings(learning_rate=config.learning_rate, max_steps=config.max_steps,
                                   per_device_train_batch_size=config.per_device_train_batch_size,
                                   warmup_steps=config.warmup_steps, weight_decay=config.weight_decay, seed=seed,
                                   logging_steps=max(1, config.max_steps // 50), report_to=task.report_to,
                                   run_name=task.run_name)
        arguments = training_arguments(settings, stage / "checkpoints", save_strategy="steps",
                                       save_steps=config.save_steps, save_total_limit=None, save_only_model=False,
                                       eval_strategy="no", logging_first_step=True, remove_unused_columns=False)
        trainer = MaskedLMTrainer(model=masked_lm, args=arguments, train_dataset=Dataset.from_dict(rows),
                                  data_collator=WholeWordMaskCollator(task.tokenizer, config.mlm_probability),
                                  processing_class=task.tokenizer, callbacks=[CheckpointMarker(keep=1)],
                                  stage=f"masked-LM ({'TAPT' if texts.source == 'task' else 'DAPT'})")
        attach_trackers(trainer, task.output_dir, stage)  # the task's trackers; TensorBoard in <run>/domain/
        checkpoint = newest_valid_checkpoint(stage / "checkpoints", set_aside_invalid=True)
        source = "the task's training texts" if texts.source == "task" else f"{len(config.texts)} file(s)"
        log.info("masked-LM pretraining on %d texts from %s for %d steps%s", len(texts.texts), source,
                 config.max_steps, f", resuming from {checkpoint}" if checkpoint else "")
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        seconds = time.perf_counter() - started
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        self.done = {
            "texts_from": texts.source, "texts": len(texts.texts),
            "texts_read": texts.read, "empty_dropped": texts.empty, "duplicates_dropped": texts.duplicates,
            "steps": trainer.state.global_step, "epochs": round(float(trainer.state.epoch or 0), 2),
            "mlm_loss_first": losses[0] if losses else None, "mlm_loss_last": losses[-1] if losses else None,
            "mlm_loss_before": loss_before,
            "mlm_loss_after": fixed_mask_loss(masked_lm, rows, task.tokenizer, config.mlm_probability, seed),
            "mlm_head": "pretrained" if pretrained_head else "new", "seconds": round(seconds, 2),
            "resumed_from": str(checkpoint) if checkpoint else None, "model_dir": str(stage / "model"),
            "reused": False,
        }
        trainer.save_model(str(stage / "model"))
        if trainer.is_world_process_zero():
            finish_stage(stage, self.done)
            shutil.rmtree(stage / "checkpoints", ignore_errors=True)
        log.info("domain-adaptive pretraining: masked-LM loss %.3f -> %.3f on %d of the texts in %.0fs",
                 self.done["mlm_loss_before"], self.done["mlm_loss_after"], min(LOSS_SAMPLE, len(texts.texts)), seconds)
        return trainer.accelerator.unwrap_model(trainer.model)

    def summary(self) -> dict[str, Any]:
        return self.done


register(DomainConfig, Domain)
