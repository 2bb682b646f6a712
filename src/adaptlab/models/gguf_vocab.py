"""A Hugging Face tokenizer as llama.cpp's GGUF tokenizer metadata (``tokenizer.ggml.*``).

A GGUF carries no ``tokenizer.json``: llama.cpp rebuilds the tokenizer from a vocabulary in id order,
one type per token, and either the BPE merges or per-token scores. Two families cover Llama- and
Qwen2-style models, told apart by the ``tokenizer.json`` the HF tokenizer is built from:

* ``gpt2`` -- byte-level BPE (a ``ByteLevel`` pre-tokenizer: GPT-2, Qwen2, Llama 3, SmolLM2). Tokens are
  written as the tokenizer spells them (bytes mapped to printable characters), merges as ``"left right"``,
  and ``tokenizer.ggml.pre`` names the split regex llama.cpp must apply before the merges.
* ``llama`` -- SentencePiece-style BPE (``Metaspace``, byte fallback: Llama 2, Mistral). Tokens keep their
  ``▁``; the 256 ``<0xHH>`` tokens are typed BYTE. llama.cpp merges the adjacent pair whose joined piece has
  the highest score, so a piece made by the merge of rank r scores -r: the order HF's BPE applies them in.
  The merges are written too (transformers' GGUF reader uses them when present).

Token types are llama.cpp's: 1 normal, 2 unknown, 3 control (a special added token), 4 user-defined (an added
token that is not special), 5 unused (padding up to the model's embedding rows), 6 byte.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from adaptlab.errors import ModelError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclass
class GGUFVocab:
    """Everything :func:`write_vocab` puts under ``tokenizer.*``."""

    model: str
    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    scores: list[float] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None
    chat_template: str | None = None


def build_vocab(tokenizer: Any, n_vocab: int, where: str) -> GGUFVocab:
    """The GGUF vocabulary of a fast HF ``tokenizer`` for a model with ``n_vocab`` embedding rows."""
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{where}: the tokenizer has no tokenizer.json (a slow tokenizer); GGUF export needs the "
                         "fast one: save it with transformers' AutoTokenizer first")
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    bpe = spec["model"]
    if bpe.get("type") != "BPE":
        raise ModelError(f"{where}: a {bpe.get('type')} tokenizer cannot be exported to GGUF for Llama/Qwen2 models; "
                         "supported: byte-level BPE and SentencePiece-style BPE")
    byte_level = "ByteLevel" in _component_types(spec.get("pre_tokenizer"))
    if not byte_level and not bpe.get("byte_fallback"):
        raise ModelError(f"{where}: the BPE tokenizer is neither byte-level nor SentencePiece-style (byte fallback), "
                         "so llama.cpp could not reproduce it")
    tokens, types = _tokens_and_types(tokenizer, spec, n_vocab, where, byte_level)
    merges = [_merge_text(m, where) for m in bpe.get("merges", [])]
    vocab = GGUFVocab(model="gpt2" if byte_level else "llama",
                      pre=pre_tokenizer_name(spec) if byte_level else "default", tokens=tokens, token_types=types,
                      merges=merges,
                      special_ids=_special_ids(tokenizer), chat_template=_chat_template(tokenizer))
    if not byte_level:
        vocab.scores = merge_scores(tokens, merges)
        vocab.add_space_prefix = _metaspace_prefix(spec)
    vocab.add_bos, vocab.add_eos = _added_specials(tokenizer)
    return vocab


def write_vocab(writer: Any, vocab: GGUFVocab) -> None:
    """Add ``vocab`` to a ``gguf.GGUFWriter`` under llama.cpp's ``tokenizer.*`` keys."""
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    writer.add_token_merges(vocab.merges)
    for kind, token_id in vocab.special_ids.items():
        getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def _component_types(component: dict | None) -> list[str]:
    """The types of a tokenizer.json component and of the members of a ``Sequence``."""
    if not component:
        return []
    members = component.get("pretokenizers") or component.get("normalizers") or []
    return [component["type"], *(t for m in members for t in _component_types(m))]


