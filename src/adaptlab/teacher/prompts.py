"""Prompt templates: YAML files people can copy and edit, rendered with ``$placeholders``.

A template file holds::

    name: sentences
    version: 1
    system: |
      You annotate ...
    user: |
      Write $n_sentences sentences about $subject ...

A multi-turn conversation (e.g. UniversalNER's, where the assistant first says it has read the
text) is written as ``messages: [{role: user, content: ...}, {role: assistant, content: ...}]``
instead of ``system``/``user``.

``$name`` placeholders (``string.Template``) are used instead of ``{name}`` so JSON examples in a
prompt need no escaping. Each generated record keeps the template's name and version in its
``meta``, so a dataset says which prompt made it. A user directory given in the config overrides
the packaged template of the same name; everything else falls back to the packaged one.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from adaptlab.errors import ConfigError
from adaptlab.teacher.base import Message


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    messages: tuple[tuple[str, str], ...]  # (role, text with $placeholders)
    source: str

    def render(self, **values: Any) -> tuple[Message, ...]:
        """The messages with every ``$placeholder`` filled; a missing one is an error."""
        return tuple(Message(role, self._substitute(text, role, values)) for role, text in self.messages)

    def _substitute(self, text: str, part: str, values: dict[str, Any]) -> str:
        try:
            return string.Template(text).substitute({k: str(v) for k, v in values.items()})
        except KeyError as exc:
            raise ConfigError(
                f"prompt template {self.source} ({part}): unknown placeholder ${exc.args[0]}; "
                f"available: {', '.join('$' + k for k in sorted(values))}"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"prompt template {self.source} ({part}): {exc}; write a literal $ as $$") from None


def load_prompt(name: str, package: str, user_dir: str | Path | None = None) -> PromptTemplate:
    """Load template ``name`` from ``user_dir`` if it has ``<name>.yaml``, else from ``package``'s
    ``prompts/`` folder (e.g. ``package="adaptlab.synth"``)."""
    if user_dir is not None:
        candidate = Path(user_dir) / f"{name}.yaml"
        if candidate.is_file():
            return _parse(candidate.read_text(encoding="utf-8"), str(candidate), name)
        if not Path(user_dir).is_dir():
            raise ConfigError(f"prompts directory {user_dir} does not exist")
    packaged = files(package) / "prompts" / f"{name}.yaml"
    if not packaged.is_file():
        raise ConfigError(f"no prompt template named {name!r} in {package} or {user_dir}")
    return _parse(packaged.read_text(encoding="utf-8"), f"{package}/prompts/{name}.yaml", name)


def _parse(text: str, source: str, name: str) -> PromptTemplate:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"prompt template {source}: invalid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"prompt template {source}: expected a mapping with 'user' (or 'messages')")
    unknown = set(data) - {"name", "version", "description", "system", "user", "messages"}
    if unknown:
        raise ConfigError(f"prompt template {source}: unknown keys {sorted(unknown)}")
    if "messages" in data:
        messages = _parse_messages(data["messages"], source)
    elif isinstance(data.get("user"), str):
        messages = [("system", data["system"])] if str(data.get("system") or "").strip() else []
        messages.append(("user", data["user"]))
    else:
        raise ConfigError(f"prompt template {source}: needs a 'user' text or a 'messages' list")
    return PromptTemplate(str(data.get("name", name)), str(data.get("version", "1")), tuple(messages), source)


def _parse_messages(items: Any, source: str) -> list[tuple[str, str]]:
    roles = {"system", "user", "assistant"}
    if not isinstance(items, list) or not items:
        raise ConfigError(f"prompt template {source}: 'messages' must be a non-empty list")
    messages = []
    for k, item in enumerate(items):
        if not (isinstance(item, dict) and item.get("role") in roles and isinstance(item.get("content"), str)):
            raise ConfigError(f"prompt template {source}: messages[{k}] needs a role ({', '.join(sorted(roles))}) "
                              "and a content text")
        messages.append((item["role"], item["content"]))
    if messages[-1][0] != "user":
        raise ConfigError(f"prompt template {source}: the last message must be the user's")
    return messages
