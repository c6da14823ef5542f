"""What a served program accepts and returns, derived once from its signature.

A program with a ``signature`` (``Predict``, ``ChainOfThought``, a module exposing one) gets
typed input and output fields; any other module gets its ``forward``/``aforward`` keyword
parameters as inputs (typed where annotated) and free-form outputs. From those fields come a
pydantic model that validates call inputs (its errors become HTTP 422) and the JSON schemas
published in ``/openapi.json``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import pydantic

from dspex.signatures import is_undefined

__all__ = ["FieldSpec", "ProgramSchema", "describe"]


@dataclass(frozen=True)
class FieldSpec:
    """One input or output field: its name, annotation, description and default."""

    name: str
    annotation: Any = Any
    desc: str | None = None
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class ProgramSchema:
    """A program's inputs and outputs; ``signature`` is its text form (or ``None``)."""

    inputs: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...] | None
    """``None`` when the program does not declare its outputs (any fields may come back)."""
    signature: str | None
    instructions: str | None
    open_inputs: bool = False
    """The program takes ``**kwargs``: extra input fields are passed through."""
    model: type[pydantic.BaseModel] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", _input_model(self.inputs, self.open_inputs))

    def validate(self, inputs: Any) -> dict[str, Any]:
        """The inputs as the program expects them; ``pydantic.ValidationError`` otherwise."""
        validated = self.model.model_validate(inputs)
        values = {name: getattr(validated, name) for name in type(validated).model_fields}
        extra = validated.model_extra or {}
        return {**values, **extra}

    def input_schema(self) -> dict[str, Any]:
        return self.model.model_json_schema()

    def output_schema(self) -> dict[str, Any]:
        if self.outputs is None:
            return {"type": "object", "additionalProperties": True}
        props = {f.name: _field_schema(f) for f in self.outputs}
        return {
            "type": "object",
            "properties": props,
            "required": [f.name for f in self.outputs],
        }

    def as_dict(self) -> dict[str, Any]:
        """The description ``GET /v1/programs`` gives."""
        return {
            "signature": self.signature,
            "instructions": self.instructions,
            "inputs": [_describe_field(f) for f in self.inputs],
            "outputs": None if self.outputs is None else [_describe_field(f) for f in self.outputs],
        }


def _type_name(annotation: Any) -> str:
    if annotation is Any:
        return "any"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _describe_field(spec: FieldSpec) -> dict[str, Any]:
    return {"name": spec.name, "type": _type_name(spec.annotation), "desc": spec.desc}


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    try:
        schema: dict[str, Any] = pydantic.TypeAdapter(spec.annotation).json_schema()
    except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError):
        schema = {}
    if spec.desc:
        schema["description"] = spec.desc
    return schema


def _input_model(inputs: tuple[FieldSpec, ...], open_inputs: bool) -> type[pydantic.BaseModel]:
    definitions: dict[str, Any] = {}
    for spec in inputs:
        info = pydantic.Field(
            ... if spec.required else spec.default,
            description=spec.desc,
        )
        annotation = spec.annotation
        try:
            pydantic.TypeAdapter(annotation)
        except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError):
            annotation = Any
        definitions[spec.name] = (annotation, info)
    config = pydantic.ConfigDict(
        extra="allow" if open_inputs else "forbid", arbitrary_types_allowed=True
    )
    model: type[pydantic.BaseModel] = pydantic.create_model(
        "Inputs", __config__=config, **definitions
    )
    return model


def _signature_fields(fields: dict[str, Any]) -> tuple[FieldSpec, ...]:
    out = []
    for name, info in fields.items():
        extra = getattr(info, "json_schema_extra", None) or {}
        desc = extra.get("desc")
        default = getattr(info, "default", None)
        required = is_undefined(default)
        out.append(
            FieldSpec(
                name,
                getattr(info, "annotation", None) or str,
                desc if isinstance(desc, str) and not desc.startswith("${") else None,
                required=bool(required),
                default=None if is_undefined(default) else default,
            )
        )
    return tuple(out)


def _parameters(method: Any) -> list[inspect.Parameter]:
    """The parameters with postponed (string) annotations resolved where possible."""
    try:
        return list(inspect.signature(method, eval_str=True).parameters.values())
    except (NameError, SyntaxError, AttributeError):
        return list(inspect.signature(method).parameters.values())


def _forward_fields(program: Any) -> tuple[tuple[FieldSpec, ...], bool]:
    from dspex.primitives.module import Module

    if isinstance(program, Module):
        cls = type(program)
        method = program.aforward if cls.aforward is not Module.aforward else program.forward
    else:
        method = getattr(program, "aforward", None) or getattr(program, "forward", program)
    try:
        params = _parameters(method)
    except (TypeError, ValueError):
        return (), True
    fields: list[FieldSpec] = []
    open_inputs = False
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            open_inputs = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            annotation = Any if p.annotation is p.empty else p.annotation
            if isinstance(annotation, str):  # postponed annotations we cannot resolve safely
                annotation = Any
            required = p.default is p.empty
            fields.append(
                FieldSpec(
                    p.name, annotation, required=required, default=None if required else p.default
                )
            )
    return tuple(fields), open_inputs


def describe(program: Any) -> ProgramSchema:
    """The schema of ``program`` (a dspex or DSPy module, or a pipeline)."""
    signature = getattr(program, "signature", None)
    input_fields = getattr(signature, "input_fields", None)
    output_fields = getattr(signature, "output_fields", None)
    if isinstance(input_fields, dict) and isinstance(output_fields, dict):
        return ProgramSchema(
            inputs=_signature_fields(input_fields),
            outputs=_signature_fields(output_fields),
            signature=str(getattr(signature, "signature", None) or signature),
            instructions=getattr(signature, "instructions", None),
        )
    inputs, open_inputs = _forward_fields(program)
    return ProgramSchema(
        inputs=inputs, outputs=None, signature=None, instructions=None, open_inputs=open_inputs
    )
