"""Reading the model cards (README.md) that runs write into their model directories, for the tests of each command."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import yaml


def read_card(model_dir: Path) -> tuple[dict[str, Any], str]:
    """The card's front matter (parsed YAML, as the Hub reads it) and its Markdown body."""
    text = (Path(model_dir) / "README.md").read_text(encoding="utf-8")
    match = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, re.S)
    assert match, f"{model_dir}/README.md has no YAML front matter"
    return yaml.safe_load(match.group(1)), match.group(2)


def section(body: str, heading: str) -> str:
    """The text of the card section ``## heading`` (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", body, re.S | re.M)
    assert match, f"no section {heading!r} in the card"
    return match.group(1)


def code_block(text: str, language: str) -> str:
    match = re.search(rf"^(`{{3,}}){language}\n(.*?)\n\1$", text, re.S | re.M)
    assert match, f"no {language} code block"
    return match.group(2)


def run_load_snippet(model_dir: Path) -> str:
    """Execute the card's "How to load it" Python code as it is; returns what it printed."""
    _, body = read_card(model_dir)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code_block(section(body, "How to load it"), "python"), "README.md", "exec"), {})
    return printed.getvalue()


def resolved_config(model_dir: Path) -> dict[str, Any]:
    """The config.yaml the card holds, parsed."""
    _, body = read_card(model_dir)
    return yaml.safe_load(code_block(section(body, "Resolved config"), "yaml"))
