"""One check of a local model directory before anything loads it, so damage is one line and exit 2.

:func:`check_model_dir` looks at what transformers would otherwise trip over with a traceback: the path
is a directory, ``config.json`` is readable JSON naming a ``model_type``, the weights are there and every
safetensors header agrees with its file's size (a truncated download or an empty file is named), and
the model's head is the kind the command needs (:data:`HEADS`): a token classifier for ``ner``, a
sequence classifier for ``re``, a causal LM for ``lm``. Pickled ``.bin`` weights are left to
transformers' own loader. Reading headers only, it costs milliseconds even for large models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaptlab.errors import ModelError

HEADS = {
    "token_classification": ("token classifier (an `adaptlab ner train` model)", ("ForTokenClassification",)),
    "sequence_classification": ("sequence classifier (an `adaptlab re train` model)",
                                ("ForSequenceClassification",)),
    "causal_lm": ("causal language model", ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")),
}


def looks_local(name: str | Path) -> bool:
    """A path rather than a hub name: absolute, starting with ``.`` or ``~``, or existing."""
    text = str(name)
    return Path(text).is_absolute() or text.startswith((".", "~")) or Path(text).exists()


def check_local_model(name: str | Path, head: str | None = None, key: str = "model") -> bool:
    """:func:`check_model_dir` when ``name`` is a path (True once it passed); a hub name is left alone (False)."""
    if not looks_local(name):
        return False
    check_model_dir(name, head, key)
    return True


def check_model_dir(path: str | Path, head: str | None = None, key: str = "model") -> dict[str, Any]:
    """Check the model directory at ``path`` (module doc) and return its config; ModelError names ``key``."""
    from adaptlab.merge.tensors_io import ModelTensors

    path = Path(path)
    if not path.exists():
        raise ModelError(f"{key}: {path} does not exist")
    if not path.is_dir():
        raise ModelError(f"{key}: {path} is a file; give the model directory that holds config.json and the weights")
    config = read_config(path, key)
    has_safetensors = any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file()
    if has_safetensors or not any(path.glob("*.bin")):
        with ModelTensors(path):  # headers against file sizes; no weights are read
            pass
    if head is not None:
        check_head(config, head, path, key)
    return config


def read_config(path: Path, key: str = "model") -> dict[str, Any]:
    """``path/config.json`` as a dict with a ``model_type``; ModelError names ``key`` and the file otherwise."""
    file = path / "config.json"
    if not file.is_file():
        raise ModelError(f"{key}: {path} holds no config.json, so it is not a Hugging Face model directory "
                         "(a run directory of adaptlab holds one in model/)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{key}: {file} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelError(f"{key}: {file} names no model_type; it is damaged or not a transformers config")
    return config


def check_head(config: dict[str, Any], head: str, path: Path, key: str = "model") -> None:
    """The config's architectures must end in one of the head's suffixes (no architectures: accepted)."""
    what, suffixes = HEADS[head]
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith(suffixes) for a in architectures):
        raise ModelError(f"{key}: {path} is a {', '.join(architectures)}, not a {what}; give a model of that kind")
