"""An Ollama ``Modelfile`` for an exported GGUF: FROM, the chat template in Ollama's Go syntax, stops, SYSTEM.

Ollama does not run Jinja: its TEMPLATE is a Go template over ``.Messages`` (each with ``.Role`` and
``.Content``). A Jinja chat template is translated only when it has a known shape, and the shape is not
guessed from the template's text but checked by rendering: the tokenizer's own template renders two probe
conversations, the result is split into turns with the shape's turn pattern, and the shape counts only if
the turns give back the probe's roles and contents in order and the text ends with the shape's generation
prompt. Known shapes:

* ChatML (Qwen2, SmolLM2): ``<|im_start|>ROLE\\nCONTENT<|im_end|>\\n``, end of turn ``<|im_end|>``;
* Llama 3: ``<|start_header_id|>ROLE<|end_header_id|>\\n\\nCONTENT<|eot_id|>``, end of turn ``<|eot_id|>``
  (the leading ``<|begin_of_text|>`` is the BOS llama.cpp adds itself).

A system turn the template adds on its own when the conversation has none (SmolLM2's "You are a helpful
AI assistant ...") becomes the Modelfile's ``SYSTEM``, which Ollama sends when a request has no system
message. Any other template gets no TEMPLATE line and a comment saying so: Ollama then falls back to its
own detection from the GGUF's ``tokenizer.chat_template``, or the user writes one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROBE_CHAT = [{"role": "user", "content": "first question"}, {"role": "assistant", "content": "first answer"},
              {"role": "user", "content": "second question"}]
PROBE_SYSTEM = [{"role": "system", "content": "probe system"}, {"role": "user", "content": "a question"}]


@dataclass(frozen=True)
class ChatShape:
    """A turn format with ``{role}`` and ``{content}``, the generation prompt, and the stop strings."""

    name: str
    turn: str
    generation_prompt: str
    stops: tuple[str, ...]

    def turn_pattern(self) -> re.Pattern:
        before, rest = self.turn.split("{role}")
        middle, after = rest.split("{content}")
        return re.compile(f"{re.escape(before)}(?P<role>[a-z]+){re.escape(middle)}(?P<content>.*?){re.escape(after)}",
                          re.DOTALL)

    def go_template(self) -> str:
        """The same turns as an Ollama (Go) template over ``.Messages``."""
        turn = self.turn.replace("{role}", "{{ .Role }}").replace("{content}", "{{ .Content }}")
        return "{{- range .Messages }}" + turn + "{{ end }}" + self.generation_prompt


CHAT_SHAPES = (
    ChatShape("ChatML", "<|im_start|>{role}\n{content}<|im_end|>\n", "<|im_start|>assistant\n",
              ("<|im_start|>", "<|im_end|>")),
    ChatShape("Llama 3", "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
              "<|start_header_id|>assistant<|end_header_id|>\n\n",
              ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
)


@dataclass
class ChatTranslation:
    """A recognised chat template: its shape and the system prompt it adds by default (None if none)."""

    shape: ChatShape
    default_system: str | None


def translate_chat_template(tokenizer: Any) -> ChatTranslation | None:
    """The known shape of ``tokenizer``'s chat template (module docstring), or None."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    try:
        plain = _render(tokenizer, PROBE_CHAT)
        with_system = _render(tokenizer, PROBE_SYSTEM)
    except Exception:  # a template that refuses the probes (no system role, strict alternation ...)
        return None
    bos = tokenizer.bos_token or ""
    for shape in CHAT_SHAPES:
        plain_turns, system_turns = _turns(shape, plain, bos), _turns(shape, with_system, bos)
        if plain_turns is None or system_turns is None:
            continue
        default_system = plain_turns.pop(0)[1] if plain_turns[:1] and plain_turns[0][0] == "system" else None
        # the probe's own system prompt may be extended (Llama 3.1 puts a date in front), never dropped
        system_kept = bool(system_turns) and system_turns[0][0] == "system" \
            and system_turns[0][1].endswith(PROBE_SYSTEM[0]["content"])
        if plain_turns == _pairs(PROBE_CHAT) and system_kept and system_turns[1:] == _pairs(PROBE_SYSTEM[1:]):
            return ChatTranslation(shape, default_system)
    return None


def _pairs(messages: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


def _render(tokenizer: Any, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _turns(shape: ChatShape, text: str, bos: str) -> list[tuple[str, str]] | None:
    """``text`` cut into (role, content) turns ending in the generation prompt, or None if it is not that;
    a leading BOS the template writes itself is allowed (llama.cpp adds it when it tokenizes)."""
    turns = _split_turns(shape, text)
    if turns is None and bos and text.startswith(bos):
        turns = _split_turns(shape, text[len(bos):])
    return turns


def _split_turns(shape: ChatShape, text: str) -> list[tuple[str, str]] | None:
    if not text.endswith(shape.generation_prompt):
        return None
    body = text[:len(text) - len(shape.generation_prompt)]
    turns, position = [], 0
    pattern = shape.turn_pattern()
    while position < len(body):
        match = pattern.match(body, position)
        if match is None:
            return None
        turns.append((match["role"], match["content"]))
        position = match.end()
    return turns


def modelfile_text(gguf_path: Path, modelfile: Path, translation: ChatTranslation | None) -> str:
    """The Modelfile: ``FROM`` the GGUF (relative when beside it), TEMPLATE, stop PARAMETERs, SYSTEM."""
    source = f"./{gguf_path.name}" if gguf_path.parent.resolve() == modelfile.parent.resolve() \
        else str(gguf_path.resolve())
    lines = ["# Ollama Modelfile written by adaptlab export gguf", f"FROM {source}", ""]
    if translation is None:
        lines += ["# TEMPLATE: this model's chat template has no known Ollama translation (ChatML and Llama 3 are",
                  "# translated). Ollama picks a template from the GGUF's tokenizer.chat_template when it knows it;",
                  "# otherwise write a TEMPLATE here (https://github.com/ollama/ollama/blob/main/docs/template.md)."]
        return "\n".join(lines) + "\n"
    shape = translation.shape
    lines += [f"# chat template: {shape.name}", f'TEMPLATE """{shape.go_template()}"""', ""]
    lines += [f'PARAMETER stop "{stop}"' for stop in shape.stops]
    if translation.default_system:
        lines += ["", f'SYSTEM """{translation.default_system}"""']
    return "\n".join(lines) + "\n"
