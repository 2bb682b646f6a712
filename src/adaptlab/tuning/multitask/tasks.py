"""Each task's rows, collator and dev metric for the multi-task trainer, in the single-task students' own encoding.

* **ner**: words -> first-subword IOB2 label ids (:func:`adaptlab.ie.tagging.encode_record`), padded by
  ``DataCollatorForTokenClassification``; dev metric: strict entity macro F1 on words (as ``ner train``).
* **re**: one marked pair per example (:func:`adaptlab.ie.relations.relation_examples`), read by the tokenizer
  with the four entity markers as special tokens (:func:`adaptlab.ie.relations.load_marker_tokenizer`); dev metric:
  macro F1 over the relation labels.
* **cls**: one text and a label id, or a multi-hot vector for multi-label (:func:`adaptlab.ie.text_classifier.targets`);
  dev metric: macro F1.

Every dev metric is called ``macro_f1``, so the trainer can average them into one number that picks the best epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adaptlab.data.classification import Example
from adaptlab.data.records import Record
from adaptlab.ie.ner import word_level_f1
from adaptlab.ie.relations import RelationExample
from adaptlab.ie.tagging import encode_record
from adaptlab.ie.text_classifier import dev_scores, targets
from adaptlab.tuning.multitask.model import HeadSpec


@dataclass
class EncodedTask:
    """A task ready to train: its head, training and dev rows (``input_ids``, ``attention_mask``, ``labels``), the
    collator for its batches, its ``compute_metrics`` and how many of its sequences were cut at ``max_length``."""

    spec: HeadSpec
    train: Any
    dev: Any | None
    collator: Any
    compute_metrics: Callable[[Any], dict[str, float]]
    truncated: int


def _rows(input_ids: Sequence[list[int]], attention_mask: Sequence[list[int]], labels: Sequence[Any]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": list(input_ids), "attention_mask": list(attention_mask),
                              "labels": list(labels)})


def _sequence_rows(texts: Sequence[str], labels: Sequence[Any], tokenizer: Any, max_length: int) -> tuple[Any, int]:
    """Tokenized texts cut to ``max_length`` subwords, and how many were longer."""
    longer = sum(len(ids) > max_length for ids in tokenizer(list(texts))["input_ids"])
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return _rows(encoded["input_ids"], encoded["attention_mask"], labels), longer


def ner_task(name: str, labels: Sequence[str], train: Sequence[Record], dev: Sequence[Record] | None,
             tokenizer: Any, max_length: int) -> EncodedTask:
    """An NER task over the IOB2 ``labels`` (``O``, ``B-X``, ``I-X``, ...)."""
    from transformers import DataCollatorForTokenClassification

    label2id = {label: i for i, label in enumerate(labels)}

    def encode(records: Sequence[Record]) -> tuple[Any, int]:
        encoded = [encode_record(record, tokenizer, label2id, max_length) for record in records]
        return (_rows([e.input_ids for e in encoded], [e.attention_mask for e in encoded],
                      [e.labels for e in encoded]), sum(e.truncated_words > 0 for e in encoded))

    train_rows, truncated = encode(train)
    dev_rows, dev_truncated = encode(dev) if dev else (None, 0)
    return EncodedTask(HeadSpec(name, "token_classification", tuple(labels)), train_rows, dev_rows,
                       DataCollatorForTokenClassification(tokenizer), word_level_f1(dict(enumerate(labels))),
                       truncated + dev_truncated)


def sequence_task(name: str, labels: Sequence[str], train_texts: Sequence[str], train_targets: Sequence[Any],
                  dev_texts: Sequence[str], dev_targets: Sequence[Any], tokenizer: Any, max_length: int,
                  multi_label: bool = False) -> EncodedTask:
    """A sequence-classification task: texts (or marked pairs) with a label id, or a multi-hot row each."""
    from transformers import DataCollatorWithPadding

    train_rows, truncated = _sequence_rows(train_texts, train_targets, tokenizer, max_length)
    dev_rows, dev_truncated = (_sequence_rows(dev_texts, dev_targets, tokenizer, max_length) if dev_texts
                               else (None, 0))
    return EncodedTask(HeadSpec(name, "sequence_classification", tuple(labels), multi_label), train_rows, dev_rows,
                       DataCollatorWithPadding(tokenizer), dev_scores(list(labels), multi_label),
                       truncated + dev_truncated)


def re_task(name: str, labels: Sequence[str], train: Sequence[RelationExample], dev: Sequence[RelationExample] | None,
            marker_tokenizer: Any, max_length: int) -> EncodedTask:
    """A relation task: each marked (head, tail) pair classified into ``labels`` (``no_relation`` among them)."""
    index = {label: i for i, label in enumerate(labels)}
    dev = dev or []
    return sequence_task(name, labels, [e.marked for e in train], [index[e.label] for e in train],
                         [e.marked for e in dev], [index[e.label] for e in dev], marker_tokenizer, max_length)


def cls_task(name: str, labels: Sequence[str], train: Sequence[Example], dev: Sequence[Example] | None,
             multi_label: bool, tokenizer: Any, max_length: int) -> EncodedTask:
    """A text-classification task, single-label (softmax) or multi-label (a sigmoid per label)."""
    dev = dev or []
    return sequence_task(name, labels, [e.text for e in train], targets(train, labels, multi_label),
                         [e.text for e in dev], targets(dev, labels, multi_label), tokenizer, max_length,
                         multi_label)
