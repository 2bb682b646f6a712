"""NER student: token classification over any BERT-family encoder, trained with the HF Trainer.

``train_ner`` fine-tunes ``AutoModelForTokenClassification`` on canonical records (through the training
layer: ``training:`` settings, the ``strategy:`` block) and saves a plain HF model directory (it also works
in ``transformers.pipeline("token-classification")``);
``predict_ner`` turns texts into canonical records with character spans and per-span scores.
Dev F1 for checkpoint selection and early stopping is strict entity-level macro F1 on words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from adaptlab.data.formats.conll import tags_to_spans
from adaptlab.data.records import Record
from adaptlab.errors import ModelError
from adaptlab.ie.models import is_bio_label, saved_model_dir, sequence_limit
from adaptlab.ie.tagging import (
    IGNORE_INDEX,
    allowed_transitions,
    bio_labels,
    constrained_decode,
    decode_words,
    encode_record,
    entity_types,
)
from adaptlab.metrics.spans import span_prf
from adaptlab.models.adapters import load_pretrained
from adaptlab.runs import get_logger, seed_everything
from adaptlab.tuning.encoder_fit import EncoderTrainerSettings, fit
from adaptlab.tuning.families import ENCODER_TOKEN
from adaptlab.tuning.strategies import StrategyBlock, TaskData, prepare, train_dataset


@dataclass
class NERTrainResult:
    model_dir: Path
    labels: list[str]
    history: list[dict]
    dev_metrics: dict
    truncated_records: int
    train_seconds: float
    strategies: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)  # steps, evaluation interval, ... (encoder_fit.plan_training)
    notes: list[str] = field(default_factory=list)


def _dataset(records: Sequence[Record], tokenizer, label2id, max_length: int):
    """Training rows of ``records`` (first-subword label ids; all ignored when ``label2id`` is None)."""
    from datasets import Dataset

    rows, truncated = [], 0
    for r in records:
        enc = encode_record(r, tokenizer, label2id, max_length)
        truncated += enc.truncated_words > 0
        rows.append({"input_ids": enc.input_ids, "attention_mask": enc.attention_mask,
                     "labels": enc.labels, "length": len(enc.input_ids)})
    return Dataset.from_list(rows), truncated


def check_labels(records: Sequence[Record], known: Sequence[str], where: str) -> None:
    """Refuse data whose entity types the model cannot predict."""
    unknown = sorted(set(entity_types(records)) - set(known))
    if unknown:
        raise ModelError(
            f"{where} has entity types {unknown} that the model does not know (it knows {sorted(known)}); "
            "retrain with these types or relabel the data"
        )


def word_level_f1(id2label: dict[int, str]):
    """``compute_metrics`` for the Trainer: strict span F1 on first-subword word tags."""

    def compute(eval_pred) -> dict[str, float]:
        logits, label_ids = eval_pred.predictions, eval_pred.label_ids
        predictions = np.argmax(logits, axis=-1)
        gold_docs, pred_docs = [], []
        for pred_row, gold_row in zip(predictions, label_ids):
            mask = gold_row != IGNORE_INDEX
            gold_docs.append(tags_to_spans([id2label[int(i)] for i in gold_row[mask]]))
            pred_docs.append(tags_to_spans([id2label[int(i)] for i in pred_row[mask]]))
        scores = span_prf(gold_docs, pred_docs, mode="strict")
        return {"macro_f1": scores["macro"]["f1"], "micro_f1": scores["micro"]["f1"]}

    return compute


def train_ner(
    train: Sequence[Record],
    dev: Sequence[Record] | None,
    model_name_or_path: str,
    training: EncoderTrainerSettings,
    output_dir: Path,
    max_length: int = 256,
    strategy: BaseModel | None = None,
) -> NERTrainResult:
    """Fine-tune a token-classification student; writes ``output_dir/model`` (HF format).

    ``max_length`` caps the subwords per record (longer records are truncated and counted); ``strategy`` is the
    ``strategy:`` block (a ``StrategyBlock``), applied to the model before training.
    """
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification

    log = get_logger()
    seed_everything(training.seed)
    types = entity_types(train)
    if not types:
        raise ModelError("the training data has no entity spans; nothing to learn")
    if dev:
        check_labels(dev, types, "the dev data")
    labels = bio_labels(types)
    label2id = {label: i for i, label in enumerate(labels)}
    id2label = dict(enumerate(labels))

    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{model_name_or_path} has no fast tokenizer; word alignment needs one")
    model = AutoModelForTokenClassification.from_pretrained(
        model_name_or_path, num_labels=len(labels), id2label=id2label, label2id=label2id
    )
    max_length = sequence_limit(model, tokenizer, max_length)
    task = TaskData(output_dir, tokenizer, [r.text for r in train], labels,
                    lambda texts: _dataset([Record(text=t) for t in texts], tokenizer, None, max_length)[0],
                    max_length, training.seed, training.report_to, training.run_name)
    model, strategies = prepare(strategy or StrategyBlock(), ENCODER_TOKEN, model, task)
    train_ds, truncated = _dataset(train, tokenizer, label2id, max_length)
    train_ds = train_dataset(strategies, train_ds, task)
    dev_ds = None
    if dev:
        dev_ds, dev_truncated = _dataset(dev, tokenizer, label2id, max_length)
        truncated += dev_truncated
    if truncated:
        log.warning("%d records exceed max_length=%d subwords and were truncated for training",
                    truncated, max_length)

    done = fit(model, tokenizer, DataCollatorForTokenClassification(tokenizer), word_level_f1(id2label),
               "macro_f1", train_ds, dev_ds, training, output_dir, strategies)
    return NERTrainResult(done.model_dir, labels, done.history, done.dev_metrics, truncated, done.seconds,
                          done.strategies, done.plan, done.notes)


class NERPredictor:
    """A loaded NER student; ``predict`` returns canonical records with spans and span scores.

    Word tags are decoded with IOB2 constraints (:func:`constrained_decode`) unless
    ``constrained=False``, which takes the independent per-word argmax as the HF pipeline does.
    """

    def __init__(self, model_dir: str | Path, device: str | None = None, constrained: bool = True):
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        path = saved_model_dir(model_dir, "token_classification")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = load_pretrained(path, AutoModelForTokenClassification)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        if not all(is_bio_label(label) for label in self.id2label.values()):
            raise ModelError(f"model: {path} has the labels {sorted(self.id2label.values())}, not NER tags "
                             "(O, B-TYPE, I-TYPE); give a model of `adaptlab ner train`")
        self.label2id = {v: k for k, v in self.id2label.items()}
        self.constrained = constrained
        self.allowed = allowed_transitions([self.id2label[i] for i in range(len(self.id2label))])
        self.types = sorted({v[2:] for v in self.id2label.values() if v[:2] in ("B-", "I-")})
        self.max_length = sequence_limit(self.model, self.tokenizer, 512)

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[Record]:
        """Tag ``texts``; one that is longer than the model reads at once is tagged in overlapping windows."""
        results: list[Record] = []
        for begin in range(0, len(texts), batch_size):
            chunk = list(texts[begin : begin + batch_size])
            encoded = [encode_record(Record(text=t), self.tokenizer, None, self.max_length) for t in chunk]
            for text, enc, probs in zip(chunk, encoded, self._forward(encoded)):
                rows, windows = self._word_rows(enc, probs), 1
                if enc.truncated_words:
                    rows, windows = self._rows_in_windows(text, enc.offsets, rows)
                results.append(self._decode(text, enc.offsets, rows, windows))
        return results

    def _forward(self, encoded: list) -> list[np.ndarray]:
        """Label probabilities per subword position of each encoding (padded together)."""
        import torch

        width = max(len(e.input_ids) for e in encoded)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in encoded])
        mask = torch.tensor([e.attention_mask + [0] * (width - len(e.attention_mask)) for e in encoded])
        with torch.no_grad():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
        return list(torch.softmax(logits.float(), dim=-1).cpu().numpy())

    def _word_rows(self, enc, probs: np.ndarray) -> np.ndarray:
        """``[words the encoding kept, labels]``: each word's first-subword probabilities; a word the tokenizer
        maps to no subword at all (e.g. a lone zero-width character) is certainly O."""
        first: dict[int, int] = {}
        for pos, w in enumerate(enc.word_ids):
            if w is not None and w not in first:
                first[w] = pos
        certain_outside = np.eye(len(self.id2label))[self.label2id.get("O", 0)]
        n_words = max(first) + 1 if first else 0
        return np.array([probs[first[w]] if w in first else certain_outside for w in range(n_words)]).reshape(
            n_words, len(self.id2label))

    def _rows_in_windows(self, text: str, offsets: list, first: np.ndarray) -> tuple[np.ndarray, int]:
        """Every word's probabilities from overlapping windows of the text, each as long as the model reads.

        Window ``k + 1`` starts half-way through window ``k``'s words, and each word takes its row from the
        window where it has the most context on its nearer side (a text edge counts as full context).
        """
        n = len(offsets)
        windows = [(0, first)]
        while windows[-1][0] + len(windows[-1][1]) < n and len(windows[-1][1]):
            start = windows[-1][0] + max(1, len(windows[-1][1]) // 2)
            enc = encode_record(Record(text=text[offsets[start][0]:]), self.tokenizer, None, self.max_length)
            windows.append((start, self._word_rows(enc, self._forward([enc])[0])))
        rows = np.zeros((n, len(self.id2label)))
        context = np.full(n, -1.0)
        for start, window in windows:
            end = start + len(window)
            for w in range(start, min(end, n)):
                left = w - start if start > 0 else np.inf
                right = end - 1 - w if end < n else np.inf
                if min(left, right) > context[w]:
                    rows[w], context[w] = window[w - start], min(left, right)
        return rows[: int(np.sum(context >= 0))], len(windows)

    def _decode(self, text: str, offsets: list, rows: np.ndarray, windows: int = 1) -> Record:
        n_words = len(rows)
        if self.constrained and n_words:
            ids = constrained_decode(np.log(np.clip(rows, 1e-12, None)), self.allowed)
        else:
            ids = [int(i) for i in np.argmax(rows, axis=-1)] if n_words else []
        tags = [self.id2label[i] for i in ids]
        scores = [float(rows[w, i]) for w, i in enumerate(ids)]
        spans, span_scores = decode_words(text, offsets[:n_words], tags, scores)
        meta: dict = {"span_scores": span_scores}
        if windows > 1:
            meta["windows"] = windows
        if n_words < len(offsets):  # only if a window could not advance
            meta["untagged_words"] = len(offsets) - n_words
        return Record(text=text, spans=spans, meta=meta)
