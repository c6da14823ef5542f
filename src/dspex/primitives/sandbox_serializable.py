"""Values a code sandbox can receive (DSPy's ``dspy.primitives.sandbox_serializable`` path).

A :class:`SandboxSerializable` subclass says how one of its values enters a sandboxed REPL
(setup statements, the bytes shipped, the code that rebuilds it there) and how the model
sees it (a short preview). Subclasses work as signature field annotations: the pydantic
hook passes values through unchanged and serializes them with ``str``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema

    from dspex.primitives.repl_types import REPLVariable

__all__ = ["SandboxSerializable", "build_repl_variable"]


class SandboxSerializable(ABC):
    """Base of values injectable into a sandboxed REPL; nominal (subclass it)."""

    @abstractmethod
    def sandbox_setup(self) -> str:
        """Statements (usually imports) run once in the sandbox; also shown to the model."""

    @abstractmethod
    def to_sandbox(self) -> bytes:
        """The value's payload as shipped into the sandbox."""

    @abstractmethod
    def sandbox_assignment(self, var_name: str, data_expr: str) -> str:
        """Code binding ``var_name`` to the value rebuilt from the expression ``data_expr``."""

    @abstractmethod
    def rlm_preview(self, max_chars: int = 500) -> str:
        """A short description of the value for the model."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source_type: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            _same,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    def to_repl_variable(self, name: str, field_info: Any = None) -> REPLVariable:
        """This value as a REPL variable (see :func:`build_repl_variable`)."""
        return build_repl_variable(self, name, field_info=field_info)


def _same(value: Any) -> Any:
    return value


def build_repl_variable(
    obj: SandboxSerializable, name: str, field_info: Any = None
) -> REPLVariable:
    """``obj`` bound as ``name``: previewed by its ``rlm_preview()``, its setup statements
    appended to the description so the model knows which names the sandbox binds."""
    from dspex.primitives.repl_types import REPLVariable

    preview = obj.rlm_preview()
    variable = REPLVariable.from_value(name, obj, field_info=field_info)
    desc = variable.desc
    setup = obj.sandbox_setup().strip()
    if setup:
        note = f"Sandbox imports available:\n{setup}"
        desc = f"{desc}\n{note}" if desc else note
    return variable.model_copy(
        update={"preview": preview, "total_length": len(preview), "desc": desc}
    )
