"""``strategy.distill`` for encoder students (NER, text classification, relation classification).

The loss of a training batch is

    L = (1 - alpha) * L_gold + alpha * T^2 * KD,     KD = mean_i KL(softmax(t_i / T) || softmax(s_i / T))

where ``t_i`` and ``s_i`` are the teacher's and the student's logits over the label set of one *scored item* ``i``:
a sequence for classification; for NER a word, read at its first subword, the position that carries the word's
gold label (special tokens, padding and continuation subwords are never scored). Every training row is scored,
the labelled ones and the unlabeled ones alike; an unlabeled row (``unlabeled``: texts only the teacher labels)
has no gold label, so KD is all it learns from. Dev batches carry no teacher outputs and get no KD term, so the
dev loss stays the task's own. ``T^2`` keeps the gradients' scale independent of T (Hinton et al. 2015).

Multi-label classifiers (one sigmoid per label) use the binary form, each label its own two-way distribution,
averaged over sequences and labels as their binary cross-entropy is::

    KD = mean_{i,c} [q log(q / p) + (1 - q) log((1 - q) / (1 - p))],   q = sigmoid(t_ic / T), p = sigmoid(s_ic / T)

They cannot take ``unlabeled`` texts: their loss has no way to leave a row without gold labels out.

The teacher is a saved model of the same task whose labels are the student's, matched by name
(:mod:`~adaptlab.tuning.distill.encoder_teacher`). With ``cache_teacher`` (default) it scores every training
text once before training, with its own tokenizer (aligned by word for NER), and the scores travel with the rows
(``teacher_logits``); without, it runs on every training batch and must share the student's tokenizer.
``init_layers`` replaces the configured student by one cut from the teacher (its embeddings, those layers, its
head), which also needs the teacher's tokenizer.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from adaptlab.errors import StrategyError
from adaptlab.runs import get_logger
from adaptlab.tuning.distill.encoder_teacher import (
    TeacherInfo,
    TeacherRun,
    check_teacher_task,
    label_order,
    read_teacher,
    same_tokenizer,
    student_from_layers,
)
from adaptlab.tuning.distill.unlabeled import read_unlabeled_texts
from adaptlab.tuning.families import Family, unwrap
from adaptlab.tuning.strategies.base import Strategy, TaskData

CAUSAL_ONLY = frozenset({"loss", "beta", "top_k", "on_policy_fraction", "max_new_tokens"})
TEACHER_LOGITS, TEACHER_POSITIONS = "teacher_logits", "teacher_positions"


def label_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``mean_i KL(softmax(t_i / T) || softmax(s_i / T))`` over rows ``i`` of ``(items, labels)`` logits, in
    float32; 0 (with a graph) when there is no row."""
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return (log_teacher.exp() * (log_teacher - log_student)).sum(-1).mean()


