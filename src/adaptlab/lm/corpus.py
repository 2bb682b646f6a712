"""Reading and cleaning a pretraining corpus: sources -> normalised documents, every removal counted.

Why: continual pretraining learns whatever the corpus repeats. Web and report dumps repeat cookie
banners, navigation lines and copies of the same page; a few filters with documented defaults remove
most of it, and counting every removal by reason lets a user see (in ``report.html``) whether a
filter is eating real text before spending GPU hours on it.

Sources. A source is a file or folder with a ``name`` and a ``role``: ``domain`` (the text to
adapt to) or ``general`` (replay text, see Ibrahim et al. 2024). ``format: auto`` picks

* ``hf``: a folder written by ``datasets.save_to_disk`` (``load_from_disk``; a ``DatasetDict`` needs ``split``);
* ``jsonl``: a ``.jsonl`` / ``.json`` file, one object per line with the text in ``text_field``;
* ``text``: a UTF-8 ``.txt`` file or a folder of them (``*.txt``, recursively, sorted), one document per
  blank-line separated paragraph (``documents: paragraph``) or per file (``documents: file``).

Cleaning, in this order (each step can be turned off):

1. line breaks ``\\r\\n``, ``\\r``, U+2028, U+2029 become ``\\n``;
2. Unicode normalisation (``unicode_form``, NFKC by default: full-width letters and digits become ASCII,
   ligatures are split, so equal text gets equal tokens);
3. control characters are removed: category Cc except tab and newline, lone surrogates (Cs, from bad
   JSON escapes) and the invisible BOM / zero-width space / soft hyphen / word joiner;
4. whitespace: runs of spaces and tabs inside a line become one space and lines are stripped
   (``normalize_whitespace``). Blank lines are always removed, because a blank line separates
   documents in the held-out text files (``adaptlab.metrics.lm.read_text_file``);
5. boilerplate lines: a line of at most ``boilerplate_line_max_chars`` characters that matches one of
   ``boilerplate_patterns`` (case-insensitive regexes; cookie banners, newsletter prompts, ...) is removed.

Filters, checked in this order on the cleaned document; the first that fails is its reason:

* ``empty``: nothing is left;
* ``boilerplate``: ``removed boilerplate lines / lines > max_boilerplate_line_fraction`` (default 0.5);
* ``repeated_lines``: ``lines equal to an earlier line / lines > max_repeated_line_fraction``
  (default 0.3, the Gopher rule of Rae et al. 2021);
* ``too_few_chars`` / ``too_many_chars`` / ``too_few_words`` / ``too_many_words``: length limits, words being
  whitespace-separated (so leave the word limits off for Japanese or Chinese text);
* ``too_few_alphabetic``: ``alphabetic characters / non-space characters < min_alpha_fraction`` (default 0.5;
  letters of any script count, kana and kanji too), which catches tables of numbers and markup debris.

Long documents are never dropped by default (``max_chars`` / ``max_words`` are off): packing splits them
across blocks and counts them (``adaptlab.lm.packing``).
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from adaptlab.config import StrictModel
from adaptlab.data.records import iter_json_lines, read_text_lines
from adaptlab.errors import DataError

DEFAULT_BOILERPLATE_PATTERNS = [
    r"\b(we|this site|this website)\s+uses?\s+cookies\b",
    r"\b(accept|allow|manage)\s+(all\s+)?cookies\b",
    r"\bcookie\s+(policy|settings|preferences|consent)\b",
    r"\bsubscribe\s+(to|for)\s+(our|the)\s+(newsletter|channel|mailing list)\b",
    r"\bsign\s+up\s+for\s+(our|the)\s+newsletter\b",
    r"\ball rights reserved\b",
    r"\b(enable|requires?)\s+javascript\b",
    r"\bclick here to\b",
    r"\blorem ipsum\b",
]
_LINE_BREAKS = re.compile(r"\r\n|\r|\u2028|\u2029")
_INLINE_SPACE = re.compile(r"[^\S\n]+")
# Cc except tab and newline; Cs (lone surrogates); BOM, zero-width space, soft hyphen, word joiner.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufeff\u200b\u00ad\u2060]")
_LETTER = re.compile(r"[^\W\d_]")  # str.isalpha (any script, kana and kanji too) plus numerals like ½ ²
_PROGRESS_EVERY = 1000


class SourceConfig(StrictModel):
    """One input of the corpus."""

    name: str = Field(min_length=1, description="shown in the report; must be unique")
    path: str = Field(min_length=1, description="file or folder")
    role: Literal["domain", "general"] = Field(
        "domain", description="domain: the text to adapt to; general: replay text mixed in by replay_ratio")
    format: Literal["auto", "text", "jsonl", "hf"] = Field(
        "auto", description="auto: hf for a save_to_disk folder, jsonl for .jsonl/.json, else text (.txt file or "
        "folder)")
    text_field: str = Field("text", description="JSONL key / dataset column holding the text")
    documents: Literal["paragraph", "file"] = Field(
        "paragraph", description="text sources: one document per blank-line paragraph, or per file")
    split: str | None = Field(None, description="hf sources saved as a DatasetDict: which split (default train)")


class CleaningConfig(StrictModel):
    """Normalisation and filters; see the module docstring for order and defaults."""

    unicode_form: Literal["NFKC", "NFC", "NFKD", "NFD"] | None = Field(
        "NFKC", description="Unicode normalisation form; null keeps the text as it is")
    remove_control_chars: bool = Field(
        True, description="remove control characters (but tab and newline), lone surrogates and invisible marks")
    normalize_whitespace: bool = Field(True, description="collapse spaces and tabs inside a line and strip lines")
    min_chars: int = Field(20, ge=0, description="drop documents shorter than this (too_few_chars)")
    max_chars: int | None = Field(
        None, ge=1, description="drop documents longer than this (too_many_chars); null: none, packing splits them")
    min_words: int = Field(
        0, ge=0, description="drop documents with fewer whitespace-separated words (too_few_words); 0: off")
    max_words: int | None = Field(None, ge=1, description="drop documents with more words (too_many_words); null: off")
    min_alpha_fraction: float = Field(
        0.5, ge=0, le=1, description="drop documents whose letters are below this share of non-space characters "
        "(too_few_alphabetic)")
    max_repeated_line_fraction: float = Field(
        0.3, ge=0, le=1, description="drop documents whose repeated lines exceed this share of lines "
        "(repeated_lines, Gopher's rule)")
    boilerplate_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BOILERPLATE_PATTERNS), description="case-insensitive regular "
        "expressions; a short line matching one is removed (cookie banners, newsletter prompts, ...)")
    boilerplate_line_max_chars: int = Field(200, ge=1, description="longer lines are prose, never boilerplate")
    max_boilerplate_line_fraction: float = Field(
        0.5, ge=0, le=1, description="drop documents whose removed boilerplate lines exceed this share of lines "
        "(boilerplate)")

    @field_validator("boilerplate_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        return patterns

    @model_validator(mode="after")
    def _limits_ordered(self) -> CleaningConfig:
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ValueError(f"max_chars ({self.max_chars}) is below min_chars ({self.min_chars})")
        if self.max_words is not None and self.max_words < self.min_words:
            raise ValueError(f"max_words ({self.max_words}) is below min_words ({self.min_words})")
        return self

    @cached_property
    def boilerplate_regex(self) -> re.Pattern[str] | None:
        if not self.boilerplate_patterns:
            return None
        return re.compile("|".join(f"(?:{p})" for p in self.boilerplate_patterns), re.IGNORECASE)


# ----------------------------------------------------------------------------------------------- reading


def resolve_format(source: SourceConfig) -> str:
    """The concrete format of a source (``auto`` decided from the path); missing paths are DataError."""
    path = Path(source.path)
    if not path.exists():
        raise DataError(f"source {source.name!r}: file or folder not found; check sources[].path", path)
    if source.format != "auto":
        return source.format
    if path.is_dir():
        markers = ("dataset_info.json", "state.json", "dataset_dict.json")
        return "hf" if any((path / m).is_file() for m in markers) else "text"
    return "jsonl" if path.suffix.lower() in (".jsonl", ".json") else "text"


def read_source(source: SourceConfig) -> Iterator[str]:
    """The raw documents of one source, in file order; malformed input is DataError naming file:line."""
    kind = resolve_format(source)
    path = Path(source.path)
    if kind == "jsonl":
        yield from _read_jsonl(path, source.text_field)
    elif kind == "hf":
        yield from _read_hf(path, source)
    else:
        files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
        if not files:
            raise DataError(f"source {source.name!r}: folder has no *.txt files", path)
        for file in files:
            yield from _read_text(file, source.documents)


def _read_text(path: Path, documents: str) -> Iterator[str]:
    lines = read_text_lines(path)
    if documents == "file":
        yield "\n".join(lines)
        return
    paragraph: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            paragraph.append(line)
        elif paragraph:
            yield "\n".join(paragraph)
            paragraph = []


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    if path.is_dir():
        raise DataError("is a folder; a jsonl source must be a file", path)
    for lineno, obj in iter_json_lines(path):
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object with a {text_field!r} field, got {type(obj).__name__}",
                            path, lineno)
        if text_field not in obj:
            keys = ", ".join(sorted(obj)) or "none"
            raise DataError(f"no {text_field!r} field (keys: {keys}); set text_field of this source", path, lineno)
        text = obj[text_field]
        if not isinstance(text, str):
            raise DataError(f"field {text_field!r} must be a string, got {type(text).__name__}", path, lineno)
        yield text


def _read_hf(path: Path, source: SourceConfig) -> Iterator[str]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(f"cannot load a saved Hugging Face dataset ({exc})", path) from None
    if isinstance(loaded, datasets.DatasetDict):
        split = source.split or "train"
        if split not in loaded:
            raise DataError(f"has no split {split!r} (splits: {', '.join(loaded)}); set sources[].split", path)
        loaded = loaded[split]
    if source.text_field not in loaded.column_names:
        raise DataError(f"has no column {source.text_field!r} (columns: {', '.join(loaded.column_names)}); "
                        "set text_field of this source", path)
    for index, text in enumerate(loaded[source.text_field]):
        if not isinstance(text, str):
            raise DataError(f"row {index}: column {source.text_field!r} is not a string", path)
        yield text


# ---------------------------------------------------------------------------------------------- cleaning


@dataclass
class CleanedDocument:
    text: str
    reason: str | None  # None: kept; else the filter that removed it
    control_chars_removed: int = 0
    boilerplate_lines_removed: int = 0
    unicode_changed: bool = False


def clean_document(raw: str, cfg: CleaningConfig) -> CleanedDocument:
    """Normalise one document and decide whether it is kept (see the module docstring)."""
    text = _LINE_BREAKS.sub("\n", raw)
    unicode_changed = False
    if cfg.unicode_form:
        normalised = unicodedata.normalize(cfg.unicode_form, text)
        unicode_changed, text = normalised != text, normalised
    control_removed = 0
    if cfg.remove_control_chars:
        text, control_removed = _CONTROL.subn("", text)
    lines = text.split("\n")
    if cfg.normalize_whitespace:
        lines = [_INLINE_SPACE.sub(" ", line).strip() for line in lines]
    lines = [line for line in lines if line.strip()]
    regex = cfg.boilerplate_regex
    kept_lines = [line for line in lines
                  if regex is None or len(line) > cfg.boilerplate_line_max_chars or not regex.search(line)]
    boilerplate_removed = len(lines) - len(kept_lines)
    cleaned = "\n".join(kept_lines)
    reason = _filter_reason(cleaned, kept_lines, len(lines), boilerplate_removed, cfg)
    return CleanedDocument(cleaned, reason, control_removed, boilerplate_removed, unicode_changed)


def _filter_reason(text: str, lines: list[str], lines_before: int, boilerplate_removed: int,
                   cfg: CleaningConfig) -> str | None:
    if lines_before and boilerplate_removed / lines_before > cfg.max_boilerplate_line_fraction:
        return "boilerplate"
    if not text:
        return "empty"
    if len(lines) > 1 and (len(lines) - len(set(lines))) / len(lines) > cfg.max_repeated_line_fraction:
        return "repeated_lines"
    chars, words = len(text), len(text.split())
    if chars < cfg.min_chars:
        return "too_few_chars"
    if cfg.max_chars is not None and chars > cfg.max_chars:
        return "too_many_chars"
    if words < cfg.min_words:
        return "too_few_words"
    if cfg.max_words is not None and words > cfg.max_words:
        return "too_many_words"
    visible = sum(map(len, text.split()))
    if len(_LETTER.findall(text)) < cfg.min_alpha_fraction * visible:
        return "too_few_alphabetic"
    return None


@dataclass
class SourceStats:
    """What happened to the documents of one source (``documents_read = kept + Σ filtered``)."""

    documents_read: int = 0
    kept: int = 0
    filtered: Counter = field(default_factory=Counter)
    control_chars_removed: int = 0
    boilerplate_lines_removed: int = 0
    unicode_changed_documents: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)  # a few removed documents per reason

    def add(self, doc: CleanedDocument, raw: str, max_examples: int = 3) -> None:
        self.documents_read += 1
        self.control_chars_removed += doc.control_chars_removed
        self.boilerplate_lines_removed += doc.boilerplate_lines_removed
        self.unicode_changed_documents += doc.unicode_changed
        if doc.reason is None:
            self.kept += 1
            return
        self.filtered[doc.reason] += 1
        shown = self.examples.setdefault(doc.reason, [])
        if len(shown) < max_examples:
            shown.append(raw[:300])

    def as_dict(self) -> dict:
        return {"documents_read": self.documents_read, "kept": self.kept, "filtered": dict(self.filtered),
                "control_chars_removed": self.control_chars_removed,
                "boilerplate_lines_removed": self.boilerplate_lines_removed,
                "unicode_changed_documents": self.unicode_changed_documents}


def read_and_clean(source: SourceConfig, cfg: CleaningConfig,
                   on_progress: Callable[[int], None] | None = None) -> tuple[list[str], SourceStats]:
    """The kept, cleaned documents of one source and the accounting of the rest.

    ``on_progress(n)`` is called after every ``n`` documents read (for a progress bar).
    """
    stats = SourceStats()
    kept: list[str] = []
    for raw in read_source(source):
        doc = clean_document(raw, cfg)
        stats.add(doc, raw)
        if doc.reason is None:
            kept.append(doc.text)
        if on_progress is not None and stats.documents_read % _PROGRESS_EVERY == 0:
            on_progress(_PROGRESS_EVERY)
    if on_progress is not None:
        on_progress(stats.documents_read % _PROGRESS_EVERY)
    return kept, stats


# ----------------------------------------------------------------------------- held-out split and replay


def held_out_count(documents: int, eval_fraction: float, eval_documents: int | None) -> int:
    """Documents held out: ``eval_documents`` if set, else ``max(1, round(eval_fraction · documents))``."""
    return eval_documents if eval_documents is not None else max(1, round(eval_fraction * documents))


def split_held_out(documents: int, count: int, seed: int | str) -> tuple[list[int], list[int]]:
    """``(train indices, held-out indices)``: ``count`` documents drawn without replacement, both sorted."""
    held_out = sorted(random.Random(seed).sample(range(documents), count))
    chosen = set(held_out)
    return [i for i in range(documents) if i not in chosen], held_out


def select_replay_blocks(general_lengths: list[int], domain_tokens: int, ratio: float,
                         seed: int) -> tuple[list[int], dict]:
    """Indices of general blocks to mix into training so that general tokens are ``ratio`` of all.

    Target general tokens ``G = ratio · D / (1 − ratio)`` for ``D`` domain training tokens, so that
    ``G / (D + G) = ratio``. With ``A`` general tokens available, every block is used
    ``⌊G / A⌋`` times (``repeat``), and the remainder is a seeded random subsample of blocks
    (``subsample``), taken while it brings the total closer to ``G``. Returns the indices (repeats
    included) and an accounting dict.
    """
    available = sum(general_lengths)
    info = {"ratio_requested": ratio, "general_blocks_available": len(general_lengths),
            "general_tokens_available": available}
    if ratio == 0 or available == 0:
        return [], {**info, "mode": "off", "target_tokens": 0, "general_tokens_used": 0,
                    "general_blocks_used": 0, "full_repeats": 0, "ratio_achieved": 0.0}
    target = ratio * domain_tokens / (1 - ratio)
    rng = random.Random(seed)
    full_repeats = int(target // available)
    chosen: list[int] = []
    for _ in range(full_repeats):
        order = list(range(len(general_lengths)))
        rng.shuffle(order)
        chosen += order
    used = full_repeats * available
    order = list(range(len(general_lengths)))
    rng.shuffle(order)
    for index in order:
        if target - used < general_lengths[index] / 2:
            break
        chosen.append(index)
        used += general_lengths[index]
    return chosen, {**info, "mode": "repeat" if full_repeats else "subsample", "target_tokens": round(target),
                    "general_tokens_used": used, "general_blocks_used": len(chosen), "full_repeats": full_repeats,
                    "ratio_achieved": used / (used + domain_tokens) if used + domain_tokens else 0.0}
