"""Instruction-following probe: does the model answer in its chat format and stop at EOS?

Why: merging an instruction vector into a domain model (chat vector) should bring back the
instruct model's turn-taking, and a multiple-choice benchmark does not show it (Hirano & Imajo 2024
saw the merge's gain in instruction following, not on the harness). The two failures users meet
most are a model that never emits EOS (it rambles to the token limit) and one that writes the
next turn itself (``<|im_start|>user ...``). The probe measures both on a small prompt set.

For each prompt the single user message is rendered with the tokenizer's chat template
(``add_generation_prompt=True``), and up to ``max_new_tokens`` tokens are generated greedily
(left-padded batches). Per response:

* ``stopped``: one of the new tokens is an EOS id. EOS ids are the union of the model's
  ``generation_config.eos_token_id`` and the tokenizer's EOS token. The response is the text of
  the tokens before the first EOS.
* ``chat_format``: the response has visible text (non-blank once special tokens are removed) and
  contains none of the template's **turn markers**. The markers are found by rendering a dummy
  conversation (user, assistant, user, then the generation prompt) whose messages are sentinel
  words: the template's own text between the messages is its framing. The markers are the special
  tokens of the tokenizer that occur in the framing, and every non-blank line of the framing
  (stripped), e.g. ``<|im_start|>assistant`` and ``<|im_end|>`` for ChatML, or ``### User:`` for a
  plain-text template. Markers and response are compared as text after the same decoding (each
  marker is tokenized and decoded, special tokens kept), so tokenizers whose decoding is not the
  inverse of encoding (WordPiece adds spaces) treat both alike.
* ``both``: stopped and chat_format; the probe's headline number is the share of prompts with both.

A tokenizer without a chat template cannot be probed: :func:`probe_skip_reason` says so and the
caller records the note instead of a number. The probe set is JSONL, one ``{"prompt": str}`` per
line (optional ``"id"``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adaptlab.data.records import iter_json_lines
from adaptlab.errors import ConfigError, DataError, ModelError

_SENTINELS = ("adaptlabsentinelzero", "adaptlabsentinelone", "adaptlabsentineltwo")


def load_probe_prompts(path: str | Path) -> list[dict[str, str]]:
    """``[{"id", "prompt"}]`` from a JSONL file of ``{"prompt": str}`` objects; errors name file:line."""
    prompts = []
    for line, obj in iter_json_lines(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
            raise DataError('each line must be {"prompt": "non-empty text"} (optionally with "id")', path, line)
        unknown = sorted(set(obj) - {"prompt", "id"})
        if unknown:
            raise DataError(f"unknown key(s) {unknown}; a probe line has 'prompt' and optional 'id'", path, line)
        prompts.append({"id": str(obj.get("id", f"line {line}")), "prompt": obj["prompt"]})
    if not prompts:
        raise DataError("no prompts", path)
    return prompts


def probe_skip_reason(tokenizer) -> str | None:
    """Why this tokenizer cannot be probed (no chat template), or None."""
    if getattr(tokenizer, "chat_template", None) is None:
        return ("no chat template in the tokenizer: a base model has no chat format to follow; probe skipped "
                "(add chat_template.jinja to the model directory to probe it)")
    return None


def eos_token_ids(model, tokenizer) -> list[int]:
    """The union of ``model.generation_config.eos_token_id`` and the tokenizer's EOS id."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    ids.discard(None)
    return sorted(ids)


