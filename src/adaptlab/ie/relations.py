"""RE student: sequence classification of one (head, tail) pair marked in its sentence.

Each example is the sentence with entity markers around the pair
(``[E1]head[/E1] ... [E2]tail[/E2]``); the markers are added to the tokenizer as special tokens
and the embedding matrix is resized, so they are never split into subwords. Pairs without a
relation become ``no_relation`` examples when the training data has candidate pairs without a
relation, which lets the same model filter candidates in the text-to-triples path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from adaptlab.data.formats.markers import MARKERS, marked_from_record
from adaptlab.data.records import Record
from adaptlab.errors import ModelError
from adaptlab.ie.models import saved_model_dir, sequence_limit
from adaptlab.ie.pairs import NO_RELATION, candidate_pairs, head_types
from adaptlab.metrics.classification import classification_prf
from adaptlab.models.adapters import load_pretrained
from adaptlab.runs import seed_everything
from adaptlab.tuning.encoder_fit import EncoderTrainerSettings, fit
from adaptlab.tuning.families import ENCODER_SEQUENCE
from adaptlab.tuning.strategies import StrategyBlock, TaskData, prepare, train_dataset


@dataclass
class RelationExample:
    marked: str
    label: str


def relation_examples(records: Sequence[Record], with_negatives: bool = True) -> list[RelationExample]:
    """Positive pairs from ``relations``; with ``with_negatives``, the other candidate pairs as ``no_relation``:
    a span of a type that heads some relation in ``records`` with a span of any other type."""
    heads = head_types(records)
    examples = []
    for record in records:
        gold = {(r.head, r.tail): r.label for r in record.relations}
        pairs = set(gold)
        if with_negatives:
            pairs |= set(candidate_pairs(record, heads))
        for pair in sorted(pairs):
            examples.append(RelationExample(marked_from_record(record, pair), gold.get(pair, NO_RELATION)))
    return examples


@dataclass
class RETrainResult:
    model_dir: Path
    labels: list[str]
    history: list[dict]
    dev_metrics: dict
    train_seconds: float
    strategies: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)  # steps, evaluation interval, ... (encoder_fit.plan_training)
    notes: list[str] = field(default_factory=list)


def _dataset(examples: Sequence[RelationExample], tokenizer, label2id: dict[str, int], max_length: int):
    from datasets import Dataset

    enc = tokenizer([e.marked for e in examples], truncation=True, max_length=max_length)
    return Dataset.from_dict({
        "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
        "labels": [label2id[e.label] for e in examples], "length": [len(x) for x in enc["input_ids"]],
    })


def _weighted_f1(id2label: dict[int, str]):
    def compute(eval_pred) -> dict[str, float]:
        pred = np.argmax(eval_pred.predictions, axis=-1)
        scores = classification_prf([id2label[int(i)] for i in eval_pred.label_ids],
                                    [id2label[int(i)] for i in pred])
        return {"weighted_f1": scores["weighted"]["f1"], "macro_f1": scores["macro"]["f1"]}

    return compute


def load_marker_tokenizer(model_name_or_path: str):
    """The model's tokenizer with the four entity markers added as special tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    tokenizer.add_tokens(list(MARKERS), special_tokens=True)
    return tokenizer


def train_re(
    train: Sequence[RelationExample],
    dev: Sequence[RelationExample] | None,
    model_name_or_path: str,
    training: EncoderTrainerSettings,
    output_dir: Path,
    max_length: int = 256,
    strategy: BaseModel | None = None,
) -> RETrainResult:
    """Fine-tune a relation classifier over marked pairs; writes ``output_dir/model``.

    ``max_length`` caps the subwords per example; ``strategy`` is the ``strategy:`` block (a ``StrategyBlock``),
    applied to the model (after the marker embeddings are added) before training.
    """
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    seed_everything(training.seed)
    labels = sorted({e.label for e in train})
    if len(labels) < 2:
        raise ModelError(f"relation training needs at least two labels, found {labels}")
    if dev:
        unknown = sorted({e.label for e in dev} - set(labels))
        if unknown:
            raise ModelError(f"the dev data has relation labels {unknown} absent from training data {labels}")
    label2id = {label: i for i, label in enumerate(labels)}
    id2label = dict(enumerate(labels))
    tokenizer = load_marker_tokenizer(model_name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_name_or_path, num_labels=len(labels), id2label=id2label, label2id=label2id
    )
    model.resize_token_embeddings(len(tokenizer))
    max_length = sequence_limit(model, tokenizer, max_length)
    task = TaskData(output_dir, tokenizer, [e.marked for e in train], labels, None, max_length, training.seed,
                    training.report_to, training.run_name)
    model, strategies = prepare(strategy or StrategyBlock(), ENCODER_SEQUENCE, model, task)
    train_ds = train_dataset(strategies, _dataset(train, tokenizer, label2id, max_length), task)
    dev_ds = _dataset(dev, tokenizer, label2id, max_length) if dev else None
    done = fit(model, tokenizer, DataCollatorWithPadding(tokenizer), _weighted_f1(id2label), "weighted_f1",
               train_ds, dev_ds, training, output_dir, strategies)
    return RETrainResult(done.model_dir, labels, done.history, done.dev_metrics, done.seconds, done.strategies,
                         done.plan, done.notes)


class REPredictor:
    """A loaded relation classifier: ``predict`` labels marked sentences with probabilities."""

    def __init__(self, model_dir: str | Path, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = saved_model_dir(model_dir, "sequence_classification")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = load_pretrained(path, AutoModelForSequenceClassification)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        self.labels = [self.id2label[i] for i in sorted(self.id2label)]
        self.max_length = sequence_limit(self.model, self.tokenizer, 512)

    def predict(self, marked: Sequence[str], batch_size: int = 64) -> list[tuple[str, float]]:
        import torch

        out = []
        for begin in range(0, len(marked), batch_size):
            enc = self.tokenizer(list(marked[begin : begin + batch_size]), truncation=True, max_length=self.max_length,
                                 padding=True, return_tensors="pt").to(self.device)
            with torch.no_grad():
                probs = torch.softmax(self.model(**enc).logits.float(), dim=-1).cpu().numpy()
            out += [(self.id2label[int(np.argmax(p))], float(np.max(p))) for p in probs]
        return out
