"""The saved few-shot classifier: a sentence-transformers body plus a linear head on its embeddings.

A model directory written by :func:`adaptlab.tuning.strategies.fewshot.train_fewshot` holds

* the body, saved by ``SentenceTransformer.save_pretrained`` (``modules.json``, the transformer, its tokenizer,
  the pooling config), so ``sentence_transformers.SentenceTransformer(model_dir)`` opens it as it is;
* ``fewshot_head.json``: ``labels`` (the order of the probability columns), ``multi_label``, the head ``kind``
  and ``normalize_embeddings`` (whether embeddings are scaled to unit length before the head);
* ``fewshot_head.safetensors``: the head's weights, no pickle. The logistic head stores scikit-learn's
  ``coef_`` and ``intercept_`` unchanged (float64); the differentiable head stores the state dict of its
  ``torch.nn.Linear`` (``weight``, ``bias``).

Probabilities from an embedding ``x`` (unit length when ``normalize_embeddings``), with ``z = W x + b``:

* single-label, logistic head with two labels (scikit-learn keeps one row): ``p = [1 - s, s]``, ``s = sigmoid(z)``;
* single-label otherwise: ``p = softmax(z)`` (scikit-learn's multinomial ``predict_proba``; the differentiable
  head is trained with cross-entropy on the same form);
* multi-label (one-vs-rest): ``p_k = sigmoid(z_k)`` for each label independently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from adaptlab.errors import ModelError
from adaptlab.runs import atomic_write_text

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

HEAD_CONFIG = "fewshot_head.json"
HEAD_WEIGHTS = "fewshot_head.safetensors"
HeadKind = Literal["logistic", "differentiable"]


def is_fewshot_model(path: str | Path) -> bool:
    """True for a directory written by ``train_fewshot`` (it has ``fewshot_head.json``)."""
    return (Path(path) / HEAD_CONFIG).is_file()


def pooling_description(body: SentenceTransformer) -> str:
    """The body's modules after the transformer, e.g. ``Pooling(mean) -> Normalize``."""
    parts = []
    for module in list(body)[1:]:
        mode = getattr(module, "pooling_mode", None)
        parts.append(f"{type(module).__name__}({mode})" if mode else type(module).__name__)
    return " -> ".join(parts)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z: np.ndarray) -> np.ndarray:
    shifted = np.exp(z - z.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@dataclass
class FewshotHead:
    """A linear head ``z = W x + b`` and how to turn ``z`` into probabilities (module docstring).

    ``weight`` is ``(rows, dim)``: one row per label, or a single row for a two-label logistic head.
    """

    kind: HeadKind
    labels: list[str]
    multi_label: bool
    normalize_embeddings: bool
    weight: np.ndarray
    bias: np.ndarray

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """``(n, len(labels))`` probabilities of ``embeddings`` (already normalised when the head asks for it)."""
        z = embeddings.astype(self.weight.dtype, copy=False) @ self.weight.T + self.bias
        if self.multi_label:
            return sigmoid(z)
        if z.shape[1] == 1:
            positive = sigmoid(z[:, 0])
            return np.stack([1.0 - positive, positive], axis=1)
        return softmax(z)

    def tensors(self) -> dict[str, torch.Tensor]:
        names = ("coef_", "intercept_") if self.kind == "logistic" else ("weight", "bias")
        return {names[0]: torch.from_numpy(np.ascontiguousarray(self.weight)),
                names[1]: torch.from_numpy(np.ascontiguousarray(self.bias))}

    def save(self, model_dir: Path, pooling: str) -> None:
        """Write the weights and ``fewshot_head.json``; ``pooling`` describes the body's modules, for people."""
        from safetensors.torch import save_file

        save_file(self.tensors(), str(model_dir / HEAD_WEIGHTS))
        description = {"labels": self.labels, "multi_label": self.multi_label, "head": self.kind,
                       "normalize_embeddings": self.normalize_embeddings, "pooling": pooling,
                       "weights": HEAD_WEIGHTS}
        atomic_write_text(model_dir / HEAD_CONFIG, json.dumps(description, indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: Path) -> FewshotHead:
        from safetensors.torch import load_file

        try:
            description = json.loads((model_dir / HEAD_CONFIG).read_text(encoding="utf-8"))
            tensors = load_file(str(model_dir / HEAD_WEIGHTS))
            names = ("coef_", "intercept_") if description["head"] == "logistic" else ("weight", "bias")
            weight, bias = (tensors[name].numpy() for name in names)
            return cls(description["head"], list(description["labels"]), bool(description["multi_label"]),
                       bool(description["normalize_embeddings"]), weight, bias)
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(f"{model_dir}: not a complete few-shot classifier ({HEAD_CONFIG} + {HEAD_WEIGHTS}): "
                             f"{err}; train it again with strategy.fewshot") from err


class FewshotClassifier:
    """A sentence-transformers body and a :class:`FewshotHead`; what ``cls predict`` / ``cls evaluate`` use."""

    def __init__(self, body: SentenceTransformer, head: FewshotHead):
        self.body = body
        self.head = head

    @property
    def labels(self) -> list[str]:
        return self.head.labels

    @property
    def multi_label(self) -> bool:
        return self.head.multi_label

    @classmethod
    def load(cls, path: str | Path) -> FewshotClassifier:
        """Open a model directory (or a run directory with ``model/`` inside) written by ``train_fewshot``."""
        from sentence_transformers import SentenceTransformer

        path = Path(path)
        if not is_fewshot_model(path) and is_fewshot_model(path / "model"):
            path = path / "model"
        if not is_fewshot_model(path):
            raise ModelError(f"{path}: no {HEAD_CONFIG}; this is not a few-shot classifier (strategy.fewshot)")
        head = FewshotHead.load(path)
        try:
            body = SentenceTransformer(str(path), device="cuda" if torch.cuda.is_available() else "cpu")
        except (OSError, ValueError) as err:
            raise ModelError(f"{path}: cannot load the sentence-transformers body: {err}") from err
        return cls(body, head)

    def save(self, model_dir: str | Path) -> Path:
        model_dir = Path(model_dir)
        self.body.save_pretrained(str(model_dir))
        self.head.save(model_dir, pooling_description(self.body))
        return model_dir

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Sentence embeddings as the head sees them (eval mode, normalised when the head asks for it)."""
        return self.body.encode(list(texts), batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True,
                                normalize_embeddings=self.head.normalize_embeddings)

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """``(len(texts), len(labels))`` probabilities; rows sum to 1 unless ``multi_label``."""
        if not texts:
            return np.zeros((0, len(self.labels)))
        return self.head.probabilities(self.embed(texts, batch_size))