def _render(tokenizer, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def turn_markers(tokenizer) -> list[str]:
    """The chat template's framing pieces a response must not contain (module docstring), as decoded text."""
    roles = ("user", "assistant", "user")
    try:
        rendered = _render(tokenizer, [{"role": r, "content": s} for r, s in zip(roles, _SENTINELS)])
    except Exception:  # a template may insist on e.g. a system message first: fall back to one user turn
        try:
            rendered = _render(tokenizer, [{"role": "user", "content": _SENTINELS[0]}])
        except Exception as exc:  # jinja raises from inside the template
            raise ModelError(f"the tokenizer's chat template cannot render one user message: {exc}") from exc
    framing = re.split("|".join(_SENTINELS), rendered)
    specials = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]
    found: list[str] = []
    for piece in framing:
        found += [token for token in specials if token in piece]
        found += [line.strip() for line in piece.splitlines() if line.strip()]
    markers = []
    for marker in dict.fromkeys(found):
        ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        decoded = tokenizer.decode(ids, skip_special_tokens=False).strip()
        if decoded and decoded not in markers:
            markers.append(decoded)
    return markers


def run_probe(model, tokenizer, prompts: list[dict[str, str]], max_new_tokens: int = 128, batch_size: int = 8,
              device=None, advance: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Generate greedily for every prompt and score ``stopped`` / ``chat_format`` / ``both``.

    Returns ``{"prompts", "stopped", "chat_format", "both"`` (shares of prompts), ``"counts"``,
    ``"eos_ids"``, ``"turn_markers"``, ``"responses": [{"id", "prompt", "response", "new_tokens",
    "stopped", "chat_format", "markers_found"}]}``; a response is the text before the first EOS with
    special tokens kept, so a marker the model wrote stays visible. Raises :class:`ConfigError` when
    the tokenizer has no chat template.
    """
    import torch

    reason = probe_skip_reason(tokenizer)
    if reason:
        raise ConfigError(reason)
    if max_new_tokens < 1 or batch_size < 1:
        raise ConfigError(f"probe max_new_tokens and batch_size must be >= 1 (got {max_new_tokens}, {batch_size})")
    markers = turn_markers(tokenizer)
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids[0] if eos_ids else 0)
    device = device if device is not None else next(model.parameters()).device
    encoded = [list(tokenizer.apply_chat_template([{"role": "user", "content": p["prompt"]}],
                                                  add_generation_prompt=True, tokenize=True, return_dict=False))
               for p in prompts]
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False, "pad_token_id": pad_id}
    if eos_ids:
        options["eos_token_id"] = eos_ids
    responses = []
    was_training = model.training
    model.eval()
    try:
        for first in range(0, len(encoded), batch_size):
            batch = encoded[first:first + batch_size]
            width = max(len(ids) for ids in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            for row, ids in enumerate(batch):  # left padding: every prompt ends where generation starts
                input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids):] = 1
            with torch.inference_mode():
                output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                        **options)
            for prompt, new_tokens in zip(prompts[first:first + batch_size], output[:, width:].tolist()):
                responses.append(_judge(tokenizer, prompt, new_tokens, set(eos_ids), markers))
            if advance is not None:
                advance(len(batch))
    finally:
        model.train(was_training)
    counts = {key: sum(r[key] for r in responses) for key in ("stopped", "chat_format")}
    counts["both"] = sum(r["stopped"] and r["chat_format"] for r in responses)
    return {"prompts": len(responses), **{key: n / len(responses) for key, n in counts.items()}, "counts": counts,
            "eos_ids": eos_ids, "turn_markers": markers, "responses": responses}


def _judge(tokenizer, prompt: dict[str, str], new_tokens: list[int], eos_ids: set[int],
           markers: list[str]) -> dict[str, Any]:
    end = next((i for i, token in enumerate(new_tokens) if token in eos_ids), None)
    kept = new_tokens if end is None else new_tokens[:end]
    raw = tokenizer.decode(kept, skip_special_tokens=False)
    visible = tokenizer.decode(kept, skip_special_tokens=True).strip()
    found = [m for m in markers if m in raw]
    return {"id": prompt["id"], "prompt": prompt["prompt"], "response": raw,
            "new_tokens": len(new_tokens) if end is None else end + 1, "stopped": end is not None,
            "chat_format": bool(visible) and not found, "markers_found": found}
