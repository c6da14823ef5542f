"""JSONAdapter's ``response_format``, as DSPy 3.4.1 (through litellm) puts it on the wire.

- the model does not take ``response_format``: none is sent;
- an open-ended ``dict`` output, a ``ToolCalls`` output without native function calling, or a
  model without structured outputs: ``{"type": "json_object"}``;
- otherwise a strict JSON schema of the output fields (every object lists all its properties
  as required and forbids others; ``default: null`` is dropped), named ``DSPyProgramOutputs``;
  if no schema can be built, JSON mode again.
"""

from __future__ import annotations

import logging
from typing import Any, get_origin

from dspex.adapters.capabilities import capabilities

__all__ = ["response_format"]

logger = logging.getLogger(__name__)
_JSON_MODE = {"type": "json_object"}


def _has_open_mapping(signature: Any) -> bool:
    return any(get_origin(f.annotation) is dict for f in signature._output_fields.values())


def response_format(lm: Any, signature: Any, use_native_function_calling: bool) -> Any:
    """The ``response_format`` to send, or ``None`` for none."""
    caps = capabilities(lm)
    if not caps.response_format:
        return None
    from dspex.adapters.native import tool_fields

    has_tool_calls = tool_fields(signature)[1] is not None
    if (
        _has_open_mapping(signature)
        or (has_tool_calls and not use_native_function_calling)
        or not caps.response_schema
    ):
        return dict(_JSON_MODE)
    import pydantic

    try:
        schema = _output_schema(signature, use_native_function_calling)
    except (
        ValueError,
        TypeError,
        pydantic.PydanticInvalidForJsonSchema,
        pydantic.PydanticSchemaGenerationError,
    ):
        logger.warning(
            "Failed to build structured output schema; using JSON mode before execution."
        )
        return dict(_JSON_MODE)
    return {
        "type": "json_schema",
        "json_schema": {"name": "DSPyProgramOutputs", "schema": schema, "strict": True},
    }


def _output_schema(signature: Any, use_native_function_calling: bool) -> dict[str, Any]:
    import pydantic

    from dspex.adapters.native import tool_fields
    from dspex.signatures.field import is_undefined

    tool_output = tool_fields(signature)[1]
    fields: dict[str, Any] = {}
    for name, info in signature._output_fields.items():
        if use_native_function_calling and name == tool_output:
            continue
        default = ... if is_undefined(info.default) else info.default
        fields[name] = (info.annotation, default)
    model = pydantic.create_model(
        "DSPyProgramOutputs", __config__=pydantic.ConfigDict(extra="forbid"), **fields
    )
    schema: dict[str, Any] = model.model_json_schema()
    for prop in schema.get("properties", {}).values():
        prop.pop("json_schema_extra", None)
    _require_all(schema)
    return _strict(schema, schema)


def _require_all(part: dict[str, Any]) -> None:
    """Every object requires all its properties and allows no others (DSPy's pass)."""
    if part.get("type") == "object":
        props = part.get("properties")
        if props is not None:
            part["required"] = list(props)
            part["additionalProperties"] = False
            for sub in props.values():
                if isinstance(sub, dict):
                    _require_all(sub)
        else:
            part["properties"] = {}
            part["required"] = []
            part["additionalProperties"] = False
    if part.get("type") == "array" and isinstance(part.get("items"), dict):
        _require_all(part["items"])
    for key in ("$defs", "definitions"):
        for sub in part.get(key, {}).values():
            _require_all(sub)


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = root
    for key in ref.removeprefix("#/").split("/"):
        node = node[key]
    return dict(node)


def _strict(part: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """The strict-mode pass the OpenAI client applies to a pydantic schema (in place)."""
    for key in ("$defs", "definitions"):
        defs = part.get(key)
        if isinstance(defs, dict):
            for sub in defs.values():
                _strict(sub, root)
    if part.get("type") == "object" and "additionalProperties" not in part:
        part["additionalProperties"] = False
    props = part.get("properties")
    if isinstance(props, dict):
        part["required"] = list(props)
        part["properties"] = {k: _strict(v, root) for k, v in props.items()}
    items = part.get("items")
    if isinstance(items, dict):
        part["items"] = _strict(items, root)
    any_of = part.get("anyOf")
    if isinstance(any_of, list):
        part["anyOf"] = [_strict(v, root) for v in any_of]
    all_of = part.get("allOf")
    if isinstance(all_of, list):
        if len(all_of) == 1:
            part.update(_strict(all_of[0], root))
            part.pop("allOf")
        else:
            part["allOf"] = [_strict(v, root) for v in all_of]
    if part.get("default", 0) is None:
        part.pop("default")
    ref = part.get("$ref")
    if ref and len(part) > 1:
        resolved = _resolve(root, ref)
        part.update({**resolved, **part})
        part.pop("$ref")
        return _strict(part, root)
    return part
