"""JSON-schema constrained decoding for the ``hf_local`` teacher, on llguidance.

Why: a small local model asked for JSON often repeats the prompt's example object until
``max_tokens`` (SmolLM2-135M did, for every subject list). When the request's JSON schema is
compiled into a grammar and every sampled token must extend a string the grammar accepts, the
answer is schema-valid JSON unless ``max_tokens`` cuts it off.

Why llguidance (checked against transformers 5 on CPU): it is one small wheel with no Python
dependencies, the Rust engine that vLLM, SGLang, llama.cpp and OpenAI's own structured outputs
use; it reads a transformers fast tokenizer directly (byte-level BPE such as SmolLM2's or GPT-2's,
and SentencePiece with byte fallback) and computes a token mask in tens of microseconds.
``xgrammar`` pulls in triton, ``outlines`` several packages, ``lm-format-enforcer`` is pure Python
and slower per token. llguidance cannot model WordPiece tokenizers (BERT's): with those the
``auto`` setting decodes freely (see :class:`JSONSchemaDecoding`).

The grammar: ``grammar_from_json_schema`` with fixed separators ``", "`` and ``": "`` and no other
whitespace (``whitespace_flexible: false``), so a model cannot spend its tokens on blank lines.
llguidance writes object properties in the order the schema lists them.

Generation (:class:`JSONSchemaLogitsProcessor`, one per ``generate`` call): one ``LLMatcher`` per
batch row, ``None`` for rows whose request has no schema. At step ``t`` each live row's matcher
first consumes the token the row sampled at ``t - 1``; a row whose last token is an EOS id has
finished (transformers fills it with padding from then on) and is left alone. Then the masks of
all live rows are computed in parallel (``LLExecutor``) into a ``(batch, ceil(V / 32))`` int32
bitmask, and every logit whose bit is 0 becomes ``-inf``. EOS is allowed only where the grammar
accepts, and a row whose grammar is complete may only emit EOS, so it stops. Left padding does not
matter: matchers only ever see the tokens generated after the prompt. If ``max_tokens`` ends a row
mid-JSON its answer is truncated JSON (``finish_reason`` "length"), counted like any other.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import llguidance
import llguidance.hf
import llguidance.numpy
import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from adaptlab.teacher.base import TeacherError

GRAMMAR_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
CONSTRAINED_HINT = "set teacher.constrained: off to decode without the schema"


@dataclass
class ConstraintTimer:
    """Time spent on constraints (mask computation, application, token consumption) and steps taken."""

    seconds: float = 0.0
    steps: int = 0


class JSONSchemaDecoding:
    """Compiles JSON schemas for one tokenizer and builds the logits processor of a batch.

    Building the llguidance tokenizer takes about 0.3 s for a 49k vocabulary, so it happens once
    per teacher; compiled grammars are cached by the schema's canonical JSON.
    ``vocab_size`` is the model's logits width, which may exceed the tokenizer's vocabulary.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, eos_ids: set[int], vocab_size: int):
        try:
            self.ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=sorted(eos_ids))
        except (ValueError, TypeError) as exc:
            raise UnsupportedTokenizer(str(exc)) from None
        self.vocab_size = vocab_size
        self.eos_ids = frozenset(eos_ids)
        self.executor = llguidance.LLExecutor()
        self.timer = ConstraintTimer()
        self._grammars: dict[str, str] = {}

    def grammar(self, schema: dict[str, Any], where: str) -> str:
        """The llguidance grammar of ``schema``; :class:`TeacherError` naming ``where`` if it cannot compile."""
        canonical = json.dumps(schema, ensure_ascii=False)  # key order kept: it is the order llguidance enforces
        if canonical not in self._grammars:
            try:
                grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=GRAMMAR_OPTIONS)
                is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.ll_tokenizer)
            except ValueError as exc:
                is_error, messages = True, [str(exc)]
            if is_error:
                problem = " ".join(" ".join(messages).split())[:300]
                raise TeacherError(
                    f"the JSON schema of {where} cannot be compiled for constrained decoding: {problem}. "
                    f"Simplify that schema (llguidance supports most of JSON Schema, but not e.g. look-around in "
                    f"'pattern'), or {CONSTRAINED_HINT}."
                )
            self._grammars[canonical] = grammar
        return self._grammars[canonical]

    def logits_processor(self, grammars: list[str | None]) -> JSONSchemaLogitsProcessor:
        matchers = [None if g is None else llguidance.LLMatcher(self.ll_tokenizer, g, log_level=0) for g in grammars]
        return JSONSchemaLogitsProcessor(matchers, self.eos_ids, self.vocab_size, self.executor, self.timer)


class UnsupportedTokenizer(Exception):
    """llguidance cannot read this tokenizer (e.g. WordPiece); the message says why."""


@dataclass
class JSONSchemaLogitsProcessor(LogitsProcessor):
    """Masks each row's logits to the tokens its grammar allows next (see the module docstring)."""

    matchers: list[llguidance.LLMatcher | None]
    eos_ids: frozenset[int]
    vocab_size: int
    executor: llguidance.LLExecutor
    timer: ConstraintTimer
    _finished: set[int] = field(default_factory=set)
    _first_step: bool = True

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        started = time.perf_counter()
        live = []
        for row, matcher in enumerate(self.matchers):
            if matcher is None or row in self._finished:
                continue
            if not self._first_step:
                token = int(input_ids[row, -1])
                if token in self.eos_ids:
                    self._finished.add(row)
                    continue
                if not matcher.consume_token(token):
                    raise TeacherError(f"constrained decoding lost the grammar in batch row {row} at token {token}: "
                                       f"{matcher.get_error()}; {CONSTRAINED_HINT}")
            live.append(row)
        self._first_step = False
        if live:
            bitmask = llguidance.numpy.allocate_token_bitmask(len(self.matchers), self.vocab_size)
            llguidance.numpy.fill_next_token_bitmask_par(self.executor, [(self.matchers[r], r) for r in live], bitmask)
            allowed = _unpack_bits(torch.from_numpy(bitmask[live]), scores.shape[-1]).to(scores.device)
            rows = torch.tensor(live, device=scores.device)
            scores[rows] = scores[rows].masked_fill(~allowed, float("-inf"))
        self.timer.seconds += time.perf_counter() - started
        self.timer.steps += 1
        return scores


_BIT_SHIFTS = torch.arange(32, dtype=torch.int32)


def _unpack_bits(bitmask: torch.Tensor, width: int) -> torch.Tensor:
    """``(rows, ceil(V / 32))`` int32 words -> ``(rows, width)`` bools, bit ``i % 32`` of word ``i // 32``."""
    bits = (bitmask.unsqueeze(-1) >> _BIT_SHIFTS) & 1
    return bits.reshape(bitmask.shape[0], -1)[:, :width].bool()


def tokenizer_support(tokenizer: PreTrainedTokenizerBase, eos_ids: set[int], vocab_size: int
                      ) -> tuple[JSONSchemaDecoding | None, str]:
    """``(decoding, "")`` when llguidance can read the tokenizer, else ``(None, reason)``."""
    try:
        return JSONSchemaDecoding(tokenizer, eos_ids, vocab_size), ""
    except UnsupportedTokenizer as exc:
        return None, str(exc)

