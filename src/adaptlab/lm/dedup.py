"""Exact and near-duplicate removal over a whole corpus; the first occurrence is kept.

Why: duplicated documents are trained on several times (memorised rather than learnt from) and,
worse, a copy on each side of the train / held-out split makes held-out perplexity lie. So
de-duplication runs over all sources together, before the held-out split. Documents are visited in
corpus order (domain sources first, then general ones, each in config and file order), and a
document is removed when an earlier kept one is its duplicate: the result is deterministic, and a
general document never removes a domain one.

Exact. The key is ``blake2b(casefold(text) with whitespace runs collapsed to one space)``, so copies
that differ only in case or spacing are caught.

Near. Documents become sets of shingles: ``shingle_size`` consecutive whitespace-separated words
(``shingle_unit: word``, for space-separated languages) or characters (``shingle_unit: char``, for
Japanese or Chinese), after casefolding; a document shorter than one shingle is one shingle. The
Jaccard similarity ``J(A, B) = |A ∩ B| / |A ∪ B|`` is estimated with MinHash (``num_perm``
permutations, fixed seed). Candidates come from an LSH index (datasketch's ``MinHashLSH``) tuned for
recall: its bands and rows are chosen for ``min(threshold, 0.9)`` with false negatives weighted 0.8
and false positives 0.2 (above 0.9 datasketch would use a single band, which misses many true pairs).
A candidate is then only taken as a duplicate when its estimated Jaccard similarity is
``>= threshold``, which removes the false positives; the estimate's standard error is about
``sqrt(J(1 − J) / num_perm)`` (0.035 at J = 0.8, 128 permutations).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from adaptlab.config import StrictModel

MINHASH_SEED = 1
LSH_MAX_THRESHOLD = 0.9
LSH_WEIGHTS = (0.2, 0.8)  # (false positive, false negative): candidates are verified, so favour recall
_MINHASH_BATCH = 1000


class DedupConfig(StrictModel):
    exact: bool = Field(True, description="remove exact duplicates (hash of the casefolded text)")
    near: bool = Field(
        True, description="remove near duplicates (MinHash LSH over shingles, verified by Jaccard similarity)")
    threshold: float = Field(0.8, gt=0, le=1, description="estimated Jaccard similarity that counts as a duplicate")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (precision vs. speed and memory)")
    shingle_unit: Literal["word", "char"] = Field(
        "word", description="word shingles, or char for languages without spaces (Japanese, Chinese)")
    shingle_size: int = Field(5, ge=1, description="words (or characters) per shingle")


@dataclass
class DedupResult:
    """Per document: ``kind[i]`` is None (kept), ``"exact"`` or ``"near"``; ``duplicate_of[i]`` the kept original."""

    kind: list[str | None] = field(default_factory=list)
    duplicate_of: list[int | None] = field(default_factory=list)

    @property
    def kept(self) -> list[int]:
        return [i for i, k in enumerate(self.kind) if k is None]

    def count(self, kind: str) -> int:
        return sum(k == kind for k in self.kind)


def exact_key(text: str) -> bytes:
    return hashlib.blake2b(" ".join(text.casefold().split()).encode("utf-8"), digest_size=16).digest()


def shingles(text: str, unit: str, size: int) -> set[bytes]:
    """The shingle set of a document (see the module docstring)."""
    if unit == "word":
        words = text.casefold().split()
        grams = [" ".join(words[i:i + size]) for i in range(max(1, len(words) - size + 1))]
    else:
        chars = "".join(text.casefold().split())
        grams = [chars[i:i + size] for i in range(max(1, len(chars) - size + 1))]
    return {g.encode("utf-8") for g in grams if g}


def deduplicate(texts: Sequence[str], cfg: DedupConfig, on_progress=None) -> DedupResult:
    """Mark exact duplicates, then near duplicates among the rest; ``on_progress(n)`` after each n documents."""
    result = DedupResult(kind=[None] * len(texts), duplicate_of=[None] * len(texts))
    if cfg.exact:
        first_with_key: dict[bytes, int] = {}
        for i, text in enumerate(texts):
            original = first_with_key.setdefault(exact_key(text), i)
            if original != i:
                result.kind[i], result.duplicate_of[i] = "exact", original
    if cfg.near:
        _mark_near_duplicates(texts, result, cfg, on_progress)
    elif on_progress is not None:
        on_progress(len(texts))
    return result


def _mark_near_duplicates(texts: Sequence[str], result: DedupResult, cfg: DedupConfig, on_progress) -> None:
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=min(cfg.threshold, LSH_MAX_THRESHOLD), num_perm=cfg.num_perm, weights=LSH_WEIGHTS)
    sketches: dict[int, object] = {}
    candidates = [i for i, kind in enumerate(result.kind) if kind is None]
    for start in range(0, len(candidates), _MINHASH_BATCH):
        batch = candidates[start:start + _MINHASH_BATCH]
        for i, minhash in zip(batch, _minhashes([texts[i] for i in batch], cfg)):
            matches = sorted(int(key) for key in lsh.query(minhash))
            original = next((j for j in matches if sketches[j].jaccard(minhash) >= cfg.threshold), None)
            if original is not None:
                result.kind[i], result.duplicate_of[i] = "near", original
                continue
            lsh.insert(str(i), minhash)
            sketches[i] = minhash
        if on_progress is not None:
            on_progress(len(batch))
    if on_progress is not None:
        on_progress(len(texts) - len(candidates))


def _minhashes(texts: list[str], cfg: DedupConfig) -> Iterator:
    from datasketch import LeanMinHash, MinHash

    sets = (sorted(shingles(t, cfg.shingle_unit, cfg.shingle_size)) for t in texts)
    for minhash in MinHash.bulk(sets, num_perm=cfg.num_perm, seed=MINHASH_SEED):
        yield LeanMinHash(minhash)
