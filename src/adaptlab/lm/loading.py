"""Loading tokenizers for the LM recipes, with an error that names the config key to fix."""

from __future__ import annotations

from typing import Any

from adaptlab.errors import ModelError
from adaptlab.models.gguf import resolve_model


def load_tokenizer(name: str, key: str = "tokenizer") -> Any:
    """``AutoTokenizer.from_pretrained(name)``; a :class:`ModelError` naming ``key`` when it cannot be loaded."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_model(name, key))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{key}: cannot load a tokenizer from {name!r} ({exc}); give a local tokenizer or model "
                         "folder, or a hub name that is available offline") from None
