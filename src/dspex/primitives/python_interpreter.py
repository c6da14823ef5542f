"""DSPy's ``dspy.primitives.python_interpreter``: ``PythonInterpreter`` on DSPEx's sandbox.

DSPy runs generated code in Deno/Pyodide; DSPEx runs it in :class:`dspex.sandbox.PythonSandbox`
(bubblewrap: no network, no host files, no host environment, bounded memory, CPU, processes
and time; see ``docs/security.md``). The interface is DSPy's (``start``/``execute``/
``shutdown``, ``tools``, ``output_fields``, ``SUBMIT``) and so are the errors: the code
raising is a :class:`~dspex.errors.CodeExecutionError` (recoverable), the interpreter
failing (timeout, memory, a dead process, use after ``shutdown``) a
:class:`~dspex.errors.CodeInterpreterError` whose ``__cause__`` is the typed sandbox error.

Callbacks are DSPy's: ``start``, ``execute``, ``shutdown`` and ``invoke_tool`` fire the
``on_interpreter_startup/execute/shutdown/tool_call_*`` hooks of the global callbacks and the
interpreter's own ``callbacks`` (a lazy start nests inside the first ``execute``; every
``shutdown`` call fires, even a repeated one). A tool call from the sandboxed code goes
through DSPy's path: ``_handle_tool_call`` (a JSON-RPC request) -> ``invoke_tool`` (the
callbacks see the tool's raw result, or its exception, before any conversion) -> the
JSON-RPC response written with ``_write_message``, which hands it to the sandbox; the code
sees a tool's exception as ``RuntimeError("<Type>: <message>")`` as under DSPy.

DSPy's grants of host access (``enable_read_paths``, ``enable_write_paths``,
``enable_env_vars``, ``enable_network_access``) have no equivalent: the sandbox never opens
them, so asking for one is a :class:`~dspex.errors.ConfigurationError` rather than a silent
no-op.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import threading
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
from dspex.utils.callback import with_callbacks

__all__ = ["FinalOutput", "PythonInterpreter"]

_HOST_GRANTS = (
    "enable_read_paths",
    "enable_write_paths",
    "enable_env_vars",
    "enable_network_access",
)

#: DSPy's JSON-RPC application error codes (a tool's exception type -> the response's code)
JSONRPC_APP_ERRORS = {
    "SyntaxError": -32000,
    "NameError": -32001,
    "TypeError": -32002,
    "ValueError": -32003,
    "AttributeError": -32004,
    "IndexError": -32005,
    "KeyError": -32006,
    "RuntimeError": -32007,
    "CodeInterpreterError": -32008,
    "Unknown": -32099,
}


def _jsonrpc_result(result: Any, request_id: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "result": result, "id": request_id})


def _jsonrpc_error(exc: BaseException, request_id: Any) -> str:
    kind = type(exc).__name__
    code = JSONRPC_APP_ERRORS.get(kind, JSONRPC_APP_ERRORS["Unknown"])
    error = {"code": code, "message": str(exc), "data": {"type": kind}}
    return json.dumps({"jsonrpc": "2.0", "error": error, "id": request_id})


def _plain(value: Any) -> Any:
    """A tool's result as JSON-ready values where it has an obvious form (pydantic models,
    dataclasses, named tuples, containers of them); anything else is left as it is."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return _plain(dump(mode="json"))
        except Exception as exc:  # pydantic's serialization error
            raise CodeInterpreterError(
                f"Unable to serialize {type(value).__name__} as JSON: {exc}"
            ) from exc
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return _plain(value._asdict())
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    try:
        from pydantic_core import to_jsonable_python

        return to_jsonable_python(value)
    except Exception:
        return value


def _tool_response(result: Any, request_id: Any) -> str:
    """DSPy's success response: strings (and ``None``, as ``""``) as ``string``, anything
    JSON-serializable as ``json``, the rest as its ``str``."""
    result = _plain(result)
    if result is None or isinstance(result, str):
        value = "" if result is None else result
        return _jsonrpc_result({"value": value, "type": "string"}, request_id)
    try:
        return _jsonrpc_result(
            {"value": json.dumps(result, allow_nan=False), "type": "json"}, request_id
        )
    except (TypeError, ValueError):
        return _jsonrpc_result({"value": str(result), "type": "string"}, request_id)