def binary_label_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The multi-label form (module docstring): a Bernoulli KL per label, averaged over rows and labels."""
    t, s = teacher_logits.float() / temperature, student_logits.float() / temperature
    q = torch.sigmoid(t)
    kl = q * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - q) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return kl.mean()


class TeacherColumns:
    """Wraps the task's collator: the teacher columns are taken out of each row, the rest collated as before, and
    the batch gets them back padded like ``input_ids``. NER: ``teacher_positions`` becomes a ``(batch, seq)`` mask
    of the scored positions and ``teacher_logits`` ``(batch, seq, labels)`` (zeros elsewhere); classification:
    ``teacher_logits`` ``(batch, labels)``. Rows without them (dev) are collated unchanged."""

    def __init__(self, inner: Any, token_level: bool, num_labels: int):
        self.inner, self.token_level, self.num_labels = inner, token_level, num_labels

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        names = (TEACHER_LOGITS, TEACHER_POSITIONS)
        extras = [{key: row[key] for key in names if key in row} for row in features]
        batch = self.inner([{key: value for key, value in row.items() if key not in names} for row in features])
        if not extras[0]:
            return batch
        if not self.token_level:
            batch[TEACHER_LOGITS] = torch.tensor([extra[TEACHER_LOGITS] for extra in extras], dtype=torch.float32)
            return batch
        width = batch["input_ids"].shape[1]
        left = getattr(getattr(self.inner, "tokenizer", None), "padding_side", "right") == "left"
        mask = torch.zeros((len(features), width), dtype=torch.bool)
        logits = torch.zeros((len(features), width, self.num_labels), dtype=torch.float32)
        for b, (row, extra) in enumerate(zip(features, extras)):
            positions = torch.tensor(extra[TEACHER_POSITIONS], dtype=torch.long)
            positions += width - len(row["input_ids"]) if left else 0
            mask[b, positions] = True
            if TEACHER_LOGITS in extra and len(positions):
                logits[b, positions] = torch.tensor(extra[TEACHER_LOGITS], dtype=torch.float32)
        batch[TEACHER_POSITIONS] = mask
        if TEACHER_LOGITS in extras[0]:
            batch[TEACHER_LOGITS] = logits
        return batch


class EncoderDistiller(Strategy):
    """Knowledge distillation into an encoder student (module docstring)."""

    name = "distill"
    extra_columns = (TEACHER_LOGITS, TEACHER_POSITIONS)

    def __init__(self, config: Any, family: Family):
        super().__init__(config, family)
        self.token_level = family.task == "token_classification"
        self.multi_label = False
        self.info: TeacherInfo | None = None
        self.teacher: TeacherRun | None = None
        self.order: list[int] = []
        self.done: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------ checks

    def check(self, model: Any, others: dict[str, Strategy]) -> None:
        causal = sorted(CAUSAL_ONLY & set(self.config.model_fields_set))
        if causal:
            raise StrategyError(self.name, f"{', '.join(causal)} apply to causal LM students only; this student is "
                                           f"{self.family.describe(model)}: remove them")
        config = unwrap(model).config
        student_labels = [config.id2label[i] for i in range(len(config.id2label))]
        self.info = read_teacher(self.config.teacher)
        check_teacher_task(self.info, self.family, student_labels)
        self.order = label_order(student_labels, self.info)
        self.multi_label = config.problem_type == "multi_label_classification"
        if self.info.multi_label != self.multi_label:
            kinds = {True: "multi-label (a sigmoid per label)", False: "single-label (a softmax over labels)"}
            raise StrategyError(self.name, f"the teacher {self.info.path} is {kinds[self.info.multi_label]}, the "
                                           f"student {kinds[self.multi_label]}; train both the same way")
        if self.multi_label and self.config.unlabeled:
            raise StrategyError(self.name, "unlabeled texts cannot be distilled into a multi-label classifier: its "
                                           "loss cannot leave out a row without gold labels; remove unlabeled")
        keep = self.config.init_layers
        if keep is not None:
            depth = self.info.layers
            if not keep or keep != sorted(set(keep)) or keep[0] < 0 or (depth is not None and keep[-1] >= depth):
                raise StrategyError(self.name, f"init_layers is {keep}: give distinct teacher layers in increasing "
                                               f"order, each from 0 to {(depth or 1) - 1} (the teacher has {depth})")

    # ------------------------------------------------------------------------------ before training

    def before_training(self, model: Any, task: TaskData) -> Any:
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

        from adaptlab.ie.models import sequence_limit
        from adaptlab.models.adapters import load_pretrained

        if self.config.unlabeled and task.encode_unlabeled is None:
            raise StrategyError(self.name, "this trainer cannot add unlabeled rows (relation classification needs "
                                           "marked entity pairs); remove unlabeled")
        auto = AutoModelForTokenClassification if self.token_level else AutoModelForSequenceClassification
        teacher = load_pretrained(self.info.path, auto).eval().requires_grad_(False)
        tokenizer = AutoTokenizer.from_pretrained(self.info.path)
        same = same_tokenizer(tokenizer, task.tokenizer)
        if self.token_level and not getattr(tokenizer, "is_fast", False):
            raise StrategyError(self.name, f"the teacher {self.info.path} has no fast tokenizer; aligning its "
                                           "labels with the student's words needs one")
        for wanted, setting in ((not self.config.cache_teacher, "cache_teacher: false"),
                                (self.config.init_layers is not None, "init_layers")):
            if wanted and not same:
                raise StrategyError(self.name, f"{setting} needs the student to use the teacher's tokenizer, and "
                                               f"{self.info.path}'s differs from the configured model's; set the "
                                               "model to the teacher (or its base model)")
        limit = sequence_limit(teacher, tokenizer, task.max_length or 512)
        if self.config.init_layers is not None and task.max_length and limit < task.max_length:
            raise StrategyError(self.name, f"the student cut from the teacher reads at most {limit} subwords, but "
                                           f"the data is encoded to {task.max_length}; set max_length: {limit}")
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.teacher = TeacherRun(teacher, tokenizer, self.order, limit, device)
        self.done = {"teacher": str(self.info.path), "teacher_architecture": self.info.architecture,
                     "teacher_labels": self.info.labels, "labels_reordered": self.order != sorted(self.order),
                     "same_tokenizer": same, "alpha": self.config.alpha, "temperature": self.config.temperature,
                     "cache_teacher": self.config.cache_teacher}
        if self.config.init_layers is None:
            return model
        keep = list(self.config.init_layers)
        student = student_from_layers(teacher, self.family, keep, self.order, unwrap(model).config)
        get_logger().info("strategy.distill: the student is the teacher's embeddings, layers %s of %d and head "
                          "(replacing the configured model)", keep, self.info.layers)
        self.done.update({"init_layers": keep, "teacher_layers": self.info.layers, "student_layers": len(keep)})
        return student

    # ------------------------------------------------------------------------------------ training rows

    def train_dataset(self, dataset: Any, task: TaskData) -> Any:
        from datasets import concatenate_datasets

        texts = list(task.texts)
        if len(texts) != len(dataset):
            raise StrategyError(self.name, f"the trainer gave {len(texts)} training texts for {len(dataset)} rows; "
                                           "the teacher cannot tell which text a row holds")
        self.done["labelled_rows"] = len(texts)
        if self.config.unlabeled:
            extra, counts = read_unlabeled_texts(self.config.unlabeled, texts)
            rows = task.encode_unlabeled(extra)
            dataset = concatenate_datasets([dataset, rows.cast(dataset.features)])
            texts += extra
            self.done["unlabeled"] = counts
            get_logger().info("strategy.distill: %d unlabeled texts added (%s)", len(extra), counts)
        self.done["rows_distilled"] = len(texts)
        started = time.perf_counter()
        if self.token_level:
            scored = self.teacher.word_soft_labels(texts, task.tokenizer, task.max_length or 512)
            dataset = dataset.add_column(TEACHER_POSITIONS, [positions for positions, _ in scored])
            self.done["scored_words"] = sum(len(positions) for positions, _ in scored)
            if self.config.cache_teacher:
                dataset = dataset.add_column(TEACHER_LOGITS, [logits for _, logits in scored])
        elif self.config.cache_teacher:
            dataset = dataset.add_column(TEACHER_LOGITS, self.teacher.sequence_soft_labels(texts))
        if self.config.cache_teacher:
            self.done["teacher_seconds"] = round(time.perf_counter() - started, 2)
            get_logger().info("strategy.distill: the teacher scored %d rows once in %.1fs", len(texts),
                              self.done["teacher_seconds"])
            self.teacher = None  # its scores travel with the rows: loss_terms never runs it, so free its memory
        return dataset

    def collator(self, collator: Any) -> Any:
        return TeacherColumns(collator, self.token_level, len(self.order))

    # ------------------------------------------------------------------------------------------- loss

    def task_loss_weight(self) -> float:
        return 1.0 - self.config.alpha

    def loss_terms(self, model: Any, inputs: dict[str, Any], outputs: Any) -> dict[str, Any]:
        """``{"distill": alpha * T^2 * KD}`` for a training batch (module docstring); nothing for dev batches."""
        cached = inputs.get(TEACHER_LOGITS)
        if self.token_level:
            mask = inputs.get(TEACHER_POSITIONS)
            if mask is None:
                return {}
            teacher = cached if cached is not None else self.teacher.logits(inputs)
            kd = label_kl(teacher.to(outputs.logits.device)[mask], outputs.logits[mask], self.config.temperature)
        else:
            if cached is None and (self.config.cache_teacher or not model.training):
                return {}
            teacher = (cached if cached is not None else self.teacher.logits(inputs)).to(outputs.logits.device)
            divergence = binary_label_kl if self.multi_label else label_kl
            kd = divergence(teacher, outputs.logits, self.config.temperature)
        return {"distill": self.config.alpha * self.config.temperature ** 2 * kd}

    def summary(self) -> dict[str, Any]:
        return dict(self.done)
