"""DSPy's ``dspy.primitives.python_interpreter``: ``PythonInterpreter`` on DSPEx's sandbox.

DSPy runs generated code in Deno/Pyodide; DSPEx runs it in :class:`dspex.sandbox.PythonSandbox`
(bubblewrap: no network, no host files, no host environment, bounded memory, CPU, processes
and time; see ``docs/security.md``). The interface is DSPy's (``start``/``execute``/
``shutdown``, ``tools``, ``output_fields``, ``SUBMIT``) and so are the errors: the code
raising is a :class:`~dspex.errors.CodeExecutionError` (recoverable), the interpreter
failing (timeout, memory, a dead process, use after ``shutdown``) a
:class:`~dspex.errors.CodeInterpreterError` whose ``__cause__`` is the typed sandbox error.

DSPy's grants of host access (``enable_read_paths``, ``enable_write_paths``,
``enable_env_vars``, ``enable_network_access``) have no equivalent: the sandbox never opens
them, so asking for one is a :class:`~dspex.errors.ConfigurationError` rather than a silent
no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.errors import (
    CodeExecutionError,
    CodeInterpreterError,
    ConfigurationError,
    SandboxCodeError,
    SandboxError,
)
from dspex.sandbox.interpreter import FinalOutput, PythonSandbox

__all__ = ["FinalOutput", "PythonInterpreter"]

_HOST_GRANTS = (
    "enable_read_paths",
    "enable_write_paths",
    "enable_env_vars",
    "enable_network_access",
)


class PythonInterpreter(PythonSandbox):
    """DSPy's ``PythonInterpreter`` arguments over the isolated sandbox.

    ``deno_command``, ``sync_files`` and ``callbacks`` are accepted and unused (there is no
    Deno; nothing is mounted to sync). The sandbox's own bounds (``timeout``, ``memory_mb``,
    ...) are keyword arguments as in :class:`~dspex.sandbox.PythonSandbox`.
    """

    def __init__(
        self,
        deno_command: list[str] | None = None,
        enable_read_paths: Sequence[Any] | None = None,
        enable_write_paths: Sequence[Any] | None = None,
        enable_env_vars: Sequence[str] | None = None,
        enable_network_access: Sequence[str] | None = None,
        sync_files: bool = True,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        output_fields: list[Any] | None = None,
        callbacks: list[Any] | None = None,
        **limits: Any,
    ) -> None:
        grants = dict(zip(_HOST_GRANTS, (enable_read_paths, enable_write_paths, enable_env_vars, enable_network_access), strict=True))  # fmt: skip
        asked = [name for name, value in grants.items() if value]
        if asked:
            raise ConfigurationError(
                f"PythonInterpreter cannot grant {', '.join(asked)}: DSPEx's sandbox gives "
                "generated code no host files, environment or network (docs/security.md); pass "
                "data in as variables or tools instead"
            )
        super().__init__(tools=tools, output_fields=output_fields, **limits)
        self.deno_command = deno_command
        self.deno_process = None  # DSPy's attribute: there is never a Deno process here

    def start(self) -> None:
        if self._ended:
            raise CodeInterpreterError("PythonInterpreter has been shutdown")
        try:
            super().start()
        except SandboxError as exc:
            raise CodeInterpreterError(f"PythonInterpreter failed to start: {exc}") from exc

    def execute(self, code: str, variables: Mapping[str, Any] | None = None) -> Any:
        if self._ended:
            raise CodeInterpreterError("PythonInterpreter has been shutdown")
        try:
            return super().execute(code, variables)
        except SandboxCodeError as exc:
            raise CodeExecutionError(str(exc), type=exc.fields.get("type")) from exc
        except SandboxError as exc:
            raise CodeInterpreterError(f"PythonInterpreter failed: {exc}") from exc

    def __enter__(self) -> PythonInterpreter:
        return self
