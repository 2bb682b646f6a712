"""Masked-language-model inputs with whole-word masking, for any fast tokenizer.

Why not ``transformers.DataCollatorForLanguageModeling(whole_word_mask=True)``: in transformers 5 it finds
words from character offsets (a word is a run of subwords with no gap between them, so ``cell.`` is one word),
cannot pad rows of different lengths (their ``offset_mapping`` stays ragged), and drops the 80/10/10 replacement
rule. Here a word is what the tokenizer's own pre-tokenizer calls a word (``encoding.word_ids()``: ``cell`` and
``.`` are two words, whatever the subword scheme: WordPiece ``##``, SentencePiece ``▁``, byte-level BPE).

The selection (Devlin et al. 2019; whole-word masking as in the BERT repository's later release): every word of a
row is chosen independently with probability ``p``, and a chosen word has *all* its subwords chosen, so in
expectation a share ``p`` of the words and of the subwords is chosen. Each chosen subword is then replaced by the
mask token with probability 0.8, by a random token with probability 0.1, and kept with probability 0.1; the
loss is the cross-entropy of the original subword at the chosen positions only (``labels`` is -100 elsewhere),

    L = -1/|C| sum_{i in C} log p(x_i | x~),

where ``x~`` is the corrupted row and ``C`` the chosen positions of the batch. Special tokens and padding are
never chosen. A batch in which no word was drawn gets one word chosen uniformly at random, so that ``L`` is
always defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from adaptlab.tuning.trainer import IGNORE_INDEX

NOT_A_WORD = -1  # word id of special tokens and padding
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1


def masking_rows(texts: list[str], tokenizer: Any, max_length: int, whole_word: bool) -> dict[str, list]:
    """``input_ids``, ``attention_mask`` and ``word_ids`` per text (``word_ids``: the word of each subword, -1 for
    special tokens; with ``whole_word=False`` every subword is a word of its own)."""
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    word_ids = []
    for row, special in enumerate(encoded["special_tokens_mask"]):
        if whole_word:
            words = encoded.word_ids(row)
        else:
            words = [None if flag else position for position, flag in enumerate(special)]
        word_ids.append([NOT_A_WORD if word is None else word for word in words])
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "word_ids": word_ids}


def choose_positions(word_ids: torch.Tensor, probability: float, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """Boolean (batch, seq): every subword of each word chosen with ``probability`` (module docstring)."""
    is_word = word_ids != NOT_A_WORD
    if not bool(is_word.any()):
        return is_word
    words = word_ids.clamp(min=0)
    draws = torch.rand(word_ids.size(0), int(words.max()) + 1, generator=generator) < probability
    chosen = draws.gather(1, words) & is_word
    if not bool(chosen.any()):  # nothing drawn: one word, uniformly among the batch's (row, word) pairs
        candidates = is_word.nonzero()
        pick = candidates[torch.randint(len(candidates), (1,), generator=generator)].squeeze(0)
        chosen = is_word & (torch.arange(word_ids.size(0)) == pick[0]).unsqueeze(1) & (words == words[pick[0], pick[1]])
    return chosen


def corrupt(input_ids: torch.Tensor, chosen: torch.Tensor, mask_token_id: int, vocab_size: int,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(corrupted input_ids, labels)``: the 80/10/10 rule on the chosen positions; labels -100 elsewhere."""
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    roll = torch.rand(input_ids.shape, generator=generator)
    random_tokens = torch.randint(vocab_size, input_ids.shape, generator=generator)
    corrupted = torch.where(chosen & (roll < MASK_SHARE), torch.full_like(input_ids, mask_token_id), input_ids)
    corrupted = torch.where(chosen & (roll >= MASK_SHARE) & (roll < MASK_SHARE + RANDOM_SHARE), random_tokens,
                            corrupted)
    return corrupted, labels


@dataclass
class WholeWordMaskCollator:
    """Pads rows of :func:`masking_rows` and masks them (module docstring).

    Without a ``generator`` the masks come from torch's global random state, which the Trainer saves in each
    checkpoint and restores on resume, so a resumed run draws the same masks as an uninterrupted one.
    """

    tokenizer: Any
    probability: float
    generator: torch.Generator | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad([{"input_ids": row["input_ids"], "attention_mask": row["attention_mask"]}
                                    for row in rows], return_tensors="pt")
        width = batch["input_ids"].size(1)
        word_ids = torch.full((len(rows), width), NOT_A_WORD, dtype=torch.long)
        for index, row in enumerate(rows):
            words = torch.as_tensor(row["word_ids"], dtype=torch.long)
            if self.tokenizer.padding_side == "left":
                word_ids[index, width - len(words):] = words
            else:
                word_ids[index, :len(words)] = words
        chosen = choose_positions(word_ids, self.probability, self.generator)
        batch["input_ids"], batch["labels"] = corrupt(batch["input_ids"], chosen, self.tokenizer.mask_token_id,
                                                      len(self.tokenizer), self.generator)
        return dict(batch)
