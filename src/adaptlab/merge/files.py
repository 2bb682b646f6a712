"""Everything in a merged model directory besides the weights.

* ``config.json`` comes from ``config_from`` (default: ``tokenizer_from``, then the base model,
  then the first model) with its dtype set to the output dtype;
* tokenizer files come from ``tokenizer_from`` (default: the base model, else the first model);
* ``chat_template_from`` (the instruct model, for a chat vector) contributes its chat template,
  its special tokens (``special_tokens_map.json`` and the special-token entries of
  ``tokenizer_config.json``) and its ``generation_config.json`` (so generation stops at its
  end-of-turn token);
* otherwise ``generation_config.json`` comes from the config source;
* ``chat_template`` (a Jinja template, or ``auto``: the template most inputs share, ties to the
  first in input order, as mergekit's ``chat_template: auto``) becomes the output's
  ``chat_template.jinja``, which transformers prefers over any template in ``tokenizer_config.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from adaptlab.errors import ModelError
from adaptlab.merge.config import MergeConfig
from adaptlab.merge.vocab import write_output_tokenizer
from adaptlab.models.gguf import is_gguf_path, resolve_model
from adaptlab.runs import atomic_write_json, atomic_write_text

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "spiece.model", "chat_template.jinja",
                   "chat_template.json")
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token", "additional_special_tokens",
                      "extra_special_tokens", "chat_template")


def resolve_model_dir(name: str) -> str:
    """A local directory as is, a GGUF file converted (cached); otherwise a hub model's files (needs the network)."""
    if Path(name).is_dir():
        return name
    if is_gguf_path(name):
        return resolve_model(name)
    if os.environ.get("HF_HUB_OFFLINE") == "1" or Path(name).is_absolute() or name.startswith("."):
        raise ModelError(f"model directory {name} not found (and hub downloads are off)")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    except Exception as exc:  # the hub client raises many kinds; all mean "not available"
        raise ModelError(f"model {name} is neither a local directory nor downloadable: {exc}") from None


def source_paths(cfg: MergeConfig, inputs: list[str]) -> dict[str, str]:
    """Which input each kind of side file comes from (paths already resolved like ``inputs``)."""
    resolved = dict(zip(cfg.all_models(), inputs))
    default = resolved[cfg.base_model] if cfg.base_model else inputs[0]
    tokenizer = resolved.get(cfg.tokenizer_from, default) if cfg.tokenizer_from else default
    config = resolved.get(cfg.config_from, tokenizer) if cfg.config_from else tokenizer
    for key in ("tokenizer_from", "config_from", "chat_template_from"):
        value = getattr(cfg, key)
        if value is not None and value not in resolved:
            raise ModelError(f"{key} {value!r} is not one of the inputs ({', '.join(cfg.all_models())})")
    chat = resolved[cfg.chat_template_from] if cfg.chat_template_from else None
    return {"config": config, "tokenizer": tokenizer, "chat": chat}


def write_side_files(cfg: MergeConfig, plan, inputs: list[str], out_dir: Path) -> None:
    sources = source_paths(cfg, inputs)
    config = json.loads((Path(sources["config"]) / "config.json").read_text(encoding="utf-8"))
    dtype = str(plan.dtype).removeprefix("torch.")
    config["dtype"] = dtype
    if "torch_dtype" in config:
        config["torch_dtype"] = dtype
    if plan.vocab is not None:
        config["vocab_size"] = plan.vocab.out_rows
    atomic_write_json(out_dir / "config.json", config)
    for name in TOKENIZER_FILES:
        if (Path(sources["tokenizer"]) / name).is_file():
            shutil.copyfile(Path(sources["tokenizer"]) / name, out_dir / name)
    if plan.vocab is not None:  # union: the output tokenizer gains the new tokens before special tokens are set
        write_output_tokenizer(sources["tokenizer"], plan.vocab, out_dir)
    generation_source = sources["chat"] or sources["config"]
    if (Path(generation_source) / "generation_config.json").is_file():
        shutil.copyfile(Path(generation_source) / "generation_config.json", out_dir / "generation_config.json")
    if sources["chat"]:
        carry_chat_template(Path(sources["chat"]), out_dir)
    if cfg.chat_template is not None:
        write_chat_template(chosen_chat_template(cfg.chat_template, inputs), out_dir)


def read_chat_template(model_dir: str | Path) -> str | None:
    """The default chat template a model directory ships (``chat_template.jinja``, ``chat_template.json`` or
    ``tokenizer_config.json``, in transformers' order of preference), or None."""
    directory = Path(model_dir)
    if (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        template = (_read_json(directory / name) or {}).get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if isinstance(template, str) and template:
            return template
    return None


def chosen_chat_template(setting: str, inputs: list[str]) -> str:
    """``setting`` itself, or for ``auto`` the template most inputs ship (ties: the first in input order)."""
    if setting != "auto":
        return setting
    templates = [t.strip() for t in (read_chat_template(path) for path in inputs) if t]
    if not templates:
        raise ModelError(f"chat_template: auto, but none of the inputs ({', '.join(inputs)}) has a chat template")
    return max(templates, key=templates.count)


def write_chat_template(template: str, out_dir: Path) -> None:
    """``template`` as the output's only chat template."""
    atomic_write_text(out_dir / "chat_template.jinja", template)
    (out_dir / "chat_template.json").unlink(missing_ok=True)
    out_config = _read_json(out_dir / "tokenizer_config.json")
    if out_config is not None and out_config.pop("chat_template", None) is not None:
        atomic_write_json(out_dir / "tokenizer_config.json", out_config)


def carry_chat_template(chat_dir: Path, out_dir: Path) -> None:
    """Take the chat template and special tokens of ``chat_dir`` into the output's tokenizer files."""
    for name in ("chat_template.jinja", "chat_template.json", "special_tokens_map.json"):
        if (chat_dir / name).is_file():
            shutil.copyfile(chat_dir / name, out_dir / name)
    chat_config = _read_json(chat_dir / "tokenizer_config.json")
    out_config = _read_json(out_dir / "tokenizer_config.json")
    if chat_config is None or out_config is None:
        return
    for key in SPECIAL_TOKEN_KEYS:
        if key in chat_config:
            out_config[key] = chat_config[key]
    atomic_write_json(out_dir / "tokenizer_config.json", out_config)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: invalid JSON ({exc.msg}, line {exc.lineno})") from None
