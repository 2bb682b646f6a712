"""End-to-end fine-tuning of the sentence encoder with the FRACTAL head (``train.encoder: finetune``).

The frozen recipe learns an MLP head over cached embeddings. Here the sentence-transformers encoder is trained
too, on the same FRACTAL loss, with its own (small) learning rate.

**Two stages (LP-FT).** The head is first trained on the cached frozen features, exactly as in frozen mode
(``epochs``, cheap). Then encoder and head are trained jointly for ``encoder_epochs`` epochs, the encoder at
``encoder_learning_rate`` (an extra parameter group of the head's AdamW, so the head keeps its moments). A
random head would send noisy gradients into the pretrained encoder and distort its features; training the
head first avoids that (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features", LP-FT), and keeps
the expensive encoder passes to a few epochs. The joint stage starts where frozen training ends: at that
point the live features equal the cached ones.

**Features with gradients.** Per step the texts of the batch are encoded by the encoder in training mode and
combined exactly as :mod:`adaptlab.fractal.features` does: ``f = [e_s, e_c, e_s ⊙ e_c, |e_s − e_c|]``, the
context blocks zero for a bag without context. Contexts are chunked as there (:func:`chunk_context`, windows of
the encoder's ``max_seq_length``) and ``e_c`` is the elementwise max over chunks, with gradients (to the chunk
holding each dimension's max). So a context longer than the window costs one encoder pass per chunk;
``encoder_max_length`` bounds the cost of every text, and each distinct text (a context shared by a question's
bags, a repeated sentence) is encoded once per step.

**Bounded memory (GradCache, Gao et al. 2021).** A step's texts can be many (hundreds of sentences); keeping
the autograd graph of all of them OOMs a CPU machine. So a step runs: (1) encode all texts without a graph, in
length-sorted micro-batches of ``encoder_batch_size``, recording the RNG state before each; (2) compute the
loss from those embeddings as a leaf and backpropagate to the head and to ``∂L/∂E``; (3) re-encode each
micro-batch with a graph, the RNG restored so dropout draws the same masks, and backpropagate ``∂L/∂E`` of its
rows. The gradients equal those of one big batch; memory is that of one micro-batch; cost is one extra
forward pass without a graph.

**Priors use the initial, frozen embeddings.** The cosine and correlation priors take their similarities from
the cached features of the initial encoder, not from the encoder being trained. A prior states what we
believe before seeing labels; if its similarities came from the encoder being fine-tuned, the targets would
drift with the very scores they should regularise (the encoder could satisfy the prior by moving the
embeddings rather than the scores), and the prior would end up confirming whatever the bag loss learned. Frozen
similarities keep the prior a fixed anchor, as in the paper, and cost nothing extra.

**Saving.** A fine-tuned scorer is the head (``scorer.safetensors``, ``scorer.json`` with ``"encoder":
"encoder"``) plus the encoder saved by sentence-transformers in ``encoder/``, together with
``adaptlab_fingerprint.json`` (sha256 of its weights). :func:`adaptlab.fractal.model.load_scorer` points
``feature_model`` at that directory, so scoring is the head over cached features of the *fine-tuned* encoder;
the fingerprint is part of the feature cache's model key (:func:`adaptlab.fractal.features.model_cache_key`
hashes every JSON file), so two fine-tunings of one architecture, or the frozen original, never share rows.

The encoder runs on the CPU, like the feature cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from adaptlab.errors import ConfigError, ModelError
from adaptlab.fractal.features import chunk_context, default_model_path, normalise_text
from adaptlab.fractal.model import SentenceScorer, save_scorer
from adaptlab.models.gguf import resolve_model
from adaptlab.runs import atomic_write_json

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from adaptlab.fractal.tensors import BagTensors

ENCODER_DIR = "encoder"
FINGERPRINT_FILE = "adaptlab_fingerprint.json"
LossFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]
"""features ``[N, 4d]`` (with gradients) -> ``{"loss": scalar, <term>: ...}``."""


def load_encoder(model_name_or_path: str | None, max_length: int | None = None) -> SentenceTransformer:
    """A fresh copy of the sentence-transformers encoder (the initial weights), on the CPU."""
    from sentence_transformers import SentenceTransformer

    name = resolve_model(model_name_or_path, "feature_model") if model_name_or_path else default_model_path()
    try:
        encoder = SentenceTransformer(name, device="cpu")
    except OSError as err:
        raise ModelError(f"cannot load sentence-transformers model {name!r} to fine-tune: {err}") from err
    if max_length is not None:
        encoder.max_seq_length = max_length
    return encoder


def pair_features_torch(sentence_emb: torch.Tensor, context_emb: torch.Tensor,
                        has_context: torch.Tensor) -> torch.Tensor:
    """:func:`adaptlab.fractal.features.pair_features` on tensors: ``[e_s, e_c, e_s ⊙ e_c, |e_s − e_c|]``."""
    mask = has_context[:, None].to(sentence_emb.dtype)
    context = context_emb * mask
    return torch.cat([sentence_emb, context, sentence_emb * context, (sentence_emb - context).abs() * mask], dim=1)


@dataclass
class _Layout:
    """Where each sentence's and context's embedding comes from in a step's list of distinct texts."""

    texts: list[str]
    sentence_rows: torch.Tensor  # [N] row of each sentence in ``texts``
    context_chunks: list[list[int]]  # per distinct context: rows of its chunks
    context_of_sentence: torch.Tensor  # [N] index into context_chunks, -1 where the bag has no context


