"""The prepared-corpus directory: tokenising, packing and saving it, and loading it for training.

Why a directory of its own: tokenising and packing once, in ``adaptlab lm prepare``, means that
``adaptlab lm train`` (one process or many under accelerate) only memory-maps finished Arrow files;
no rank tokenises while the others wait on a collective and time out.

Layout (inside the run directory of ``adaptlab lm prepare``)::

    data/train  data/eval_domain  [data/eval_general]   datasets.Dataset.save_to_disk; columns input_ids,
                                                        position_ids, labels (int32 lists; adaptlab.lm.packing)
    data/manifest.json                                  tokenizer, block_size, rows and tokens per split, ...
    text/eval_domain.txt  [text/eval_general.txt]       held-out raw documents, blank-line separated

Tokenisation cache. ``tokenize_documents`` runs ``datasets.Dataset.map(batched=True, num_proc=...)``
with :func:`adaptlab.lm.packing.encode_document` and writes its result to
``<cache_dir>/tokens-<key>.arrow`` (one file per process). The key is a SHA-256 over the tokenizer
(its serialised ``tokenizer.json`` for fast tokenizers, else its vocabulary and special tokens), the
source code of ``encode_document`` and every document's text in order, so a rerun over the same
documents with the same tokenizer loads the token ids instead of tokenising again, and any change
misses the cache. Only token ids are cached; cleaning, de-duplication and packing always run.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab.errors import DataError
from adaptlab.lm.packing import PackStats, encode_document, pack_documents

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PACK_CHUNK_DOCUMENTS = 10_000  # documents packed per call; bounds memory, adds at most one short row per chunk


@dataclass
class PreparedCorpus:
    """A loaded prepared corpus; ``eval_general`` (and its text) is None when there was no general source."""

    path: Path
    manifest: dict[str, Any]
    train: Any  # datasets.Dataset
    eval_domain: Any
    eval_general: Any | None
    eval_domain_text: Path
    eval_general_text: Path | None

    @property
    def block_size(self) -> int:
        return int(self.manifest["block_size"])

    @property
    def tokenizer(self) -> str:
        return str(self.manifest["tokenizer"])


def corpus_root(path: str | Path) -> Path:
    """The run directory of ``adaptlab lm prepare`` given it or its ``data/`` folder."""
    root = Path(path)
    if not (root / "data" / MANIFEST).is_file() and (root / MANIFEST).is_file():
        return root.parent
    return root


def load_prepared(path: str | Path) -> PreparedCorpus:
    """Open the run directory of ``adaptlab lm prepare`` (or its ``data/`` folder); DataError names what is missing."""
    import datasets

    if not Path(path).is_dir():
        raise DataError("prepared corpus not found; pass the run directory of `adaptlab lm prepare`", path)
    root = corpus_root(path)
    manifest_path = root / "data" / MANIFEST
    if not manifest_path.is_file():
        raise DataError(f"no data/{MANIFEST}: not a corpus written by `adaptlab lm prepare` (or it did not "
                        "finish); run it again", root)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable manifest ({exc})", manifest_path) from None
    missing = [key for key in ("tokenizer", "block_size", "splits") if key not in manifest]
    if missing:
        raise DataError(f"manifest lacks {', '.join(missing)}", manifest_path)

    def split(name: str) -> Any:
        folder = root / "data" / name
        if not folder.is_dir():
            raise DataError(f"split {name!r} is missing (expected the folder data/{name})", root)
        try:
            return datasets.load_from_disk(str(folder))
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise DataError(f"split {name!r} cannot be loaded ({exc}); prepare the corpus again", folder) from None

    def text(name: str) -> Path:
        file = root / "text" / f"{name}.txt"
        if not file.is_file():
            raise DataError(f"held-out text text/{name}.txt is missing", root)
        return file

    has_general = "eval_general" in manifest["splits"]
    return PreparedCorpus(
        path=root, manifest=manifest, train=split("train"), eval_domain=split("eval_domain"),
        eval_general=split("eval_general") if has_general else None,
        eval_domain_text=text("eval_domain"), eval_general_text=text("eval_general") if has_general else None)


# ------------------------------------------------------------------------------------------- tokenising


IGNORED_BACKEND_STATE = ("truncation", "padding")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A digest that changes whenever the tokenizer would produce different ids.

    For a fast tokenizer it covers the backend's model (vocabulary, merges), normalizer, pre-tokenizer,
    post-processor and added tokens, but not its truncation and padding settings: transformers rewrites
    those on every call, so a tokenizer.json that carries them gave one fingerprint before its first encode
    and another after it, and `lm train` refused a corpus that `lm prepare` had just made with it.
    """
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in IGNORED_BACKEND_STATE}
        digest.update(json.dumps(state, sort_keys=True).encode("utf-8"))
    else:
        digest.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode("utf-8"))
    specials = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "sep": tokenizer.sep_token_id,
                "map": tokenizer.special_tokens_map}
    digest.update(json.dumps(specials, sort_keys=True, default=str).encode("utf-8"))
    return digest.hexdigest()


