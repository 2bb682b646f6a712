"""``adaptlab lm prepare``: a corpus for continual pretraining, from raw text to packed blocks.

Read top to bottom: validate config -> read and clean every source (domain sources first) ->
de-duplicate across all sources (exact, then near) -> hold out documents per role (before packing,
so no held-out text leaks into training) -> tokenise (``datasets.map``, cached) -> pack into blocks
that keep document boundaries -> mix general blocks into training at ``replay_ratio`` -> write::

    data/train, data/eval_domain, data/eval_general   packed datasets (see adaptlab.lm.prepared)
    data/manifest.json                                 what `adaptlab lm train` reads
    text/eval_domain.txt, text/eval_general.txt       held-out raw documents
    metrics.json, report.html, config.yaml, log.txt

Every document read is accounted for: kept, filtered (by reason) or a duplicate (exact or near);
documents longer than ``block_size`` are split across blocks, never cut, and counted.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, model_validator

from adaptlab.config import StrictModel
from adaptlab.errors import DataError
from adaptlab.lm import corpus, prepared
from adaptlab.lm.corpus import CleaningConfig, SourceConfig
from adaptlab.lm.dedup import DedupConfig, DedupResult, deduplicate
from adaptlab.lm.loading import load_tokenizer
from adaptlab.report.html import KeyValues, Paragraph, Section, Table
from adaptlab.runs import RunDir, atomic_write_json, datasets_progress, get_logger, open_run, progress_bar

ROLES = ("domain", "general")


class PrepareConfig(StrictModel):
    name: str = Field("lm-prepare", description="names the run directory runs/<time>-<name> when output is not given")
    tokenizer: str = Field(min_length=1, description="local tokenizer/model folder or hub name")
    sources: list[SourceConfig] = Field(
        min_length=1, description="the corpus inputs, each {name, path, role: domain|general, format, ...}")
    block_size: int = Field(1024, ge=2, description="tokens per packed row")
    split_across_blocks: bool = Field(True, description="a document continues in the next block (no padding)")
    cleaning: CleaningConfig = Field(
        CleaningConfig(), description="normalisation and document filters; every removal is counted by reason")
    dedup: DedupConfig = Field(
        DedupConfig(), description="exact and MinHash near-duplicate removal over all sources, first occurrence kept")
    eval_fraction: float = Field(0.01, gt=0, lt=1, description="documents held out per role (at least 1)")
    eval_documents: int | None = Field(None, ge=1, description="exact number held out per role; overrides fraction")
    replay_ratio: float = Field(0.0, ge=0, lt=1, description="share of general tokens in the training split")
    seed: int = Field(0, description="seed of the held-out split and of the replay subsample")
    num_proc: int = Field(1, ge=1, description="tokenising processes")
    tokenization_cache: bool = Field(
        True, description="reuse token ids cached by tokenizer, documents and code (in cache_dir)")
    cache_dir: str | None = Field(None, description="token-id cache; default <HF datasets cache>/adaptlab-lm-prepare")
    output: str | None = Field(None, description="run directory to write (must not exist); default runs/<time>-<name>")
    progress: bool = Field(True, description="progress bars on the console")

    @model_validator(mode="after")
    def _sources_consistent(self) -> PrepareConfig:
        names = [s.name for s in self.sources]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"sources: names must be unique, repeated: {', '.join(repeated)}")
        roles = {s.role for s in self.sources}
        if "domain" not in roles:
            raise ValueError("sources: at least one source needs role: domain")
        if self.replay_ratio > 0 and "general" not in roles:
            raise ValueError(f"replay_ratio={self.replay_ratio} needs a source with role: general")
        return self


@dataclass
class CleanCorpus:
    """Cleaned documents of every source in corpus order (domain sources first) and what was removed."""

    sources: list[SourceConfig]
    texts: list[str]
    owner: list[int]  # index into `sources` of every text
    stats: list[corpus.SourceStats]  # per source: read, kept, filtered by reason
    dedup: DedupResult

    def kept(self, role: str) -> list[int]:
        return [i for i in self.dedup.kept if self.sources[self.owner[i]].role == role]

    def has(self, role: str) -> bool:
        return any(s.role == role for s in self.sources)


def prepare(cfg: PrepareConfig) -> tuple[RunDir, dict]:
    """Run the whole preparation; returns the run directory and its metrics."""
    started = time.time()
    log = get_logger()
    tokenizer = load_tokenizer(cfg.tokenizer, "tokenizer")
    clean = read_clean_deduplicate(cfg)
    parts = held_out_split(clean, cfg)  # {"train_domain": [doc index, ...], "eval_domain": [...], ...}
    order = [i for docs in parts.values() for i in docs]
    with datasets_progress(cfg.progress):
        tokens, cache = prepared.tokenize_documents([clean.texts[i] for i in order], tokenizer, cfg.num_proc,
                                                    _cache_dir(cfg))
    lengths = dict(zip(order, tokens["length"]))

    with open_run(cfg.output, cfg.name, cfg) as run:
        docs = summary_counts(clean)
        log.info("read %d documents: %d filtered, %d exact and %d near duplicates removed, %d kept", docs["read"],
                 docs["filtered"], docs["exact_duplicates"], docs["near_duplicates"], docs["kept"])
        log.info("packing %d documents into blocks of %d tokens in %s", len(order), cfg.block_size, run.path)
        split_info, packing, replay = pack_and_save(cfg, run.path, parts, tokens, cache["key"])
        held_out = [name for name in split_info if name != "train"]
        for name in held_out:
            prepared.write_documents(run.path / "text" / f"{name}.txt", [clean.texts[i] for i in parts[name]])
            split_info[name]["documents"] = len(parts[name])

        manifest = {"format_version": prepared.FORMAT_VERSION, "created_by": "adaptlab lm prepare",
                    "tokenizer": _tokenizer_reference(cfg.tokenizer),
                    "tokenizer_fingerprint": prepared.tokenizer_fingerprint(tokenizer), "block_size": cfg.block_size,
                    "split_across_blocks": cfg.split_across_blocks, "splits": split_info,
                    "replay_ratio": cfg.replay_ratio, "seed": cfg.seed, "sources": [s.name for s in clean.sources],
                    "text": {name: f"text/{name}.txt" for name in held_out}}
        atomic_write_json(run.path / "data" / prepared.MANIFEST, manifest)
        metrics = {"documents": docs, **accounting(clean, lengths, parts, cfg), "tokenizer": manifest["tokenizer"],
                   "block_size": cfg.block_size, "splits": split_info, "packing": packing,
                   "long_documents": _long_documents(packing), "replay": replay, "cache": cache,
                   "seconds": round(time.time() - started, 2)}
        log.info("train %d blocks (%d tokens, %.1f%% general), eval_domain %d blocks", split_info["train"]["rows"],
                 split_info["train"]["tokens"], 100 * replay["ratio_achieved"], split_info["eval_domain"]["rows"])
        run.finish(metrics, f"Corpus preparation: {cfg.name}", report_sections(metrics, clean))
    return run, metrics


def pack_and_save(cfg: PrepareConfig, folder: Path, parts: dict[str, list[int]], tokens,
                  cache_key: str) -> tuple[dict, dict, dict]:
    """Each part packed into blocks, general blocks replayed into train at ``replay_ratio``, every split saved
    to ``folder/data/<split>``. Returns the rows and tokens per split, the packing counts per part and the replay."""
    staging = folder / ".staging"
    packed, packing = {}, {}
    offset = 0
    with datasets_progress(cfg.progress):
        for part, members in parts.items():
            if members:
                span = tokens.select(range(offset, offset + len(members)))
                packed[part], stats = prepared.pack_split(span, cfg.block_size, cfg.split_across_blocks, staging,
                                                          f"{cache_key}-{part}")
                packing[part] = stats.as_dict()
            offset += len(members)

        domain_tokens = packing["train_domain"]["tokens"]
        general_lengths = prepared.row_lengths(packed["train_general"]) if "train_general" in packed else []
        replay_rows, replay = corpus.select_replay_blocks(general_lengths, domain_tokens, cfg.replay_ratio, cfg.seed)
        train = packed["train_domain"]
        if replay_rows:
            import datasets

            train = datasets.concatenate_datasets([train, packed["train_general"].select(replay_rows)])
        splits = {"train": train.shuffle(seed=cfg.seed),
                  **{name: packed[name] for name in ("eval_domain", "eval_general") if name in packed}}
        # packing keeps every token and pads no row, so the packing counts are the splits' token counts
        split_tokens = {"train": domain_tokens + replay["general_tokens_used"],
                        **{name: packing[name]["tokens"] for name in splits if name != "train"}}
        split_info = {}
        for name, dataset in splits.items():
            dataset.save_to_disk(str(folder / "data" / name))
            split_info[name] = {"rows": len(dataset), "tokens": split_tokens[name]}
    shutil.rmtree(staging, ignore_errors=True)
    split_info["train"].update(domain_documents=len(parts["train_domain"]), domain_tokens=domain_tokens,
                               general_tokens=replay["general_tokens_used"])
    return split_info, packing, replay


def read_clean_deduplicate(cfg: PrepareConfig) -> CleanCorpus:
    """Every source read and cleaned (domain sources first: they win duplicates), then de-duplicated."""
    sources = sorted(cfg.sources, key=lambda s: ROLES.index(s.role))
    texts: list[str] = []
    owner: list[int] = []
    source_stats: list[corpus.SourceStats] = []
    with progress_bar(cfg.progress) as progress:
        for k, source in enumerate(sources):
            task = progress.add_task(f"reading {source.name}", total=None)
            kept, stats = corpus.read_and_clean(source, cfg.cleaning, lambda n, t=task: progress.advance(t, n))
            texts += kept
            owner += [k] * len(kept)
            source_stats.append(stats)
        task = progress.add_task("de-duplicating", total=len(texts))
        dedup = deduplicate(texts, cfg.dedup, lambda n: progress.advance(task, n))
    return CleanCorpus(sources, texts, owner, source_stats, dedup)


def held_out_split(clean: CleanCorpus, cfg: PrepareConfig) -> dict[str, list[int]]:
    """Document indices of train_domain, eval_domain (and train_general, eval_general) by a seeded draw per role.

    Training documents are shuffled (seeded) before packing; held-out ones keep corpus order.
    General training documents are only kept when they are replayed (``replay_ratio > 0``).
    """
    parts: dict[str, list[int]] = {}
    for role in ROLES:
        if not clean.has(role):
            continue
        kept = clean.kept(role)
        _check_enough(role, kept, clean, cfg)
        count = corpus.held_out_count(len(kept), cfg.eval_fraction, cfg.eval_documents)
        train_pos, eval_pos = corpus.split_held_out(len(kept), count, f"{cfg.seed}-{role}")
        train = [kept[p] for p in train_pos]
        random.Random(cfg.seed).shuffle(train)
        if role == "general" and cfg.replay_ratio == 0:
            get_logger().info("replay_ratio is 0: %d general training documents are not used", len(train))
            train = []
        parts[f"train_{role}"], parts[f"eval_{role}"] = train, [kept[p] for p in eval_pos]
    return parts


def _tokenizer_reference(name: str) -> str:
    """A local tokenizer folder as an absolute path (so training finds it from anywhere), else the hub name."""
    path = Path(name)
    return str(path.resolve()) if path.exists() else name


def _cache_dir(cfg: PrepareConfig) -> Path | None:
    if not cfg.tokenization_cache:
        return None
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir)
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "adaptlab-lm-prepare"


def _check_enough(role: str, kept: list[int], clean: CleanCorpus, cfg: PrepareConfig) -> None:
    """DataError saying what removed the documents when a role has too few left to split."""
    needed = corpus.held_out_count(max(len(kept), 1), cfg.eval_fraction, cfg.eval_documents)
    needs_train = role == "domain" or cfg.replay_ratio > 0
    if len(kept) >= needed + needs_train:
        return
    members = [k for k, s in enumerate(clean.sources) if s.role == role]
    read = sum(clean.stats[k].documents_read for k in members)
    removed = sum((clean.stats[k].filtered for k in members), Counter())
    removed += Counter(kind for i, kind in enumerate(clean.dedup.kind) if kind and clean.owner[i] in members)
    removed_text = ", ".join(f"{reason} {n}" for reason, n in removed.most_common()) or "nothing"
    names = ", ".join(clean.sources[k].name for k in members)
    raise DataError(
        f"the {role} sources ({names}) have {len(kept)} document(s) left of {read} read (removed: {removed_text}); "
        f"{needed} are held out for evaluation{' and at least one must remain for training' if needs_train else ''}. "
        "Add text, relax the cleaning filters named above (cleaning.*), or lower eval_documents / eval_fraction.")


def summary_counts(clean: CleanCorpus) -> dict[str, int]:
    """``read = filtered + exact_duplicates + near_duplicates + kept``."""
    return {"read": sum(s.documents_read for s in clean.stats),
            "filtered": sum(s.documents_read - s.kept for s in clean.stats),
            "exact_duplicates": clean.dedup.count("exact"), "near_duplicates": clean.dedup.count("near"),
            "kept": len(clean.dedup.kept)}


def accounting(clean: CleanCorpus, lengths: dict[int, int], parts: dict[str, list[int]], cfg: PrepareConfig) -> dict:
    """Per-source counts (``documents_read = kept + Σ filtered``, ``kept = documents + duplicates``) and totals."""
    train_of = {i for name, docs in parts.items() if name.startswith("train") for i in docs}
    eval_of = {i for name, docs in parts.items() if name.startswith("eval") for i in docs}
    per_source: dict[str, dict] = {}
    for k, source in enumerate(clean.sources):
        docs = [i for i, o in enumerate(clean.owner) if o == k]
        kept = [i for i in docs if clean.dedup.kind[i] is None]
        per_source[source.name] = {
            "role": source.role, "path": source.path, "format": corpus.resolve_format(source),
            **clean.stats[k].as_dict(),
            "exact_duplicates": sum(clean.dedup.kind[i] == "exact" for i in docs),
            "near_duplicates": sum(clean.dedup.kind[i] == "near" for i in docs),
            "documents": len(kept),
            "train_documents": sum(i in train_of for i in kept), "eval_documents": sum(i in eval_of for i in kept),
            "train_tokens": sum(lengths[i] for i in kept if i in train_of),
            "eval_tokens": sum(lengths[i] for i in kept if i in eval_of),
            "longer_than_block": sum(lengths.get(i, 0) > cfg.block_size for i in kept),
        }
    filtered = sum((s.filtered for s in clean.stats), Counter())
    return {
        "filtered_by_reason": dict(filtered.most_common()),
        "dedup": {**cfg.dedup.model_dump(), "exact_removed": clean.dedup.count("exact"),
                  "near_removed": clean.dedup.count("near")},
        "sources": per_source,
    }


def _long_documents(packing: dict[str, dict]) -> dict:
    return {"longer_than_block": sum(p["longer_than_block"] for p in packing.values()),
            "split_documents": sum(p["split_documents"] for p in packing.values()),
            "truncated_documents": 0}


def dedup_examples(clean: CleanCorpus, per_kind: int = 3) -> list[list[str]]:
    rows = []
    for kind in ("exact", "near"):
        found = [(i, j) for i, j in enumerate(clean.dedup.duplicate_of) if clean.dedup.kind[i] == kind][:per_kind]
        rows += [[kind, clean.texts[j][:200], clean.texts[i][:200]] for i, j in found]
    return rows


def report_sections(metrics: dict, clean: CleanCorpus) -> list[Section]:
    docs, replay, long_docs = metrics["documents"], metrics["replay"], metrics["long_documents"]
    source_columns = ["role", "documents_read", "kept", "exact_duplicates", "near_duplicates", "documents",
                      "train_documents", "eval_documents", "train_tokens", "eval_tokens", "longer_than_block"]
    reasons = sorted({r for s in metrics["sources"].values() for r in s["filtered"]})
    examples = [[reason, source.name, text] for source, s in zip(clean.sources, clean.stats)
                for reason, texts in sorted(s.examples.items()) for text in texts]
    return [
        Section("Summary", [KeyValues({
            "tokenizer": metrics["tokenizer"], "block size": metrics["block_size"],
            "documents read": docs["read"], "filtered": docs["filtered"],
            "exact duplicates removed": docs["exact_duplicates"], "near duplicates removed": docs["near_duplicates"],
            "documents kept": docs["kept"], "documents longer than a block (split, not cut)":
                long_docs["longer_than_block"], "documents split across blocks": long_docs["split_documents"],
            "general (replay) share of training tokens": round(replay["ratio_achieved"], 4),
            "seconds": metrics["seconds"]})]),
        Section("Sources", [
            Paragraph("documents_read = kept (after filters) + filtered; kept = documents (after de-duplication) "
                      "+ exact + near duplicates. Tokens include the BOS/EOS (or separator) token of each document."),
            Table(["source", *source_columns], [[name, *(row[c] for c in source_columns)]
                                                for name, row in metrics["sources"].items()])]),
        Section("Filtered documents", [
            Table(["source", *reasons], [[name, *(row["filtered"].get(r, 0) for r in reasons)]
                                         for name, row in metrics["sources"].items()], caption="by reason"),
            Table(["source", "control characters removed", "boilerplate lines removed", "documents changed by "
                   "Unicode normalisation"], [[n, r["control_chars_removed"], r["boilerplate_lines_removed"],
                                               r["unicode_changed_documents"]] for n, r in metrics["sources"].items()],
                  caption="cleaning inside kept and removed documents"),
            Table(["reason", "source", "removed document (start)"], examples, caption="examples")]),
        Section("Duplicates", [
            Paragraph("The first occurrence is kept (domain sources come first). Near duplicates: estimated "
                      f"Jaccard similarity of {metrics['dedup']['shingle_size']}-{metrics['dedup']['shingle_unit']} "
                      f"shingles >= {metrics['dedup']['threshold']} (MinHash LSH, {metrics['dedup']['num_perm']} "
                      "permutations)."),
            Table(["kind", "kept document (start)", "removed duplicate (start)"], dedup_examples(clean))]),
        Section("Packing", [
            Paragraph("Documents longer than the room left in a block continue in the next block; no document is "
                      "truncated. Position ids restart at every document piece."),
            Table(["part", "documents", "tokens", "blocks", "split_documents", "longer_than_block", "padding_tokens"],
                  [[part, *(p[c] for c in ("documents", "tokens", "blocks", "split_documents", "longer_than_block",
                                           "padding_tokens"))] for part, p in metrics["packing"].items()])]),
        Section("Replay", [
            Paragraph("General blocks mixed into training so that general / (domain + general) training tokens is "
                      "replay_ratio: a seeded subsample of blocks, or every block repeated and then a subsample "
                      "(mode repeat)."),
            KeyValues(replay)]),
        Section("Splits", [Table(["split", "rows", "tokens", "documents"],
                                 [[n, s["rows"], s["tokens"], s.get("documents", s.get("domain_documents", ""))]
                                  for n, s in metrics["splits"].items()])]),
        Section("Tokenisation cache", [KeyValues(metrics["cache"])]),
    ]
