"""NER student: token classification over any BERT-family encoder, trained with the HF Trainer.

``train_ner`` fine-tunes ``AutoModelForTokenClassification`` on canonical records and saves a
plain HF model directory (it also works in ``transformers.pipeline("token-classification")``);
``predict_ner`` turns texts into canonical records with character spans and per-span scores.
Dev F1 for checkpoint selection and early stopping is strict entity-level macro F1 on words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptlab.config import TrainingConfig
from adaptlab.data.formats.conll import tags_to_spans
from adaptlab.data.records import Record
from adaptlab.errors import ModelError
from adaptlab.ie.hf_training import fit
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
from adaptlab.runs import get_logger, seed_everything


@dataclass
class NERTrainResult:
    model_dir: Path
    labels: list[str]
    history: list[dict]
    dev_metrics: dict
    truncated_records: int
    train_seconds: float


def _dataset(records: Sequence[Record], tokenizer, label2id, max_length: int):
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
    cfg: TrainingConfig,
    output_dir: Path,
) -> NERTrainResult:
    """Fine-tune a token-classification student; writes ``output_dir/model`` (HF format)."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification

    log = get_logger()
    seed_everything(cfg.seed)
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
    max_length = sequence_limit(model, tokenizer, cfg.max_length)
    train_ds, truncated = _dataset(train, tokenizer, label2id, max_length)
    dev_ds = None
    if dev:
        dev_ds, dev_truncated = _dataset(dev, tokenizer, label2id, max_length)
        truncated += dev_truncated
    if truncated:
        log.warning("%d records exceed max_length=%d subwords and were truncated for training",
                    truncated, max_length)

    done = fit(model, tokenizer, DataCollatorForTokenClassification(tokenizer), word_level_f1(id2label),
               "macro_f1", train_ds, dev_ds, cfg, output_dir)
    return NERTrainResult(done.model_dir, labels, done.history, done.dev_metrics, truncated, done.seconds)


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
        self.model = AutoModelForTokenClassification.from_pretrained(path)
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
        import torch

        results: list[Record] = []
        for begin in range(0, len(texts), batch_size):
            chunk = [Record(text=t) for t in texts[begin : begin + batch_size]]
            encoded = [encode_record(r, self.tokenizer, None, self.max_length) for r in chunk]
            width = max(len(e.input_ids) for e in encoded)
            pad = self.tokenizer.pad_token_id or 0
            ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in encoded])
            mask = torch.tensor([e.attention_mask + [0] * (width - len(e.attention_mask)) for e in encoded])
            with torch.no_grad():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            for record, enc, row in zip(chunk, encoded, probs):
                results.append(self._decode(record.text, enc, row))
        return results

    def _decode(self, text: str, enc, probs: np.ndarray) -> Record:
        first: dict[int, int] = {}
        for pos, w in enumerate(enc.word_ids):
            if w is not None and w not in first:
                first[w] = pos
        # Words past max_length are left untagged (counted in meta); a word the tokenizer maps to
        # no subword at all (e.g. a lone zero-width character) is tagged O.
        n_words = max(first) + 1 if first else 0
        certain_outside = np.eye(len(self.id2label))[self.label2id.get("O", 0)]
        rows = np.array([probs[first[w]] if w in first else certain_outside for w in range(n_words)])
        if self.constrained and n_words:
            ids = constrained_decode(np.log(np.clip(rows, 1e-12, None)), self.allowed)
        else:
            ids = [int(i) for i in np.argmax(rows, axis=-1)] if n_words else []
        tags = [self.id2label[i] for i in ids]
        scores = [float(rows[w, i]) for w, i in enumerate(ids)]
        spans, span_scores = decode_words(text, enc.offsets[:n_words], tags, scores)
        meta = {"span_scores": span_scores}
        if enc.truncated_words:
            meta["untagged_words"] = enc.truncated_words
        return Record(text=text, spans=spans, meta=meta)
