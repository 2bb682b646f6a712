"""Load a model that may be a PEFT adapter directory (``strategy.peft`` with ``save: adapter``).

An adapter directory holds ``adapter_config.json`` (naming the base model in ``base_model_name_or_path``), the
adapter weights, and the modules trained in full (``modules_to_save``: an encoder's classifier, the embeddings
of added tokens). :func:`load_pretrained` loads the base with ``auto_class``, gives it what the training run's
model had and the base checkpoint lacks, attaches the adapter and merges it for inference:

* **embedding rows**: when the adapter carries embeddings with more rows than the base (tokens were added), the
  base's embeddings are resized to that many rows first (the saved rows then replace them);
* **labels**: ``id2label`` / ``label2id`` from a ``config.json`` beside the adapter (the trained model's config,
  e.g. written with ``model.config.save_pretrained(directory)``), unless the caller passes its own.

Transformers' own adapter loading (``from_pretrained`` on the adapter directory) does neither and fails with a
size mismatch on a resized vocabulary or a classifier with another number of labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adaptlab.errors import ModelError
from adaptlab.models.checks import check_local_model

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter(path: str | Path) -> bool:
    """``path`` is a PEFT adapter directory (it holds ``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_pretrained(path: str | Path, auto_class: Any, merge: bool = True, **kwargs: Any) -> Any:
    """``auto_class.from_pretrained(path, **kwargs)``, or for an adapter directory: base + adapter, merged.

    ``auto_class``: e.g. ``AutoModelForTokenClassification``; ``kwargs`` go to the base's ``from_pretrained``
    (``dtype``, ``num_labels``, ...). Returns a plain transformers model when the adapter can be merged (LoRA,
    IA3) and ``merge`` is true, else the ``PeftModel`` in eval mode (prompt and prefix tuning keep their virtual
    tokens outside the weights). A :class:`ModelError` when the base model cannot be found or does not fit.
    """
    path = Path(path)
    if not is_adapter(path):
        return auto_class.from_pretrained(str(path), **kwargs)
    from peft import PeftConfig, PeftModel

    adapter = PeftConfig.from_pretrained(str(path))
    base_name = adapter.base_model_name_or_path
    key = f"{path / ADAPTER_CONFIG}: base_model_name_or_path"
    if not base_name:
        raise ModelError(f"{key} is empty; the adapter does not say which model it was trained on")
    check_local_model(base_name, key=key)
    for name, value in task_labels(path).items():
        kwargs.setdefault(name, value)
    try:
        model = auto_class.from_pretrained(base_name, **kwargs)
    except OSError as exc:  # a hub name that is neither cached nor reachable
        raise ModelError(f"{key}: cannot load {base_name}: {str(exc).splitlines()[0]}") from None
    rows = saved_embedding_rows(path, model)
    if rows is not None and rows != model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(rows, mean_resizing=False)
    try:
        loaded = PeftModel.from_pretrained(model, str(path))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: the adapter does not fit its base model {base_name}: "
                         f"{str(exc).splitlines()[0]}") from None
    if merge and not loaded.peft_config[loaded.active_adapter].is_prompt_learning:
        return loaded.merge_and_unload().eval()
    return loaded.eval()


def task_labels(path: Path) -> dict[str, Any]:
    """``id2label`` and ``label2id`` of the ``config.json`` beside the adapter, when it has labels."""
    config_file = path / "config.json"
    if not config_file.is_file():
        return {}
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{config_file}: not readable JSON ({exc})") from None
    if not config.get("id2label"):
        return {}
    id2label = {int(index): label for index, label in config["id2label"].items()}
    return {"id2label": id2label, "label2id": config.get("label2id") or {v: k for k, v in id2label.items()}}


def saved_embedding_rows(path: Path, model: Any) -> int | None:
    """Rows of the input embeddings saved with the adapter (``modules_to_save``), read from the file header."""
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        return None
    from safetensors import safe_open

    embedding = model.get_input_embeddings()
    name = next(n for n, module in model.named_modules() if module is embedding)
    with safe_open(str(weights), framework="pt") as tensors:
        shapes = [tensors.get_slice(k).get_shape() for k in tensors.keys() if f".{name}." in f".{k}"]
    rows = [shape[0] for shape in shapes if len(shape) == 2]
    return max(rows) if rows else None
