"""The teacher of an encoder student: found, checked against the student, run, and cut into a smaller student.

* :func:`read_teacher` reads a saved adaptlab model's ``config.json`` (a run directory or its ``model/``): its
  task (token or sequence classification), labels and depth, without loading weights, so a wrong teacher is
  refused before anything trains.
* :func:`label_order` aligns the teacher's labels with the student's *by name*: ``order[s]`` is the teacher's
  index of the student's label ``s``, so ``teacher_logits[..., order]`` are in the student's order. Different
  label sets are refused with both listed: a KL between distributions over different sets means nothing.
* :func:`word_soft_labels` / :func:`sequence_soft_labels` run the teacher once over texts, each with the
  teacher's *own* tokenizer. NER soft labels are aligned by word: a word's teacher logits (read at the word's
  first subword in the teacher's tokenization, the position the teacher was trained to label) go to the word's
  first subword in the student's, so a teacher with another tokenizer is aligned correctly, never fed the
  student's token ids.
* :func:`student_from_layers` builds a student from the teacher's embeddings, a subset of its transformer layers
  (DistilBERT kept every other one) and its head, whose output rows are reordered into the student's labels.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adaptlab.data.records import Record
from adaptlab.errors import ModelError, StrategyError
from adaptlab.ie.tagging import encode_record
from adaptlab.models.checks import check_model_dir
from adaptlab.tuning.families import Family

TASK_SUFFIXES = {"token_classification": "ForTokenClassification",
                 "sequence_classification": "ForSequenceClassification"}
TRAINED_BY = {"token_classification": "`adaptlab ner train`",
              "sequence_classification": "`adaptlab cls train` or `adaptlab re train`"}


@dataclass(frozen=True)
class TeacherInfo:
    """What the teacher's ``config.json`` says: where it is, its task, labels (id order), depth, problem type."""

    path: Path
    architecture: str
    task: str | None
    labels: list[str]
    layers: int | None
    multi_label: bool


def read_teacher(teacher: str | Path) -> TeacherInfo:
    """The teacher at ``teacher`` (a run directory or a model directory); a StrategyError when it is no model."""
    path = Path(teacher)
    if (path / "model" / "config.json").exists():
        path = path / "model"
    try:
        config = check_model_dir(path, key="teacher")
    except ModelError as exc:
        raise StrategyError("distill", str(exc)) from None
    architecture = ", ".join(config.get("architectures") or []) or str(config.get("model_type"))
    task = next((name for name, suffix in TASK_SUFFIXES.items() if architecture.endswith(suffix)), None)
    id2label = config.get("id2label") or {}
    labels = [id2label[key] for key in sorted(id2label, key=int)]
    return TeacherInfo(path, architecture, task, labels, config.get("num_hidden_layers"),
                       config.get("problem_type") == "multi_label_classification")


def check_teacher_task(info: TeacherInfo, family: Family, student_labels: Sequence[str]) -> None:
    """The teacher must be a classifier of the student's task; the message lists both label sets."""
    if info.task != family.task:
        what = family.task.replace("_", " ")
        raise StrategyError("distill", f"the teacher {info.path} is a {info.architecture} (labels {info.labels}), "
                                       f"not a {what} model like the student (labels {list(student_labels)}); give "
                                       f"a teacher of the same task, trained with {TRAINED_BY[family.task]}")


def label_order(student_labels: Sequence[str], info: TeacherInfo) -> list[int]:
    """``order[s]``: the teacher's index of the student's label ``s`` (module docstring)."""
    if sorted(student_labels) != sorted(info.labels):
        missing = sorted(set(student_labels) - set(info.labels))
        extra = sorted(set(info.labels) - set(student_labels))
        raise StrategyError("distill", f"the teacher {info.path} has the labels {info.labels}, the student "
                                       f"{list(student_labels)} (the teacher lacks {missing}, has besides {extra}); "
                                       "both must have the same labels, matched by name in any order: train the "
                                       "teacher on data with the same labels")
    return [info.labels.index(label) for label in student_labels]


