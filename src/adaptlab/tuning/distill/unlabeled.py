"""Unlabeled texts for distillation (``strategy.distill.unlabeled``): read from files, cleaned, deduplicated.

A file is read by its suffix:

* ``.txt``: one text per line;
* ``.jsonl`` / ``.ndjson``: the ``text`` of each JSON object (canonical records, classification rows, spaCy
  records alike; their labels are ignored);
* anything else: records in any format :func:`adaptlab.data.io.load_records` reads (CoNLL, Label Studio, a saved
  HF dataset, ...), their texts.

Cleaning strips surrounding whitespace and drops blank texts, repeats of an earlier text, and texts that are
already labelled training texts (the teacher scores those as labelled rows). Each drop is counted for the run's
``metrics.json``; a file left with no text at all is an error naming it, never an empty run.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from adaptlab.data.io import load_records
from adaptlab.data.records import iter_json_lines, read_text_lines
from adaptlab.errors import DataError, StrategyError

KEY = "strategy.distill.unlabeled"


def raw_texts(path: Path) -> list[str]:
    """The texts of one file, uncleaned (module docstring); read errors are prefixed with the config key."""
    try:
        suffix = path.suffix.lower()
        if suffix == ".txt":
            return read_text_lines(path)
        if suffix in (".jsonl", ".ndjson"):
            texts = []
            for line, obj in iter_json_lines(path):
                text = obj.get("text") if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    raise DataError("expected a JSON object with a 'text' string", path, line)
                texts.append(text)
            return texts
        return [record.text for record in load_records(path)]
    except DataError as exc:
        raise DataError(f"{KEY}: {exc}") from None


def read_unlabeled_texts(paths: Iterable[str | Path], labelled: Iterable[str]) -> tuple[list[str], dict[str, Any]]:
    """The cleaned texts of ``paths`` in file order, and counts of what was read and dropped.

    ``labelled`` are the training texts that have gold labels. A :class:`DataError` names a file that holds no
    text once blanks are removed; a :class:`StrategyError` says when every text was a repeat.
    """
    paths = [Path(path) for path in paths]
    known = {text.strip() for text in labelled}
    seen: set[str] = set()
    kept: list[str] = []
    counts = {"files": 0, "read": 0, "blank": 0, "repeated": 0, "labelled_already": 0}
    for path in paths:
        texts = [text.strip() for text in raw_texts(path)]
        if not any(texts):
            raise DataError(f"{KEY}: holds no text once blank lines and surrounding whitespace are removed; give "
                            "unlabeled texts, one per line (.txt) or records with a text", path)
        counts["files"] += 1
        counts["read"] += len(texts)
        for text in texts:
            if not text:
                counts["blank"] += 1
            elif text in known:
                counts["labelled_already"] += 1
            elif text in seen:
                counts["repeated"] += 1
            else:
                seen.add(text)
                kept.append(text)
    if not kept:
        raise StrategyError("distill", f"unlabeled: the {counts['read']} texts of {[str(p) for p in paths]} are all "
                                       f"repeats or labelled training texts ({counts}); nothing is left to distil")
    counts["kept"] = len(kept)
    return kept, counts
