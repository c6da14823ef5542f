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
    "create_interpreter",
    "resolve_interpreter_factory",
    "validate_interpreter",
    "validate_interpreter_factory",
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


def validate_interpreter_factory(factory: Any, name: str = "interpreter_factory") -> None:
    """A module's ``interpreter_factory`` argument, checked without calling it (``None`` is
    "unset"): an interpreter object itself is refused (who would shut it down?), as is
    anything not callable."""
    if factory is None:
        return
    if not isinstance(factory, type) and isinstance(factory, CodeInterpreter):
        raise TypeError(
            f"{name} received an object that already implements CodeInterpreter, so its "
            "ownership is ambiguous. If this object also creates interpreters, pass a "
            "dedicated zero-argument creation callable instead."
        )
    if not callable(factory):
        raise TypeError(
            f"{name} must be a zero-argument callable that creates a CodeInterpreter, "
            f"not {type(factory).__name__}."
        )


def validate_interpreter(interpreter: Any) -> None:
    """A caller-owned interpreter must have the :class:`CodeInterpreter` shape."""
    if not isinstance(interpreter, CodeInterpreter):
        raise TypeError(
            f"interpreter must implement CodeInterpreter, not {type(interpreter).__name__}."
        )


def resolve_interpreter_factory(
    interpreter_factory: Callable[[], Any] | None = None,
) -> Callable[[], Any]:
    """The factory a module uses: its own argument, else ``settings.interpreter_factory``,
    else :class:`~dspex.primitives.python_interpreter.PythonInterpreter` (the sandbox).

    ``None`` and ``PythonInterpreter`` itself both mean "unset" (as in DSPy, where modules
    carry ``PythonInterpreter`` as their literal default), so a configured factory wins."""
    from dspex.primitives.python_interpreter import PythonInterpreter

    if interpreter_factory is not None and interpreter_factory is not PythonInterpreter:
        if not callable(interpreter_factory):
            raise TypeError(
                "interpreter_factory must be a zero-argument callable that creates an "
                f"interpreter, not {type(interpreter_factory).__name__}."
            )
        return interpreter_factory
    configured: Callable[[], Any] | None = settings.current().interpreter_factory
    if configured is not None:
        validate_interpreter_factory(configured, name="dspex.settings.interpreter_factory")
        return configured
    return PythonInterpreter


def create_interpreter(interpreter_factory: Callable[[], Any] | None = None) -> Any:
    """A new interpreter from the resolved factory, checked to be a :class:`CodeInterpreter`."""
    interpreter = resolve_interpreter_factory(interpreter_factory)()
    if not isinstance(interpreter, CodeInterpreter):
        raise TypeError(
            f"interpreter_factory must return a CodeInterpreter, not {type(interpreter).__name__}."
        )
    return interpreter
