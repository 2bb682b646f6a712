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
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonschema
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