class EncoderScorer(nn.Module):
    """A sentence-transformers encoder and the MLP head, scoring sentences from their texts."""

    def __init__(self, encoder: SentenceTransformer, head: SentenceScorer, batch_size: int = 32):
        super().__init__()
        self.encoder, self.head, self.batch_size = encoder, head, batch_size
        self._chunks: dict[str, list[str]] = {}

    def _layout(self, batch: BagTensors) -> _Layout:
        if batch.texts is None:
            raise ConfigError("train.encoder=finetune needs the bags' texts (make_bag_tensors(..., texts=...))")
        row_of: dict[str, int] = {}
        sentence_rows = [row_of.setdefault(normalise_text(s), len(row_of)) for s in batch.texts.sentences]
        context_index: dict[str, int] = {}
        context_chunks: list[list[int]] = []
        bag_context = []
        for context in batch.texts.contexts:
            text = normalise_text(context) if context is not None else ""
            if not text:
                bag_context.append(-1)
                continue
            if text not in context_index:
                if text not in self._chunks:
                    self._chunks[text] = chunk_context(self.encoder.tokenizer, text, self.encoder.max_seq_length)
                context_index[text] = len(context_chunks)
                context_chunks.append([row_of.setdefault(chunk, len(row_of)) for chunk in self._chunks[text]])
            bag_context.append(context_index[text])
        of_sentence = torch.tensor(bag_context, dtype=torch.long)[batch.bag_index] if bag_context else \
            torch.zeros(0, dtype=torch.long)
        return _Layout(list(row_of), torch.tensor(sentence_rows, dtype=torch.long), context_chunks, of_sentence)

    def _features(self, embeddings: torch.Tensor, layout: _Layout) -> torch.Tensor:
        """Per-sentence features from the embeddings of ``layout.texts`` (context = max over its chunks)."""
        sentence_emb = embeddings[layout.sentence_rows]
        has_context = layout.context_of_sentence >= 0
        if not layout.context_chunks:
            return pair_features_torch(sentence_emb, torch.zeros_like(sentence_emb), has_context)
        contexts = torch.stack([embeddings[rows].max(dim=0).values for rows in layout.context_chunks])
        return pair_features_torch(sentence_emb, contexts[layout.context_of_sentence.clamp(min=0)], has_context)

    def _micro_batches(self, texts: list[str]) -> list[list[int]]:
        """Row indices, longest texts first (little padding), cut into ``batch_size`` pieces."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def _encode(self, texts: list[str]) -> torch.Tensor:
        return self.encoder(self.encoder.preprocess(texts))["sentence_embedding"]

    @torch.no_grad()
    def score(self, data: BagTensors) -> torch.Tensor:
        """Sentence scores in (0, 1) of every sentence of ``data`` (eval mode, no gradients)."""
        was_training = self.training
        self.eval()
        layout = self._layout(data)
        embeddings: list[torch.Tensor | None] = [None] * len(layout.texts)
        for rows in self._micro_batches(layout.texts):
            for row, vector in zip(rows, self._encode([layout.texts[r] for r in rows])):
                embeddings[row] = vector
        width = self.head.shape["feature_dim"] // 4
        stacked = torch.stack(embeddings) if embeddings else torch.zeros(0, width)
        scores = self.head(self._features(stacked, layout))
        self.train(was_training)
        return scores

    def backward(self, batch: BagTensors, loss_fn: LossFn) -> dict[str, torch.Tensor]:
        """Loss of ``batch`` and its gradients for head and encoder, in bounded memory (GradCache, see above)."""
        layout = self._layout(batch)
        micro = self._micro_batches(layout.texts)
        states, pieces = [], []
        with torch.no_grad():
            for rows in micro:
                states.append(torch.get_rng_state())
                pieces.append(self._encode([layout.texts[r] for r in rows]))
        sorted_rows = torch.tensor([r for rows in micro for r in rows], dtype=torch.long)
        cached = torch.cat(pieces).requires_grad_()  # rows in micro-batch order
        embeddings = cached[torch.argsort(sorted_rows)]
        terms = loss_fn(self._features(embeddings, layout))
        terms["loss"].backward()
        after = torch.get_rng_state()
        start = 0
        for rows, state in zip(micro, states):
            torch.set_rng_state(state)
            self._encode([layout.texts[r] for r in rows]).backward(cached.grad[start:start + len(rows)])
            start += len(rows)
        torch.set_rng_state(after)
        return terms


def weights_fingerprint(directory: Path) -> str:
    """sha256 over the weight files (``*.safetensors``, ``*.bin``) under ``directory``, by relative path."""
    digest = hashlib.sha256()
    for file in sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin")):
        digest.update(file.relative_to(directory).as_posix().encode() + b"\0")
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def save_finetuned_scorer(model: EncoderScorer, directory: str | Path, info: dict[str, Any]) -> Path:
    """Encoder (sentence-transformers format + fingerprint) into ``directory/encoder``, then the head.

    ``scorer.json`` is written last, so a directory with it holds a complete scorer.
    """
    directory = Path(directory)
    encoder_dir = directory / ENCODER_DIR
    model.encoder.save(str(encoder_dir), create_model_card=False)
    atomic_write_json(encoder_dir / FINGERPRINT_FILE, {"weights_sha256": weights_fingerprint(encoder_dir)})
    return save_scorer(model.head, directory, {**info, "feature_model": None, "encoder": ENCODER_DIR})
