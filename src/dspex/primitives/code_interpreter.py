"""DSPy's ``dspy.primitives.code_interpreter``: the interpreter protocol code-running modules
(ProgramOfThought, CodeAct) program against, its errors and ``FinalOutput``.

Any object with ``start()``, ``execute(code, variables=None)`` and ``shutdown()`` is an
interpreter (a test double, a user's own); DSPEx's is
:class:`dspex.primitives.python_interpreter.PythonInterpreter`, the isolated sandbox of
:mod:`dspex.sandbox`. ``execute`` returns :class:`FinalOutput` when the code called
``SUBMIT(...)``, raises :class:`CodeExecutionError` when the code raised (recoverable) and
:class:`CodeInterpreterError` when the interpreter itself failed (terminal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from dspex import settings
from dspex.errors import CodeExecutionError, CodeInterpreterError
from dspex.sandbox.interpreter import FinalOutput

__all__ = [
    "SIMPLE_TYPES",
    "CodeExecutionError",
    "CodeInterpreter",
    "CodeInterpreterError",
    "FinalOutput",
    "resolve_interpreter_factory",
]

#: the value types that cross an interpreter boundary as themselves
SIMPLE_TYPES = (str, int, float, bool, list, dict, type(None))


@runtime_checkable
class CodeInterpreter(Protocol):
    """A stateful code execution session: ``start`` (optional, idempotent), ``execute``
    (state persists between calls), ``shutdown`` (the session is over)."""

    @property
    def tools(self) -> dict[str, Callable[..., Any]]:
        """Host functions the code may call by name."""
        ...

    def start(self) -> None: ...

    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any: ...

    def shutdown(self) -> None: ...


def resolve_interpreter_factory(
    interpreter_factory: Callable[[], Any] | None = None,
) -> Callable[[], Any]:
    """The factory a module uses: its own argument, else ``settings.interpreter_factory``,
    else :class:`~dspex.primitives.python_interpreter.PythonInterpreter` (the sandbox)."""
    if interpreter_factory is not None:
        if not callable(interpreter_factory):
            raise TypeError(
                "interpreter_factory must be a zero-argument callable that creates an "
                f"interpreter, not {type(interpreter_factory).__name__}."
            )
        return interpreter_factory
    configured: Callable[[], Any] | None = settings.current().interpreter_factory
    if configured is not None:
        return configured
    from dspex.primitives.python_interpreter import PythonInterpreter

    return PythonInterpreter
