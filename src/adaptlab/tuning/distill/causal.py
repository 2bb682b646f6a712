"""``strategy.distill`` for causal LMs: the student learns the teacher's next-token distributions.

The loss of a batch is ``(1 - alpha) * CE + alpha * T^2 * KD`` (``task_loss_weight`` and ``loss_terms``), where

    KD = sum_t w_t D(p_t(. | x_<t), p_s(. | x_<t)) / sum_t w_t

over the target tokens ``t`` of the batch (``labels != -100``, the logit at ``t - 1`` predicting token ``t`` as HF
causal LMs shift), ``w_t`` the per-token SFT loss weights when the batch has them (``fractal sft``: a token that
does not count in the cross-entropy does not count here either), else 1; ``D`` is the forward KL, reverse KL or
generalised JSD of :mod:`adaptlab.tuning.distill.divergences`, at temperature ``T``, optionally over the teacher's
top-k tokens only. The cross-entropy has its own normaliser (the trainer's, over the whole accumulated step);
``StrategyTrainer`` puts the KD term on the same per-step scale.

Before step 0 (``before_training``) the teacher is loaded (a model directory, or an adaptlab run directory with
``model/``), frozen and in eval mode, and refused unless it reads the student's token ids
(:mod:`adaptlab.tuning.distill.teacher_check`: vocabulary, BOS/EOS/UNK ids and probe encodings; output rows that
differ only by padding beyond the tokenizer are cut to the common size, and logged).

``cache_teacher`` with ``top_k`` computes the teacher's top-k log-probabilities of every target token once
(``train_dataset``, :mod:`adaptlab.tuning.distill.teacher_cache`), so the teacher does not run again at every epoch;
the full distribution cannot be cached cheaply, so without ``top_k`` the teacher runs live at every step (and
``cache_teacher: true`` written explicitly without ``top_k`` is refused). Evaluation batches always use the live
teacher.

``on_policy_fraction`` ``lambda`` (GKD): each training micro-batch is, with probability ``lambda`` (a draw from the
run's seed and the batch's index, so a resumed run continues the same sequence), replaced by the student's own
completions of its prompts (:mod:`adaptlab.tuning.distill.on_policy`); such a batch is judged by the live teacher,
and its task loss weight is 0 (its "labels" are the student's own samples, which would only teach it to repeat
itself), as in TRL's ``GKDTrainer``.
"""

from __future__ import annotations

import os
import random
from typing import Any

import torch

from adaptlab.errors import ModelError, StrategyError
from adaptlab.runs import get_logger
from adaptlab.tuning.distill.divergences import (
    common_vocabulary,
    restrict_to_top_k,
    teacher_top_k,
    token_divergence,
    weighted_mean,
)
from adaptlab.tuning.distill.on_policy import end_ids, on_policy_batch
from adaptlab.tuning.distill.teacher_cache import (
    TOP_IDS,
    TOP_LOG_PROBS,
    TopKCollator,
    cache_top_k,
    cached_targets,
    target_mask,
)
from adaptlab.tuning.distill.teacher_check import compared_vocabulary, output_rows, tokenizer_differences
from adaptlab.tuning.strategies.base import Strategy, TaskData

ENCODER_ONLY = ("unlabeled", "init_layers")
PROBE_TEXTS = 8  # training texts probed besides the fixed ones


