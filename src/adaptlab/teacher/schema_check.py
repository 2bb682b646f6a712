"""Is a teacher's answer schema-valid JSON? Checked with ``jsonschema``, the reference validator.

A request's JSON schema is a promise only a constrained decoder or a server that honours
``response_format`` keeps; some servers accept the field and ignore it (``transformers serve``
5.x logs "Ignoring unsupported fields in the request: {'response_format'}"). So every answer to a
request with a schema is checked here, whatever the backend, and the runner counts the results.

An answer is *schema-valid* when its whole text (surrounding whitespace aside) is one JSON
document that validates against the schema (JSON Schema draft 2020-12 unless the schema's
``$schema`` says otherwise). Prose or Markdown fences around the JSON make it invalid here even
though :func:`~adaptlab.teacher.jsonparse.extract_json` may still recover the value: validity
measures whether the structure was enforced, the lenient parser decides what the pipeline can use.

An answer cut off at ``max_tokens`` cannot be valid, but it can still be *on track*: a prefix of
some schema-valid document. :func:`is_schema_prefix` decides that with llguidance's grammar for the
schema run over the answer's bytes (a 256-token byte vocabulary), so a runner can tell a server
that honoured the schema but ran out of tokens from one that ignored it. The grammar is
llguidance's reading of the schema: keys in the schema's order (what schema-enforcing servers emit),
any JSON whitespace.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonschema
import llguidance
from jsonschema.exceptions import best_match

from adaptlab.teacher.base import TeacherError


def check_schema(schema: dict[str, Any], where: str) -> None:
    """Raise :class:`TeacherError` naming ``where`` unless ``schema`` is a valid JSON Schema."""
    try:
        _validator(json.dumps(schema, sort_keys=True))
    except jsonschema.SchemaError as exc:
        raise TeacherError(f"the JSON schema of {where} is not a valid JSON Schema: {exc.message} "
                           f"(at {'/'.join(map(str, exc.path)) or 'the top level'})") from None


def schema_problem(text: str, schema: dict[str, Any]) -> str | None:
    """Why ``text`` is not one JSON document valid under ``schema``, or ``None`` when it is."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        reason = "empty answer" if not text.strip() else f"not one JSON document ({getattr(exc, 'msg', exc)})"
        return reason
    error = best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(value))
    if error is None:
        return None
    where = "/".join(map(str, error.absolute_path)) or "top level"
    message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    return f"{message} (at {where})"


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_json)
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator_class.check_schema(schema)
    return validator_class(schema)


def is_schema_prefix(text: str, schema: dict[str, Any]) -> bool:
    """True when ``text`` can still be continued into a document valid under ``schema``.

    Leading whitespace and a trailing U+FFFD (a multi-byte character cut by ``max_tokens``) are ignored.
    """
    data = text.lstrip().rstrip("\ufffd").encode("utf-8")
    # not sort_keys: the order of "properties" is the order the grammar enforces
    matcher = llguidance.LLMatcher(_byte_tokenizer(), _prefix_grammar(json.dumps(schema)), log_level=0)
    return not matcher.is_error() and matcher.consume_tokens(list(data))


class _Bytes:
    """One token per byte value, and an end token: the vocabulary llguidance checks raw text with."""

    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([value]) for value in range(256)] + [b"</s>"]
    special_token_ids = [256]

    def __call__(self, text: str | bytes) -> list[int]:
        return list(text if isinstance(text, bytes) else text.encode("utf-8"))


@lru_cache(maxsize=1)
def _byte_tokenizer() -> llguidance.LLTokenizer:
    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes()), slices=[])


@lru_cache(maxsize=64)
def _prefix_grammar(schema_json: str) -> str:
    return llguidance.LLMatcher.grammar_from_json_schema(
        schema_json, overrides={"json_allow_general_unicode_escapes": True})
