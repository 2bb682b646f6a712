"""Raw text inputs for prediction commands: a ``--text`` string or a file of texts."""

from __future__ import annotations

from pathlib import Path

from adaptlab.data.records import read_text_lines
from adaptlab.errors import AdaptlabError


def read_texts(input_path: str | None, text: str | None, annotated: bool = True) -> list[str]:
    """Texts from ``--text`` or ``--input``: JSONL records (their ``text``) or one text per line.

    With ``annotated`` (NER prediction), a file in an annotated format that ``adaptlab data`` reads (CoNLL
    ``token<TAB>tag`` lines, Label Studio JSON, ...) gives its records' texts, rather than one text per line
    of it (each ``token<TAB>tag`` line would otherwise become a text of its own).
    """
    if (input_path is None) == (text is None):
        raise AdaptlabError("give exactly one of --input FILE or --text \"...\"")
    if text is not None:
        if not text.strip():
            raise AdaptlabError("--text is empty")
        return [text]
    from adaptlab.data.io import load_records

    if Path(input_path).suffix == ".jsonl" or (annotated and looks_annotated(Path(input_path))):
        return [r.text for r in load_records(input_path)]
    return [line for line in read_text_lines(input_path) if line.strip()]


def looks_annotated(path: Path) -> bool:
    """An annotated-data suffix (.conll, .json, .bio, ...), or a first line ``token<TAB>tag``."""
    from adaptlab.data.conll_scan import TAG_LIKE
    from adaptlab.data.io import SUFFIX_FORMATS

    if path.suffix.lower() in SUFFIX_FORMATS:
        return True
    first = next((line for line in read_text_lines(path) if line.strip()), "")
    fields = first.rstrip("\r\n").split("\t")
    return len(fields) == 2 and bool(TAG_LIKE.match(fields[1].strip()))
