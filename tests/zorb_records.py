"""An easy NER task that tiny random models learn in a few steps, shared by the NER, distillation and multi-task
tests: made-up 'Zorb' animal words are ANIMAL, water words PLACE, the rest filler."""

from __future__ import annotations

import random

from adaptlab.data.records import Record, Span

FILLERS = ["the", "a", "often", "lives", "near", "quiet", "small", "and", "green"]


def zorb_records(n: int, seed: int, animals: list[str], places: list[str], words: tuple[int, int] = (4, 9),
                 entity_share: float = 0.2, fillers: list[str] = FILLERS) -> list[Record]:
    """``n`` seeded sentences of ``words[0]..words[1]`` words; each word is an animal with probability
    ``entity_share``, a place with the same probability, else a filler."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        tokens, spans, pos = [], [], 0
        for _ in range(rng.randint(*words)):
            roll = rng.random()
            word = rng.choice(animals if roll < entity_share else places if roll < 2 * entity_share else fillers)
            label = "ANIMAL" if word in animals else "PLACE" if word in places else None
            if label:
                spans.append(Span(pos, pos + len(word), label))
            tokens.append(word)
            pos += len(word) + 1
        records.append(Record(" ".join(tokens), spans))
    return records