class CausalDistiller(Strategy):
    """Logit distillation of a causal LM (module docstring); ``config`` is a ``DistillConfig``."""

    name = "distill"
    extra_columns = (TOP_IDS, TOP_LOG_PROBS)

    def __init__(self, config: Any, family: Any):
        super().__init__(config, family)
        self.teacher: Any = None
        self.teacher_dir: str | None = None
        self.tokenizer: Any = None
        self.vocabulary_rows: dict[str, int] = {}
        self.compared_rows: int | None = None
        self.cached: dict[str, int] = {}
        self.seed = 0
        self.batches = 0
        self.on_policy_batches = 0
        self.on_policy_now = False

    # ---------------------------------------------------------------------------------------- before step 0

    def check(self, model: Any, others: dict[str, Strategy]) -> None:
        given = [key for key in ENCODER_ONLY if getattr(self.config, key)]
        if given:
            raise StrategyError(self.name, f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for encoder "
                                f"students; {self.family.describe(model)} distils on its own training rows "
                                f"(remove {' and '.join(given)})")
        if self.config.cache_teacher and self.config.top_k is None and "cache_teacher" in self.config.model_fields_set:
            raise StrategyError(self.name, "cache_teacher: true keeps the teacher's top-k log-probabilities per token, "
                                "so it needs top_k (e.g. 20); without top_k the full distributions are compared and "
                                "the teacher runs at every step (remove cache_teacher or set top_k)")

    def before_training(self, model: Any, task: TaskData) -> Any:
        self.tokenizer, self.seed = task.tokenizer, task.seed
        self.teacher_dir = teacher_directory(self.config.teacher)
        teacher_tokenizer = load_teacher_tokenizer(self.teacher_dir)
        student_name = getattr(task.tokenizer, "name_or_path", "") or "the student's tokenizer"
        differences = tokenizer_differences(task.tokenizer, teacher_tokenizer, task.texts[:PROBE_TEXTS])
        if differences:
            raise StrategyError(self.name, f"the teacher {self.teacher_dir} does not use the student's tokenizer "
                                f"({student_name}): {' | '.join(differences)}. The teacher would read the student's "
                                "token ids as other tokens and its logits would be compared id by id with words they "
                                "do not mean; distil from a teacher saved with the same tokenizer")
        self.teacher = load_teacher(self.teacher_dir)
        rows = {"student": output_rows(model), "teacher": output_rows(self.teacher), "tokenizer": len(task.tokenizer)}
        self.compared_rows, problem = compared_vocabulary(rows["student"], rows["teacher"], rows["tokenizer"])
        if problem:
            raise StrategyError(self.name, f"the teacher {self.teacher_dir} and the student cannot be compared: "
                                f"{problem}")
        self.vocabulary_rows = rows
        if self.compared_rows is not None:
            get_logger().info("strategy.distill: the student has %d output rows and the teacher %d, for a tokenizer of "
                              "%d tokens; the rows beyond are padding, so the logits are compared over the first %d",
                              rows["student"], rows["teacher"], rows["tokenizer"], self.compared_rows)
        return model

    def train_dataset(self, dataset: Any, task: TaskData) -> Any:
        if not self.config.cache_teacher or self.config.top_k is None or self.config.on_policy_fraction >= 1:
            return dataset
        from adaptlab.lm.train import pad_token_id

        rank = int(os.environ.get("RANK", "0"))
        cache_file = task.output_dir / self.name / f"teacher_top_{self.config.top_k}.rank{rank}.arrow"
        get_logger().info("strategy.distill: computing the teacher's top-%d log-probabilities for %d training rows "
                          "once (%s)", self.config.top_k, len(dataset), cache_file)
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        dataset, tokens = cache_top_k(dataset,
                                      lambda batch: self.teacher_logits({k: v.to(device) for k, v in batch.items()}),
                                      self.config.top_k, pad_token_id(task.tokenizer), cache_file)
        self.cached = {"rows": len(dataset), "k": self.config.top_k, "tokens": tokens}
        return dataset

    def collator(self, collator: Any) -> Any:
        return TopKCollator(collator)

    # ------------------------------------------------------------------------------------------- training

    def transform_inputs(self, model: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        self.on_policy_now = self.config.on_policy_fraction > 0 and self.drawn_on_policy(self.batches)
        self.batches += 1
        if not self.on_policy_now:
            return inputs
        from adaptlab.lm.train import pad_token_id

        self.on_policy_batches += 1
        generated = on_policy_batch(model, inputs, self.config.max_new_tokens, pad_token_id(self.tokenizer),
                                    end_ids(model, self.tokenizer), seed=self.seed * 1_000_003 + self.batches)
        return {**{key: value for key, value in inputs.items() if key not in self.extra_columns}, **generated}

    def drawn_on_policy(self, index: int) -> bool:
        """Whether training micro-batch ``index`` (from 0, over the whole run) is generated by the student: a draw
        that depends on the seed and the index only, so a resumed run continues the same sequence."""
        return random.Random(f"distill:{self.seed}:{index}").random() < self.config.on_policy_fraction

    def callbacks(self) -> list[Any]:
        if self.config.on_policy_fraction == 0:
            return []
        from transformers import TrainerCallback  # transformers is imported only to train

        distiller = self

        class ResumedDraws(TrainerCallback):
            """At the start of training (resumed or not), count the micro-batches already trained and their draws."""

            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                distiller.batches = state.global_step * args.gradient_accumulation_steps
                distiller.on_policy_batches = sum(map(distiller.drawn_on_policy, range(distiller.batches)))

        return [ResumedDraws()]

    def task_loss_weight(self) -> float:
        return 0.0 if self.on_policy_now else 1.0 - self.config.alpha

    def teacher_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The frozen teacher's logits ``[batch, seq, V]`` on the student's inputs (packed rows keep their
        ``position_ids``; no KV cache, so packed documents stay apart), on the inputs' device."""
        device = batch["input_ids"].device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch}
        with torch.no_grad():
            logits = self.teacher(**inputs, use_cache=False).logits
        return logits[..., :self.compared_rows] if self.compared_rows is not None else logits

    def loss_terms(self, model: Any, inputs: dict[str, Any], outputs: Any) -> dict[str, Any]:
        self.on_policy_now = False  # read by task_loss_weight, which the trainer calls before this
        logits = getattr(outputs, "logits", None)
        if logits is None:
            raise StrategyError(self.name, "the student's forward returned no logits (training.use_liger_kernel fuses "
                                "them away); set training.use_liger_kernel: false to distil")
        mask = target_mask(inputs["labels"])
        if not bool(mask.any()):
            return {self.name: logits.sum() * 0.0}
        student = logits[:, :-1][mask]
        weights = inputs["weights"][:, 1:][mask] if "weights" in inputs else None
        if TOP_IDS in inputs:
            student, teacher = restrict_to_top_k(student, *cached_targets(inputs, mask))
        else:
            student, teacher = common_vocabulary(student, self.teacher_logits(inputs)[:, :-1][mask])
            if self.config.top_k is not None:
                student, teacher = restrict_to_top_k(student, *teacher_top_k(teacher, self.config.top_k))
        divergence = token_divergence(student, teacher, self.config.loss, self.config.temperature, self.config.beta)
        return {self.name: self.config.alpha * self.config.temperature ** 2 * weighted_mean(divergence, weights)}

    def summary(self) -> dict[str, Any]:
        done: dict[str, Any] = {
            "teacher": self.teacher_dir, "loss": self.config.loss, "alpha": self.config.alpha,
            "temperature": self.config.temperature, "top_k": self.config.top_k,
            "vocabulary_rows": self.vocabulary_rows, "compared_rows": self.compared_rows,
            "trimmed_rows": (max(self.vocabulary_rows["student"], self.vocabulary_rows["teacher"]) - self.compared_rows
                             if self.compared_rows is not None else 0),
            "cached_teacher": self.cached or None,
            "on_policy_fraction": self.config.on_policy_fraction,
            "training_batches": self.batches, "on_policy_batches": self.on_policy_batches,
        }
        if self.config.loss == "jsd":
            done["beta"] = self.config.beta
        return done


