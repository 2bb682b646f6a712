"""Raw text inputs for prediction commands: a ``--text`` string or a file of texts."""

from __future__ import annotations

from pathlib import Path

from adaptlab.data.records import read_text_lines
from adaptlab.errors import AdaptlabError


def read_texts(input_path: str | None, text: str | None) -> list[str]:
    """Texts from ``--text`` or ``--input``: JSONL records (their ``text``) or one text per line."""
    if (input_path is None) == (text is None):
        raise AdaptlabError("give exactly one of --input FILE or --text \"...\"")
    if text is not None:
        if not text.strip():
            raise AdaptlabError("--text is empty")
        return [text]
    if Path(input_path).suffix == ".jsonl":
        from adaptlab.data.io import load_records

        return [r.text for r in load_records(input_path)]
    return [line for line in read_text_lines(input_path) if line.strip()]