def tokenizer_pipeline(tokenizer: Any) -> Any:
    """What decides the token ids of a text: a fast tokenizer's whole pipeline (less the per-call truncation and
    padding state), else the vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer.get_vocab()
    pipeline = json.loads(backend.to_str())
    pipeline.pop("truncation", None)
    pipeline.pop("padding", None)
    return pipeline


def same_tokenizer(first: Any, second: Any) -> bool:
    """Whether two tokenizers give the same ids to every text."""
    return tokenizer_pipeline(first) == tokenizer_pipeline(second)


def logits_in_batches(model: Any, rows: Sequence[Sequence[int]], pad_id: int, device: torch.device,
                      batch_size: int = 64) -> list[np.ndarray]:
    """The model's float32 logits for each row of token ids: ``(len(row), labels)`` for a token classifier,
    ``(labels,)`` for a sequence classifier. Rows are batched by length (less padding), returned in order."""
    results: list[np.ndarray] = [np.empty(0)] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for begin in range(0, len(order), batch_size):
        chunk = order[begin:begin + batch_size]
        width = max(len(rows[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for b, i in enumerate(chunk):
            ids[b, :len(rows[i])] = torch.tensor(rows[i])
            mask[b, :len(rows[i])] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu().numpy()
        for b, i in enumerate(chunk):
            results[i] = logits[b, :len(rows[i])] if logits.ndim == 3 else logits[b]
    return results


def first_subwords(text: str, tokenizer: Any, max_length: int) -> tuple[list[int], dict[int, int]]:
    """The token ids of ``text`` split into words as the NER student splits it, and ``{word: position of its
    first subword}`` for the words the tokenizer kept within ``max_length``."""
    encoded = encode_record(Record(text=text), tokenizer, None, max_length)
    first: dict[int, int] = {}
    for position, word in enumerate(encoded.word_ids):
        if word is not None and word not in first:
            first[word] = position
    return encoded.input_ids, first


@dataclass
class TeacherRun:
    """A loaded teacher, ready to score texts: model (eval, no grad), tokenizer, label order, length limit."""

    model: Any
    tokenizer: Any
    order: list[int]
    max_length: int
    device: torch.device

    def word_soft_labels(self, texts: Sequence[str], student_tokenizer: Any, student_max_length: int
                         ) -> list[tuple[list[int], list[list[float]]]]:
        """Per text: the student's positions of the words both tokenizations kept, and there the teacher's
        logits in the student's label order (module docstring)."""
        teacher_side = [first_subwords(text, self.tokenizer, self.max_length) for text in texts]
        logits = logits_in_batches(self.model, [ids for ids, _ in teacher_side], self.tokenizer.pad_token_id or 0,
                                   self.device)
        rows = []
        for text, (_, teacher_first), row_logits in zip(texts, teacher_side, logits):
            _, student_first = first_subwords(text, student_tokenizer, student_max_length)
            words = sorted(set(student_first) & set(teacher_first))
            rows.append(([student_first[w] for w in words],
                         row_logits[[teacher_first[w] for w in words]][:, self.order].tolist()))
        return rows

    def sequence_soft_labels(self, texts: Sequence[str]) -> list[list[float]]:
        """Per text: the teacher's logits in the student's label order."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        logits = logits_in_batches(self.model, ids, self.tokenizer.pad_token_id or 0, self.device)
        return [row[self.order].tolist() for row in logits]

    def logits(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The teacher's logits, in the student's label order, on a batch of the student's own token ids (the
        tokenizers are the same); the teacher follows the batch to its device."""
        ids = inputs["input_ids"]
        if next(self.model.parameters()).device != ids.device:
            self.model.to(ids.device)
        kwargs = {key: inputs[key] for key in ("attention_mask", "token_type_ids") if key in inputs}
        with torch.no_grad():
            return self.model(input_ids=ids, **kwargs).logits.float()[..., self.order]


def layer_list_name(family: Family, model: Any) -> str:
    """The qualified name of the ``nn.ModuleList`` holding the model's transformer layers (``bert.encoder.layer``)."""
    layers = family.layers(model)
    return next(name for name, module in model.named_modules()
                if isinstance(module, nn.ModuleList) and len(module) == len(layers) and module[0] is layers[0])


def output_layer_name(family: Family, model: Any, num_labels: int) -> str:
    """The qualified name of the head's last linear layer with one output per label (``classifier``,
    RoBERTa's ``classifier.out_proj``): its rows are the labels."""
    heads = tuple(family.head_module_names(model))
    found = [name for name, module in model.named_modules()
             if name.split(".")[0] in heads and isinstance(module, nn.Linear) and module.out_features == num_labels]
    if not found:
        raise StrategyError("distill", f"cannot find the output layer of {family.describe(model)}'s head "
                                       f"({num_labels} outputs); init_layers needs it")
    return found[-1]


def student_from_layers(teacher: Any, family: Family, keep: Sequence[int], order: Sequence[int],
                        student_config: Any) -> Any:
    """A new model of the teacher's class: the teacher's embeddings, its layers ``keep`` (renumbered ``0 ..
    len(keep) - 1``, in that order) and its head with the output rows in the student's label order (``order``);
    labels and problem type come from ``student_config``. Weights are copies: training it leaves the teacher as
    it was."""
    list_name = layer_list_name(family, teacher)
    output = output_layer_name(family, teacher, len(order))
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(keep)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in keep]
    config.id2label = dict(student_config.id2label)
    config.label2id = dict(student_config.label2id)
    config.problem_type = student_config.problem_type
    state: dict[str, torch.Tensor] = {}
    renumber = {old: new for new, old in enumerate(keep)}
    for key, value in teacher.state_dict().items():
        if key.startswith(list_name + "."):
            index, rest = key[len(list_name) + 1:].split(".", 1)
            if int(index) not in renumber:
                continue
            key = f"{list_name}.{renumber[int(index)]}.{rest}"
        elif key in (f"{output}.weight", f"{output}.bias"):
            value = value[list(order)]
        state[key] = value.detach().clone()
    student = type(teacher)(config)
    student.load_state_dict(state, strict=True)
    return student
