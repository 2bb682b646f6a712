"""Text-classification student: ``AutoModelForSequenceClassification`` over any BERT-family encoder.

Single-label: one softmax over the labels, trained with cross-entropy, ``p = softmax(z)``, predicted label
``argmax p``. Multi-label (``config.problem_type = "multi_label_classification"``): one sigmoid per label,
trained with binary cross-entropy on the multi-hot targets, ``p_c = sigmoid(z_c)``; every label with
``p_c >= 0.5`` (:data:`MULTI_LABEL_THRESHOLD`) is predicted, so an example may get none. The problem type, the
labels (``id2label``/``label2id``) and the tokenizer are saved in the model directory, so it works unchanged in
``transformers.pipeline("text-classification", model=DIR)`` (softmax or sigmoid chosen from the same config).

:func:`load_classifier` is the one place that decides which kind of saved classifier a directory holds (this
module's, or a few-shot model of ``strategy.fewshot``); both answer ``labels``, ``multi_label`` and
``predict_proba(texts)``, so evaluation and prediction never ask which.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptlab.data.classification import Example
from adaptlab.ie.models import saved_model_dir, sequence_limit
from adaptlab.metrics.classification import text_classification_report
from adaptlab.runs import get_logger, seed_everything
from adaptlab.tuning.encoder_fit import EncoderTrainerSettings, FitResult, fit
from adaptlab.tuning.families import ENCODER_SEQUENCE
from adaptlab.tuning.strategies import TaskData, prepare, train_dataset
from adaptlab.tuning.trainer import IGNORE_INDEX

MULTI_LABEL_THRESHOLD = 0.5
FEWSHOT_HEAD = "fewshot_head.json"  # marks a model directory written by strategy.fewshot


def decide(probabilities: np.ndarray, labels: Sequence[str], multi_label: bool) -> list[list[str]]:
    """Each row's predicted labels: the argmax, or (multi-label) every label with ``p >= 0.5``."""
    if multi_label:
        return [[labels[j] for j in np.flatnonzero(row >= MULTI_LABEL_THRESHOLD)] for row in probabilities]
    return [[labels[int(j)]] for j in np.argmax(probabilities, axis=-1)]


def targets(examples: Sequence[Example], labels: Sequence[str], multi_label: bool) -> list:
    """Training targets: a label id per example, or (multi-label) a multi-hot float vector for BCE."""
    index = {label: i for i, label in enumerate(labels)}
    if multi_label:
        return [[1.0 if label in example.labels else 0.0 for label in labels] for example in examples]
    return [index[example.labels[0]] for example in examples]


def _dataset(examples: Sequence[Example], labels: Sequence[str], multi_label: bool, tokenizer, max_length: int):
    """Tokenized examples (cut to ``max_length`` subwords) and how many were longer than that."""
    texts = [example.text for example in examples]
    full_lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    return (_rows(texts, targets(examples, labels, multi_label), tokenizer, max_length),
            sum(length > max_length for length in full_lengths))


def _rows(texts: Sequence[str], label_rows: Sequence, tokenizer, max_length: int):
    from datasets import Dataset

    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return Dataset.from_list([{"input_ids": ids, "attention_mask": mask, "labels": target, "length": len(ids)}
                              for ids, mask, target in zip(encoded["input_ids"], encoded["attention_mask"],
                                                           label_rows)])


def unlabeled_rows(texts: Sequence[str], tokenizer, max_length: int):
    """Rows for texts without a gold label (single-label: the ignored id -100), for strategies that teach them."""
    return _rows(texts, [IGNORE_INDEX] * len(texts), tokenizer, max_length)


def dev_scores(labels: Sequence[str], multi_label: bool):
    """``compute_metrics`` for the Trainer: macro F1 (the best-model metric), micro F1 and accuracy on dev."""

    def compute(eval_pred) -> dict[str, float]:
        logits, label_ids = np.asarray(eval_pred.predictions), np.asarray(eval_pred.label_ids)
        if multi_label:
            gold = decide(label_ids, labels, True)  # multi-hot 0/1 rows
            predicted = decide(1 / (1 + np.exp(-logits)), labels, True)
        else:
            gold = [[labels[int(i)]] for i in label_ids]
            predicted = decide(logits, labels, False)  # argmax of logits = argmax of softmax
        report = text_classification_report(gold, predicted, labels, multi_label)
        return {"macro_f1": report["macro_f1"], "micro_f1": report["micro_f1"], "accuracy": report["accuracy"]}

    return compute


def train_classifier(train: Sequence[Example], dev: Sequence[Example] | None, labels: list[str], multi_label: bool,
                     model_path: str, settings: EncoderTrainerSettings, strategy_block: Any, max_length: int,
                     output_dir: Path) -> tuple[FitResult, int]:
    """Fine-tune a sequence classifier (best dev epoch by macro F1); saves ``output_dir/model``.

    Returns the fit result and the number of train and dev examples longer than ``max_length`` subwords.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    seed_everything(settings.seed)  # the new head's initial weights
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    limit = sequence_limit(model, tokenizer, max_length)
    task = TaskData(output_dir, tokenizer, [example.text for example in train], list(labels),
                    lambda texts: unlabeled_rows(texts, tokenizer, limit), limit, settings.seed,
                    settings.report_to, settings.run_name)
    model, strategies = prepare(strategy_block, ENCODER_SEQUENCE, model, task)
    train_ds, truncated = _dataset(train, labels, multi_label, tokenizer, limit)
    train_ds = train_dataset(strategies, train_ds, task)
    dev_ds = None
    if dev:
        dev_ds, dev_truncated = _dataset(dev, labels, multi_label, tokenizer, limit)
        truncated += dev_truncated
    if truncated:
        get_logger().warning("%d examples are longer than %d subwords; the model reads only their beginning",
                             truncated, limit)
    result = fit(model, tokenizer, DataCollatorWithPadding(tokenizer), dev_scores(labels, multi_label), "macro_f1",
                 train_ds, dev_ds, settings, output_dir, strategies)
    return result, truncated


class TextClassifier:
    """A saved sequence classifier; ``predict_proba`` gives softmax (or per-label sigmoid) probabilities."""

    def __init__(self, model_dir: str | Path, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = saved_model_dir(model_dir, "sequence_classification")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        self.labels = [id2label[i] for i in range(len(id2label))]
        self.multi_label = self.model.config.problem_type == "multi_label_classification"
        self.max_length = sequence_limit(self.model, self.tokenizer, 512)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """``(len(texts), len(labels))`` probabilities; texts are batched by length (less padding), in order."""
        import torch

        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for begin in range(0, len(order), batch_size):
            chunk = order[begin:begin + batch_size]
            batch = self.tokenizer([texts[i] for i in chunk], truncation=True, max_length=self.max_length,
                                   padding=True, return_tensors="pt").to(self.device)
            with torch.no_grad():
                logits = self.model(**batch).logits.float()
            scores = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
            probabilities[chunk] = scores.cpu().numpy()
        return probabilities


def load_classifier(model: str | Path) -> Any:
    """The classifier saved in ``model`` (a run directory or its ``model/``): a few-shot model when the directory
    holds ``fewshot_head.json``, else a :class:`TextClassifier`."""
    path = Path(model)
    if (path / "model").is_dir() and not (path / FEWSHOT_HEAD).is_file():
        path = path / "model"
    if (path / FEWSHOT_HEAD).is_file():
        from adaptlab.tuning.fewshot_model import FewshotClassifier

        return FewshotClassifier.load(path)
    return TextClassifier(path)