def _keyword_arguments(
    tool: Callable[..., Any] | None, args: Sequence[Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Positional arguments from the code, named by the tool's parameters (DSPy's sandbox
    names them from the registered signature before calling the host)."""
    if not args or tool is None:
        return kwargs
    try:
        parameters = list(inspect.signature(tool).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(args) > len(named):
        raise TypeError(
            f"tool takes {len(named)} positional argument(s) but {len(args)} were given"
        )
    for name, value in zip(named, args, strict=False):
        if name in kwargs:
            raise TypeError(f"tool got multiple values for argument {name!r}")
        kwargs[name] = value
    return kwargs


class PythonInterpreter(PythonSandbox):
    """DSPy's ``PythonInterpreter`` arguments over the isolated sandbox.

    ``deno_command`` and ``sync_files`` are accepted and unused (there is no Deno; nothing is
    mounted to sync); ``callbacks`` are this interpreter's own callback handlers. The sandbox's own bounds (``timeout``, ``memory_mb``,
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
        self.callbacks: list[Any] = list(callbacks or [])
        self._tool_thread: int | None = None
        """The thread running one of this interpreter's tools right now, if any."""
        self._tool_calls = 0

    @with_callbacks
    def start(self) -> None:
        """Start the sandbox (idempotent; ``execute`` starts it lazily on first use)."""
        if self._ended:
            raise CodeInterpreterError("PythonInterpreter has been shutdown")
        try:
            super().start()
        except SandboxError as exc:
            raise CodeInterpreterError(f"PythonInterpreter failed to start: {exc}") from exc

    @with_callbacks
    def execute(self, code: str, variables: Mapping[str, Any] | None = None) -> Any:
        """Run ``code``: its value or printed output, or :class:`FinalOutput` after SUBMIT."""
        if self._tool_thread == threading.get_ident():
            raise CodeInterpreterError(
                "PythonInterpreter cannot execute recursively from one of its tools."
            )
        if self._ended:
            raise CodeInterpreterError("PythonInterpreter has been shutdown")
        try:
            return super().execute(code, variables)
        except SandboxCodeError as exc:
            raise CodeExecutionError(str(exc), type=exc.fields.get("type")) from exc
        except SandboxError as exc:
            raise CodeInterpreterError(f"PythonInterpreter failed: {exc}") from exc

    @with_callbacks
    def shutdown(self) -> None:
        """End the session (idempotent; callbacks see every call)."""
        super().shutdown()

    @with_callbacks
    def invoke_tool(self, tool_name: str, kwargs: dict[str, Any]) -> Any:
        """Call the host tool ``tool_name`` with ``kwargs``: its raw result, or its exception
        (an unknown name is a :class:`~dspex.errors.CodeInterpreterError`)."""
        if tool_name not in self.tools:
            raise CodeInterpreterError(f"Unknown tool: {tool_name}")
        result = self.tools[tool_name](**kwargs)
        if asyncio.iscoroutine(result):
            from dspex._sync import run_sync

            return run_sync(result)
        return result

    def __enter__(self) -> PythonInterpreter:
        return self

    # ------------------------------------------------------------------ tool calls (DSPy's path)
    def _serve_tool(self, call: dict[str, Any]) -> None:
        """A tool call from the sandboxed code, as DSPy's JSON-RPC ``tool_call`` request."""
        self._tool_calls += 1
        request_id = f"tc_{self._tool_calls}"
        name = call.get("name")
        try:
            kwargs = _keyword_arguments(
                self.tools.get(name) if isinstance(name, str) else None,
                call.get("args") or [],
                dict(call.get("kwargs") or {}),
            )
        except TypeError as exc:
            self._write_message(_jsonrpc_error(exc, request_id), "while returning a tool result")
            return
        params = {"name": name, "kwargs": kwargs}
        self._handle_tool_call({"jsonrpc": "2.0", "method": "tool_call", "params": params, "id": request_id})  # fmt: skip

    def _handle_tool_call(self, request: dict[str, Any]) -> None:
        """Run one JSON-RPC tool call through :meth:`invoke_tool` and write the response (the
        tool's exception becomes a JSON-RPC error naming its type)."""
        request_id = request["id"]
        params = request.get("params", {})
        try:
            self._tool_thread = threading.get_ident()
            try:
                result = self.invoke_tool(params.get("name"), params.get("kwargs", {}))
            finally:
                self._tool_thread = None
            response = _tool_response(result, request_id)
        except Exception as exc:
            response = _jsonrpc_error(exc, request_id)
        self._write_message(response, "while returning a tool result")

    def _write_message(self, message: str, context: str) -> None:
        """Hand a JSON-RPC tool response to the sandboxed code (as the sandbox's own message:
        the value, or the error the code raises as ``RuntimeError``)."""
        response = json.loads(message)
        error = response.get("error")
        if error is not None:
            kind = (error.get("data") or {}).get("type") or "ToolError"
            reply = {"op": "tool_result", "ok": False, "value": f"{kind}: {error.get('message')}"}
        else:
            result = response.get("result") or {}
            value = result.get("value")
            if result.get("type") == "json":
                value = json.loads(str(value))
            reply = {"op": "tool_result", "ok": True, "value": value}
        if self._proc is None:
            raise CodeInterpreterError(
                f"PythonInterpreter stopped {context}; interpreter state was lost"
            )
        self._send(reply)
