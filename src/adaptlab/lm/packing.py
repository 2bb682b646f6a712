"""Packing tokenized documents into fixed-length blocks that keep document boundaries.

Why: padding each document to the block size wastes most of a batch on short documents, while the
usual "concatenate and cut" (HF ``group_texts``) lets every token attend to the unrelated document
before it. Packing with boundaries gets the throughput of the second and the correctness of the
first.

A block is ``block_size`` tokens taken from consecutive documents. Inside a block:

* ``position_ids`` restart at 0 at the first token of every document (piece), so each document
  sees the positions it would see alone;
* no token attends across documents. This needs no attention mask from us: transformers (5.x)
  detects packed rows from ``position_ids`` that do not increase by one and builds a
  block-diagonal causal mask for the sdpa/eager kernels, and flash-attention uses its varlen path.
  :class:`PackedCollator` therefore sends ``position_ids`` and no ``attention_mask``. transformers
  only looks for packed rows when no KV cache is passed, and a model creates one by itself when
  ``config.use_cache`` is true, *also in training mode*: train packed data with
  ``model.config.use_cache = False`` (or pass ``use_cache=False``), else documents silently attend
  to each other (``tests/lm/test_packing.py`` shows both);
* ``labels`` equal ``input_ids`` except at the first token of each document piece, which is
  ``-100``: it would otherwise be predicted from the last token of the previous document.

Documents longer than the room left in a block are **split, never cut**: with
``split_across_blocks=True`` (the pretraining default, no padding) a document fills the rest of the
block and continues in the next one; with ``False`` a document that fits in one block starts a new
block when it does not fit in the current one (the current one is closed short and padded by the
collator), and only documents longer than ``block_size`` are split into ``block_size`` pieces. Every
split is counted in :class:`PackStats`. A continued piece restarts its positions, so it is trained
as a document of its own without the context of its first part.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from adaptlab.errors import ConfigError

IGNORE_INDEX = -100


@dataclass
class PackStats:
    documents: int = 0
    tokens: int = 0
    blocks: int = 0
    split_documents: int = 0  # documents that ended up in more than one piece
    longer_than_block: int = 0  # documents with more tokens than block_size (always split)
    padding_tokens: int = 0  # room left in closed-short blocks (filled by the collator)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def add(self, other: PackStats) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


def encode_document(tokenizer: Any, text: str) -> list[int]:
    """Token ids of one document: ``[BOS] + tokens + [EOS]``.

    The text is tokenized without the tokenizer's own special tokens; BOS is prepended when the
    tokenizer has one, and EOS (the document separator the model learns to emit at the end) is
    appended; a tokenizer without EOS (e.g. BERT's WordPiece) gets its ``sep_token`` instead.
    """
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if tokenizer.bos_token_id is not None:
        ids.insert(0, tokenizer.bos_token_id)
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if end is not None:
        ids.append(end)
    return ids


class _BlockBuilder:
    def __init__(self, block_size: int):
        self.block_size = block_size
        self.rows: list[dict[str, list[int]]] = []
        self.stats = PackStats()
        self._new_block()

    def _new_block(self) -> None:
        self.ids: list[int] = []
        self.positions: list[int] = []
        self.labels: list[int] = []

    @property
    def room(self) -> int:
        return self.block_size - len(self.ids)

    def add_piece(self, piece: Sequence[int]) -> None:
        self.ids.extend(piece)
        self.positions.extend(range(len(piece)))
        self.labels.extend([IGNORE_INDEX, *piece[1:]])
        if self.room == 0:
            self.close()

    def close(self) -> None:
        if self.ids:
            self.stats.padding_tokens += self.room
            self.rows.append({"input_ids": self.ids, "position_ids": self.positions, "labels": self.labels})
            self.stats.blocks += 1
        self._new_block()


def pack_documents(docs: Iterable[Sequence[int]], block_size: int,
                   split_across_blocks: bool = True) -> tuple[list[dict[str, list[int]]], PackStats]:
    """Pack token-id documents into rows of ``block_size`` tokens (the last row may be shorter).

    Returns the rows (``input_ids``, ``position_ids``, ``labels``) and the counts. Empty documents
    are counted as documents and contribute nothing.
    """
    if block_size < 2:
        raise ConfigError(f"block_size must be at least 2, got {block_size}")
    builder = _BlockBuilder(block_size)
    for doc in docs:
        doc = list(doc)
        builder.stats.documents += 1
        builder.stats.tokens += len(doc)
        if len(doc) > block_size:
            builder.stats.longer_than_block += 1
        if not split_across_blocks and len(doc) <= block_size and len(doc) > builder.room:
            builder.close()
        pieces = 0
        while doc:
            take = builder.room
            builder.add_piece(doc[:take])
            doc = doc[take:]
            pieces += 1
        if pieces > 1:
            builder.stats.split_documents += 1
    builder.close()
    return builder.rows, builder.stats


@dataclass
class PackedCollator:
    """Stacks packed rows into ``input_ids``, ``position_ids`` and ``labels`` LongTensors (+ ``weights``).

    Shorter rows are right-padded with ``pad_token_id``; the padding is its own pseudo-document
    (positions restarting at 0, labels ``-100``), so no real token attends to it and it adds no loss.
    Rows that carry per-token loss ``weights`` (weighted SFT, :mod:`adaptlab.lm.sft_data`) get a float
    ``weights`` tensor, padded with 0.
    """

    pad_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        weighted = "weights" in features[0]
        batch: dict[str, list[list[Any]]] = {"input_ids": [], "position_ids": [], "labels": [], "weights": []}
        for f in features:
            pad = longest - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            batch["position_ids"].append(list(f["position_ids"]) + list(range(pad)))
            batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            if weighted:
                batch["weights"].append(list(f["weights"]) + [0.0] * pad)
        tensors = {name: torch.tensor(batch[name], dtype=torch.long) for name in ("input_ids", "position_ids",
                                                                                  "labels")}
        if weighted:
            tensors["weights"] = torch.tensor(batch["weights"], dtype=torch.float32)
        return tensors
