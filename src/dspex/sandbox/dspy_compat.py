"""The sandbox as a DSPy ``CodeInterpreter`` (what the DSPy worker installs when opted in).

DSPy's code-running modules (ProgramOfThought, CodeAct, RLM) retry on
``CodeExecutionError`` (the code raised) and ``SyntaxError``; every other sandbox failure
(timeout, memory, violation) is a terminal, typed :class:`~dspex.errors.SandboxError` that
propagates to the caller as itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dspex.errors import SandboxCodeError
from dspex.sandbox.interpreter import FinalOutput, PythonSandbox

__all__ = ["DSPySandbox", "sandbox_interpreter_factory"]


class DSPySandbox(PythonSandbox):
    """:class:`PythonSandbox` answering with DSPy's ``FinalOutput`` and ``CodeExecutionError``."""

    def execute(self, code: str, variables: Mapping[str, Any] | None = None) -> Any:
        from dspy.primitives.code_interpreter import CodeExecutionError
        from dspy.primitives.code_interpreter import FinalOutput as DSPyFinalOutput

        try:
            result = super().execute(code, variables)
        except SandboxCodeError as exc:
            raise CodeExecutionError(
                f"{exc.fields.get('type')}: {exc.fields.get('detail')}"
            ) from exc
        if isinstance(result, FinalOutput):
            return DSPyFinalOutput(result.output)
        return result


def sandbox_interpreter_factory(**limits: Any) -> Callable[[], DSPySandbox]:
    """A zero-argument factory of sandboxes (``dspy.configure(interpreter_factory=...)``)."""

    def factory() -> DSPySandbox:
        return DSPySandbox(**limits)

    factory.__name__ = factory.__qualname__ = "dspex_sandbox"
    return factory
