"""Validation steps: check (and convert) state fields against a signature's field types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dspex.errors import StepValidationError
from dspex.pipelines.result import StepResult
from dspex.pipelines.runner import Frame, Run
from dspex.pipelines.steps import Step, missing_input

__all__ = ["ValidateStep"]


class ValidateStep(Step):
    """Every field of ``signature`` (inputs and outputs) present in the state must fit its type.

    Values are converted the way the adapters parse LM output (``"3"`` for an ``int`` field
    becomes ``3``; a JSON list text for ``list[str]`` becomes a list) and the converted values
    are written back. A required field that is absent raises ``StepInputMissing``; a value that
    does not fit raises ``StepValidationError`` naming the field and the expected type.
    """

    kind = "validate"

    def __init__(self, signature: Any, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        from dspex.adapters.values import annotation_allows_none, get_annotation_name
        from dspex.signatures import ensure_signature

        self.signature = ensure_signature(signature)
        self.checks: list[tuple[str, Any, str, bool]] = []
        for field_name, info in self.signature.fields.items():
            annotation = info.annotation
            required = info.is_required() and not annotation_allows_none(annotation)
            self.checks.append((field_name, annotation, get_annotation_name(annotation), required))

    async def execute(
        self,
        state: Mapping[str, Any],
        run: Run,
        frame: Frame,
        path: str,
        children: list[StepResult],
    ) -> dict[str, Any]:
        from dspex.adapters.values import parse_value

        converted: dict[str, Any] = {}
        for field_name, annotation, type_name, required in self.checks:
            if field_name not in state:
                if required:
                    raise missing_input(path, field_name, state)
                continue
            value = state[field_name]
            if annotation is None or (value is None and not required):
                continue
            try:
                converted[field_name] = parse_value(value, annotation)
            except (ValueError, TypeError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise StepValidationError(
                    f"step {path!r}: field {field_name!r} must be {type_name}, got "
                    f"{value!r:.80} ({reason})",
                    step=path,
                    field=field_name,
                    expected=type_name,
                    value=repr(value)[:80],
                ) from None
        return converted