# ------------------------------------------------------------------------------------------------ teacher


def teacher_directory(name: str) -> str:
    """The teacher's model directory: a path itself or its ``model/`` (an adaptlab run), checked to be a causal LM;
    a hub name is left to transformers (its cache, or a download)."""
    from adaptlab.ie.models import saved_model_dir
    from adaptlab.models.checks import looks_local

    return str(saved_model_dir(name, "causal_lm", key="strategy.distill.teacher")) if looks_local(name) else name


def load_teacher_tokenizer(name: str) -> Any:
    """The tokenizer saved with the teacher; without one the ids cannot be checked, which is refused."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise StrategyError("distill", f"cannot load the tokenizer of the teacher {name} ({first_line(exc)}); a "
                            "teacher must come with its tokenizer, so that its token ids can be checked against the "
                            "student's") from None


def load_teacher(name: str) -> Any:
    """The teacher, frozen, in eval mode; bf16 where CUDA supports it, else float32 (logits are compared in
    float32 at least)."""
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    try:
        teacher = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelError(f"strategy.distill.teacher: cannot load {name} as a causal LM ({first_line(exc)})") from None
    teacher.requires_grad_(False)
    return teacher.eval()


def first_line(exc: Exception) -> str:
    """An exception's message in one line (transformers' loading errors run over several)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