def pre_tokenizer_name(spec: dict) -> str:
    """llama.cpp's name for the split a byte-level tokenizer applies before its merges.

    A ``Split`` regex is looked up in transformers' table of llama.cpp pre-tokenizer regexes (the same table
    that reads these files back); GPT-2's built-in regex is ``gpt-2``, or ``smollm`` behind a one-digit split.
    Anything else is ``default`` (llama.cpp warns and uses GPT-2's regex).
    """
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    pre = spec.get("pre_tokenizer") or {}
    members = pre.get("pretokenizers", [pre])
    splits = [m["pattern"].get("Regex") for m in members if m.get("type") == "Split"]
    if splits:
        names = [name for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items() if regex == splits[0]]
        return names[0] if len(splits) == 1 and names else "default"
    gpt2_regex = any(m.get("type") == "ByteLevel" and m.get("use_regex", True) for m in members)
    digits = any(m.get("type") == "Digits" and m.get("individual_digits") for m in members)
    if gpt2_regex:
        return "smollm" if digits else ("gpt-2" if len(members) == 1 else "default")
    return "default"


def _tokens_and_types(tokenizer: Any, spec: dict, n_vocab: int, where: str,
                      byte_level: bool) -> tuple[list[str], list[int]]:
    backend = tokenizer.backend_tokenizer
    size = backend.get_vocab_size(with_added_tokens=True)
    if size > n_vocab:
        raise ModelError(f"{where}: the tokenizer has {size} tokens but the model only {n_vocab} embedding rows")
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    unk = None if byte_level else tokenizer.unk_token  # SentencePiece types its <unk>; byte-level has no unknowns
    tokens, types = [], []
    for token_id in range(n_vocab):
        text = backend.id_to_token(token_id) if token_id < size else None
        if text is None:  # a hole in the ids, or an embedding row no token uses
            tokens.append(f"[PAD{token_id}]")
            types.append(UNUSED)
        else:
            tokens.append(text)
            types.append(_token_type(text, added.get(token_id), unk, byte_level))
    return tokens, types


def _token_type(text: str, added: dict | None, unk: str | None, byte_level: bool) -> int:
    if text == unk:
        return UNKNOWN
    if added is not None:
        return CONTROL if added["special"] else USER_DEFINED
    return BYTE if not byte_level and BYTE_TOKEN.fullmatch(text) else NORMAL


def _merge_text(merge: str | list[str], where: str) -> str:
    """tokenizer.json stores a merge as ``"a b"`` or (since tokenizers 0.20) as ``["a", "b"]``."""
    if isinstance(merge, str):
        return merge
    if any(" " in part for part in merge):
        raise ModelError(f"{where}: the merge {merge!r} holds a space, which GGUF's 'left right' merges cannot spell")
    return " ".join(merge)


def merge_scores(tokens: list[str], merges: list[str]) -> list[float]:
    """Score -r for the piece made by the merge of rank r (its first merge), 0 for every other token."""
    index = {token: i for i, token in enumerate(tokens)}
    scores = [0.0] * len(tokens)
    for rank in range(len(merges) - 1, -1, -1):  # the lowest rank is written last and wins
        token_id = index.get(merges[rank].replace(" ", "", 1))
        if token_id is not None:
            scores[token_id] = -float(rank)
    return scores


def _metaspace_prefix(spec: dict) -> bool:
    """Whether the tokenizer prepends ``▁`` to the text (SentencePiece's ``add_dummy_prefix``)."""
    for component in (spec.get("pre_tokenizer"), spec.get("normalizer")):
        members = (component or {}).get("pretokenizers") or (component or {}).get("normalizers") or [component or {}]
        for member in members:
            if member.get("type") == "Metaspace":
                return member.get("prepend_scheme", "always") != "never"
            if member.get("type") == "Prepend":
                return True
    return False


def _special_ids(tokenizer: Any) -> dict[str, int]:
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "unk": tokenizer.unk_token_id,
           "pad": tokenizer.pad_token_id}
    return {kind: int(token_id) for kind, token_id in ids.items() if token_id is not None}


def _added_specials(tokenizer: Any) -> tuple[bool, bool]:
    """Whether encoding a text adds BOS in front / EOS behind, as observed on a probe text."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    extra = len(full) - len(plain)
    bos = extra > 0 and tokenizer.bos_token_id is not None and full[0] == tokenizer.bos_token_id
    eos = extra > 0 and tokenizer.eos_token_id is not None and full[-1] == tokenizer.eos_token_id
    return bool(bos), bool(eos)


def _chat_template(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: llama.cpp reads the default one
        template = template.get("default")
    return template if isinstance(template, str) else None
