"""Exact and MinHash-LSH near-duplicate removal: first occurrence kept, deterministic, configurable."""

from __future__ import annotations

import random

import pytest

from adaptlab.config import validate_config
from adaptlab.errors import ConfigError
from adaptlab.lm.dedup import DedupConfig, deduplicate, exact_key, shingles

WORDS = [f"word{i}" for i in range(2000)]


def random_doc(rng: random.Random, n: int = 120) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def edit(doc: str, positions: list[int]) -> str:
    words = doc.split()
    for p in positions:
        words[p] = "edited"
    return " ".join(words)


@pytest.fixture
def docs() -> list[str]:
    rng = random.Random(0)
    return [random_doc(rng) for _ in range(6)]


def test_exact_duplicates_ignore_case_and_spacing(docs):
    texts = [docs[0], docs[1], "  " + docs[0].upper().replace(" ", "\n"), docs[1]]
    result = deduplicate(texts, DedupConfig(near=False))
    assert result.kind == [None, None, "exact", "exact"]
    assert result.duplicate_of == [None, None, 0, 1]
    assert exact_key(docs[0]) != exact_key(docs[0] + " x")


def test_near_duplicates_removed_distinct_documents_kept(docs):
    near = edit(docs[2], [60])  # one word of 120 changed: Jaccard of 5-word shingles ~0.92
    far = edit(docs[3], list(range(0, 120, 4)))  # every 4th word changed: no shingle survives
    texts = [*docs, near, far]
    result = deduplicate(texts, DedupConfig())
    assert result.kind == [None] * 6 + ["near", None]
    assert result.duplicate_of[6] == 2
    assert result.count("near") == 1 and result.count("exact") == 0 and result.kept == [0, 1, 2, 3, 4, 5, 7]


def test_first_occurrence_wins_and_result_is_deterministic(docs):
    near = edit(docs[0], [10])
    forward = deduplicate([near, docs[0], docs[1]], DedupConfig())
    assert forward.kind == [None, "near", None] and forward.duplicate_of[1] == 0
    assert deduplicate([near, docs[0], docs[1]], DedupConfig()).kind == forward.kind


def test_threshold_controls_what_counts_as_near(docs):
    near = edit(docs[0], [30, 90])  # two edits: estimated Jaccard ~0.85
    assert deduplicate([docs[0], near], DedupConfig(threshold=0.7)).kind == [None, "near"]
    assert deduplicate([docs[0], near], DedupConfig(threshold=0.99)).kind == [None, None]


def test_char_shingles_for_text_without_spaces():
    rng = random.Random(1)
    chars = "日本銀行政策金利市場円安株価為替債券利回"
    original = "".join(rng.choice(chars) for _ in range(300))
    copy = original[:150] + "誤" + original[151:]
    other = "".join(rng.choice(chars) for _ in range(300))
    word_level = deduplicate([original, copy, other], DedupConfig())
    assert word_level.kind == [None, None, None]  # one "word" each: no shared word shingle
    char_level = deduplicate([original, copy, other], DedupConfig(shingle_unit="char", shingle_size=5))
    assert char_level.kind == [None, "near", None]


def test_shingles_of_short_documents():
    assert shingles("Just Two", "word", 5) == {b"just two"}
    assert shingles("a b c", "word", 2) == {b"a b", b"b c"}
    assert shingles("ab cd", "char", 3) == {b"abc", b"bcd"}


def test_dedup_can_be_switched_off_and_validates(docs):
    texts = [docs[0], docs[0]]
    assert deduplicate(texts, DedupConfig(exact=False, near=False)).kind == [None, None]
    # With exact off, the copy is still caught as a near duplicate (Jaccard 1).
    assert deduplicate(texts, DedupConfig(exact=False)).kind == [None, "near"]
    with pytest.raises(ConfigError, match="threshold"):
        validate_config(DedupConfig, {"threshold": 0})
    with pytest.raises(ConfigError, match="unknown key 'shingles'"):
        validate_config(DedupConfig, {"shingles": 3})


def test_progress_callback_covers_every_document(docs):
    seen = []
    deduplicate([*docs, docs[0]], DedupConfig(), on_progress=seen.append)
    assert sum(seen) == 7
