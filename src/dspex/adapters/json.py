"""``JSONAdapter``: the LM answers with one JSON object holding the output fields."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dspex.adapters.chat import ChatAdapter, _type_info
from dspex.adapters.structured import response_format
from dspex.adapters.values import (
    _json_repair_loads,
    parse_error,
    parse_fields,
    serialize_for_json,
    sign_parse_error,
    translate_field_type,
)
from dspex.errors import AdapterParseError

__all__ = ["JSONAdapter"]


class JSONAdapter(ChatAdapter):
    """Inputs in ``[[ ## field ## ]]`` sections, outputs as a JSON object.

    ``response_format`` is chosen per model and signature as DSPy 3.4.1 does (none, JSON mode,
    or a strict JSON schema: see :mod:`dspex.adapters.structured`). Native function calling is on by default, as in DSPy.
    """

    def __init__(
        self,
        callbacks: list[Any] | None = None,
        use_native_function_calling: bool = True,
        parallel_tool_calls: bool | None = None,
    ) -> None:
        super().__init__(
            callbacks=callbacks,
            use_native_function_calling=use_native_function_calling,
            use_json_adapter_fallback=False,
            parallel_tool_calls=parallel_tool_calls,
        )

    def prepare_lm_kwargs(
        self, lm_kwargs: dict[str, Any], signature: Any, lm: Any = None
    ) -> dict[str, Any]:
        fmt = response_format(lm, signature, self.use_native_function_calling)
        if fmt is not None:  # as DSPy: the chosen format replaces one given in the options
            lm_kwargs["response_format"] = fmt
        return lm_kwargs

    def format_field_structure(self, signature: Any) -> str:
        parts = [
            "All interactions will be structured in the following way, with the appropriate values filled in.",
            "Inputs will have the following structure:",
            self._structure(signature._input_fields),
            "Outputs will be a JSON object with the following fields.",
            json.dumps(
                {n: translate_field_type(n, f) for n, f in signature._output_fields.items()},
                indent=2,
                ensure_ascii=False,
            ),
        ]
        return "\n\n".join(parts).strip()

    def user_message_output_requirements(self, signature: Any) -> str:
        key = "json.requirements"
        cached: str | None = signature._cache.get(key)
        if cached is None:
            order = ", then ".join(
                f"`{f}`{_type_info(v)}" for f, v in signature._output_fields.items()
            )
            cached = f"Respond with a JSON object in the following order of fields: {order}."
            signature._cache[key] = cached
        return cached

    def format_assistant_message_content(
        self, signature: Any, outputs: Mapping[str, Any], missing_field_message: str | None = None
    ) -> str:
        values = {n: outputs.get(n, missing_field_message) for n in signature._output_fields}
        return json.dumps(serialize_for_json(values), indent=2, ensure_ascii=False)

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        try:
            return self._parse(signature, completion)
        except AdapterParseError as exc:
            sign_parse_error(exc, signature)
            raise

    def _parse(self, signature: Any, completion: str) -> dict[str, Any]:
        fields = _json_repair_loads(completion)
        if not isinstance(fields, dict):
            found = _first_json_object(completion)
            if found is not None:
                completion = found
                fields = _json_repair_loads(completion)
        outputs = signature._output_fields
        if not isinstance(fields, dict):
            raise parse_error(
                "JSONAdapter",
                completion,
                outputs,
                message="LM response cannot be serialized to a JSON object.",
            )
        return parse_fields("JSONAdapter", outputs, fields.items(), completion)


def _first_json_object(text: str) -> str | None:
    """The first balanced ``{...}`` in ``text`` (DSPy uses a recursive regex for this)."""
    start = text.find("{")
    while start != -1:
        depth = 0
        in_string = False
        escaped = False
        for i in range(start, len(text)):
            ch = text[i]
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start : i + 1]
        start = text.find("{", start + 1)
    return None