def tokenization_key(tokenizer: Any, texts: list[str]) -> str:
    digest = hashlib.sha256(tokenizer_fingerprint(tokenizer).encode())
    digest.update(inspect.getsource(encode_document).encode("utf-8"))
    for text in texts:
        digest.update(hashlib.sha256(text.encode("utf-8")).digest())
    return digest.hexdigest()[:24]


def _encode_batch(batch: dict[str, list], tokenizer: Any) -> dict[str, list]:
    ids = [encode_document(tokenizer, text) for text in batch["text"]]
    return {"input_ids": ids, "length": [len(x) for x in ids]}


def tokenize_documents(texts: list[str], tokenizer: Any, num_proc: int, cache_dir: Path | None,
                       desc: str = "tokenising") -> tuple[Any, dict[str, Any]]:
    """Dataset with ``input_ids`` and ``length`` per document (in order) and a note on the cache."""
    import datasets

    documents = datasets.Dataset.from_dict({"text": texts})
    key = tokenization_key(tokenizer, texts)
    options: dict[str, Any] = {"new_fingerprint": key}
    cache: dict[str, Any] = {"enabled": cache_dir is not None, "key": key}
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache_file = cache_dir / f"tokens-{key}.arrow"
        cache["file"] = str(cache_file)
        cache["hit"] = any(cache_dir.glob(f"tokens-{key}*.arrow"))
        options.update(cache_file_name=str(cache_file), load_from_cache_file=True)
    tokens = documents.map(_encode_batch, batched=True, num_proc=num_proc if num_proc > 1 else None,
                           fn_kwargs={"tokenizer": tokenizer}, remove_columns=["text"], desc=desc, **options)
    return tokens, cache


# ---------------------------------------------------------------------------------------------- packing


def packed_features() -> Any:
    import datasets

    ids = datasets.List(datasets.Value("int32"))
    return datasets.Features({"input_ids": ids, "position_ids": ids, "labels": ids})


def _packed_rows(tokens: Any, block_size: int, split_across_blocks: bool, stats: PackStats) -> Iterator[dict]:
    for batch in tokens.iter(batch_size=PACK_CHUNK_DOCUMENTS):
        rows, chunk_stats = pack_documents(batch["input_ids"], block_size, split_across_blocks)
        stats.add(chunk_stats)
        yield from rows


def pack_split(tokens: Any, block_size: int, split_across_blocks: bool, staging_dir: Path,
               fingerprint: str) -> tuple[Any, PackStats]:
    """Pack a tokenised split (``input_ids`` per document) into an Arrow-backed dataset of rows.

    Rows are streamed to ``staging_dir`` chunk by chunk (``PACK_CHUNK_DOCUMENTS`` documents per
    :func:`pack_documents` call), so memory does not grow with the corpus.
    """
    import datasets

    stats = PackStats()
    packed = datasets.Dataset.from_generator(
        _packed_rows, features=packed_features(), cache_dir=str(staging_dir), fingerprint=fingerprint,
        gen_kwargs={"tokens": tokens, "block_size": block_size, "split_across_blocks": split_across_blocks,
                    "stats": stats})
    return packed, stats


def row_lengths(dataset: Any) -> list[int]:
    """Tokens in each packed row (read as Arrow list lengths, without building Python lists)."""
    import pyarrow.compute as pc

    return [length for batch in dataset.with_format("arrow").iter(batch_size=10_000)
            for length in pc.list_value_length(batch["input_ids"]).to_pylist()]


def write_documents(path: Path, documents: list[str]) -> None:
    """Held-out documents, blank-line separated (cleaned documents contain no blank line)."""
    from adaptlab.runs import atomic_write_text

    atomic_write_text(path, "\n\n".join(documents) + "\n")
