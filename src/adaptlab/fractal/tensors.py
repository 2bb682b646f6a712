"""The tensors FRACTAL trains on: features, labels and similarities of a set of bags, and of pair bags.

Bags are kept contiguous: the sentences of bag ``b`` are rows ``starts[b] .. starts[b+1]``. A pair bag
is two side bags, ``a`` of pair ``p`` at side ``2p`` and ``b`` at ``2p + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch

from adaptlab.fractal.aggregate import bag_index_from_lengths


@dataclass
class BagTexts:
    """The texts behind a :class:`BagTensors` (needed to fine-tune the encoder)."""

    sentences: list[str]  # [N]
    contexts: list[str | None]  # [B]; None (or blank): the bag has no context


@dataclass
class BagTensors:
    """Features and targets of a set of bags, sentences of one bag contiguous."""

    features: torch.Tensor  # [N, F]
    starts: list[int]  # B + 1 boundaries
    bag_labels: torch.Tensor  # [B]
    similarities: torch.Tensor  # [N] sentence-context cosine (NaN: no context)
    sentence_embeddings: torch.Tensor  # [N, d]
    sentence_labels: torch.Tensor  # [N], NaN where unknown
    texts: BagTexts | None = None

    @property
    def n_bags(self) -> int:
        return len(self.starts) - 1

    @cached_property
    def bag_index(self) -> torch.Tensor:
        """Which bag each sentence belongs to (computed once: a batch's bags never change)."""
        return bag_index_from_lengths(np.diff(self.starts).tolist())

    def rows(self, bags: Sequence[int]) -> torch.Tensor:
        """The sentence rows of ``bags``, bag after bag."""
        return torch.cat([torch.arange(self.starts[b], self.starts[b + 1]) for b in bags]) if len(bags) else \
            torch.zeros(0, dtype=torch.long)

    def subset(self, bags: Sequence[int]) -> BagTensors:
        rows = self.rows(bags)
        lengths = [self.starts[b + 1] - self.starts[b] for b in bags]
        texts = None if self.texts is None else BagTexts([self.texts.sentences[r] for r in rows.tolist()],
                                                         [self.texts.contexts[b] for b in bags])
        return BagTensors(self.features[rows], [0, *np.cumsum(lengths, dtype=int).tolist()],
                          self.bag_labels[list(bags)], self.similarities[rows], self.sentence_embeddings[rows],
                          self.sentence_labels[rows], texts)

    def rows_as_bags(self, rows: Sequence[int]) -> BagTensors:
        """The given sentences, each as a bag of its own (keeping its bag's context); bag label = its label."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        bag_of_row = self.bag_index[index].tolist()
        texts = None if self.texts is None else BagTexts([self.texts.sentences[r] for r in index.tolist()],
                                                         [self.texts.contexts[b] for b in bag_of_row])
        return BagTensors(self.features[index], list(range(len(index) + 1)), self.sentence_labels[index],
                          self.similarities[index], self.sentence_embeddings[index], self.sentence_labels[index],
                          texts)

    def concat(self, other: BagTensors) -> BagTensors:
        """This set's bags followed by ``other``'s."""
        offset = self.starts[-1]
        texts = None if self.texts is None or other.texts is None else BagTexts(
            self.texts.sentences + other.texts.sentences, self.texts.contexts + other.texts.contexts)
        return BagTensors(torch.cat([self.features, other.features]),
                          self.starts + [offset + s for s in other.starts[1:]],
                          torch.cat([self.bag_labels, other.bag_labels]),
                          torch.cat([self.similarities, other.similarities]),
                          torch.cat([self.sentence_embeddings, other.sentence_embeddings]),
                          torch.cat([self.sentence_labels, other.sentence_labels]), texts)


@dataclass
class PairTensors:
    """Pair bags: side ``a`` of pair ``p`` is bag ``2p`` of ``sides``, side ``b`` is bag ``2p + 1``."""

    sides: BagTensors  # bag labels are NaN: a side has no label of its own
    preferences: torch.Tensor  # [P] in [0, 1]: 1 = a preferred, 0 = b, 0.5 = tie

    @property
    def n_pairs(self) -> int:
        return len(self.preferences)

    def subset(self, pairs: Sequence[int]) -> PairTensors:
        return PairTensors(self.sides.subset([side for p in pairs for side in (2 * p, 2 * p + 1)]),
                           self.preferences[list(pairs)])


def make_bag_tensors(features, lengths: Sequence[int], bag_labels: Sequence[float], similarities,
                     sentence_embeddings, sentence_labels: Sequence[float] | None = None,
                     texts: BagTexts | None = None) -> BagTensors:
    n = int(sum(lengths))
    if texts is not None and (len(texts.sentences) != n or len(texts.contexts) != len(lengths)):
        raise ValueError(f"texts hold {len(texts.sentences)} sentences / {len(texts.contexts)} contexts for "
                         f"{n} sentences / {len(lengths)} bags")
    labels = torch.full((n,), float("nan")) if sentence_labels is None else torch.tensor(
        [float("nan") if v is None else float(v) for v in sentence_labels], dtype=torch.float32)
    return BagTensors(torch.as_tensor(np.asarray(features), dtype=torch.float32),
                      [0, *np.cumsum(lengths).tolist()], torch.tensor(bag_labels, dtype=torch.float32),
                      torch.as_tensor(np.asarray(similarities), dtype=torch.float32),
                      torch.as_tensor(np.asarray(sentence_embeddings), dtype=torch.float32), labels, texts)


def make_pair_tensors(sides: BagTensors, preferences: Sequence[float]) -> PairTensors:
    """Pairs from side bags laid out ``a_0, b_0, a_1, b_1, ...``; their bag labels are set to NaN."""
    if sides.n_bags != 2 * len(preferences):
        raise ValueError(f"{sides.n_bags} side bags for {len(preferences)} pairs; expected two per pair")
    sides = replace(sides, bag_labels=torch.full((sides.n_bags,), float("nan")))
    return PairTensors(sides, torch.tensor(preferences, dtype=torch.float32))
