"""``PythonSandbox``: run LM-generated Python in an isolated, resource-bounded process.

Used like DSPy's ``PythonInterpreter`` (what ``ProgramOfThought``, ``CodeAct`` and ``RLM``
call): ``sandbox(code, variables=None)`` runs ``code`` and returns the value of its last
expression, else what it printed, or :class:`FinalOutput` when it called ``SUBMIT(...)``.
State persists across calls of one sandbox until :meth:`PythonSandbox.shutdown`.

Errors, all :class:`~dspex.errors.SandboxError` subclasses except a plain ``SyntaxError``
for code that does not parse (as DSPy): the code's own exception is a
:class:`~dspex.errors.SandboxCodeError` (the session stays usable); a timeout kills the whole
process tree (:class:`~dspex.errors.SandboxTimeout`); the memory cap
(:class:`~dspex.errors.SandboxMemoryError`); a process killed by a limit or a protocol
breach (:class:`~dspex.errors.SandboxViolation`). After a timeout or a violation the session
is over and further calls raise :class:`~dspex.errors.SandboxError` (``reason="ended"``).
"""

from __future__ import annotations

import json
import keyword
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from dspex.errors import (
    SandboxCodeError,
    SandboxError,
    SandboxMemoryError,
    SandboxTimeout,
    SandboxViolation,
)
from dspex.sandbox.launch import Limits, Sandboxed, spawn

__all__ = ["FinalOutput", "PythonSandbox"]

_MAX_LINE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FinalOutput:
    """What ``execute`` returns when the code called ``SUBMIT(...)``."""

    output: Any


def _jsonable(value: Any, name: str) -> Any:
    """A JSON-compatible copy of a variable (tuples and sets become lists, as in DSPy)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, name) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, name) for v in value]
    if isinstance(value, set | frozenset):
        items = [_jsonable(v, name) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return _jsonable(dump(mode="json"), name)
    raise SandboxError(
        f"variable {name!r}: a {type(value).__name__} cannot be passed into the sandbox",
        reason="value",
    )


class PythonSandbox:
    """An isolated Python session (bubblewrap + rlimits); see the module docstring."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        memory_mb: int = 512,
        cpu_seconds: int | None = None,
        max_processes: int = 16,
        max_file_mb: int = 16,
        scratch_mb: int = 64,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        output_fields: list[Any] | None = None,
    ) -> None:
        if timeout <= 0 or memory_mb < 64 or max_processes < 1:
            raise SandboxError(
                "PythonSandbox needs timeout > 0, memory_mb >= 64 and max_processes >= 1",
                reason="config",
            )
        self.limits = Limits(
            timeout=float(timeout),
            memory_mb=int(memory_mb),
            cpu_seconds=int(cpu_seconds if cpu_seconds is not None else max(60, 4 * timeout)),
            max_processes=int(max_processes),
            max_file_mb=int(max_file_mb),
            scratch_mb=int(scratch_mb),
        )
        self._tools: dict[str, Callable[..., Any]] = dict(tools or {})
        self.output_fields: list[Any] = list(output_fields or [])
        """SUBMIT's parameters: names, or DSPy's ``{"name": ..., "type": ...}`` entries."""
        self._proc: Sandboxed | None = None
        self._ended = False
        self._lock = threading.Lock()
        self._buffer = b""

    # ------------------------------------------------------------------ DSPy's interface
    @property
    def tools(self) -> dict[str, Callable[..., Any]]:
        """Host functions the code may call by name (mutable, as DSPy's RLM expects)."""
        return self._tools

    def start(self) -> None:
        """Start the sandboxed process (idempotent; ``execute`` starts it lazily)."""
        if self._ended:
            raise SandboxError("this sandbox session has ended; create a new one", reason="ended")
        if self._proc is None:
            self._proc = spawn(self.limits)

    def execute(self, code: str, variables: Mapping[str, Any] | None = None) -> Any:
        """Run ``code``; its last expression's value, its printed output or a FinalOutput."""
        if not isinstance(code, str):
            raise SandboxError(f"code must be a string, got {type(code).__name__}", reason="value")
        wire_vars: dict[str, Any] = {}
        for name, value in (variables or {}).items():
            if not name.isidentifier() or keyword.iskeyword(name) or name == "SUBMIT":
                raise SandboxError(f"invalid variable name {name!r}", reason="value")
            wire_vars[name] = _jsonable(value, name)
        with self._lock:
            if self._proc is None:  # lazy start: a subclass's start() runs once per process
                self.start()
            if self._tools or self.output_fields:
                outputs = [
                    f.get("name") if isinstance(f, Mapping) else f for f in self.output_fields
                ]
                self._request({"op": "register", "tools": sorted(self._tools), "outputs": outputs})
            answer = self._request({"op": "execute", "code": code, "variables": wire_vars})
        if answer["kind"] == "final":
            return FinalOutput(answer.get("value"))
        return answer.get("output")

    def __call__(self, code: str, variables: Mapping[str, Any] | None = None) -> Any:
        return self.execute(code, variables)

    def shutdown(self) -> None:
        """Kill the sandbox's whole process tree; the session cannot be used afterwards."""
        self._end()

    def _end(self) -> None:
        self._ended = True
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()

    def __enter__(self) -> PythonSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None:
            proc.kill()

    # ------------------------------------------------------------------ protocol
    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request; serve tool calls until the answer; map failures to errors."""
        deadline = time.monotonic() + self.limits.timeout
        self._send(message)
        while True:
            answer = self._read(deadline)
            kind = answer.get("kind")
            if kind == "tool_call":
                self._serve_tool(answer)
                continue
            if kind == "error":
                self._raise_code_error(answer)
            if kind in ("result", "final"):
                return answer
            self._fail(SandboxViolation(f"unexpected sandbox message {answer!r:.200}"))

    def _serve_tool(self, call: dict[str, Any]) -> None:
        name = call.get("name")
        tool = self._tools.get(name) if isinstance(name, str) else None
        try:
            if tool is None:
                raise LookupError(f"no tool named {name!r}")
            value = tool(*(call.get("args") or []), **(call.get("kwargs") or {}))
            reply = {"op": "tool_result", "ok": True, "value": _jsonable(value, str(name))}
        except Exception as exc:
            reply = {"op": "tool_result", "ok": False, "value": f"{type(exc).__name__}: {exc}"}
        self._send(reply)

    def _raise_code_error(self, answer: dict[str, Any]) -> None:
        kind, message = str(answer.get("type")), str(answer.get("message"))
        if kind == "SyntaxError":
            raise SyntaxError(f"Invalid Python syntax. message: {message}")
        fields = {"type": kind, "detail": message, "args": answer.get("args")}
        if kind == "MemoryError":
            raise SandboxMemoryError(
                f"the sandboxed code exceeded its memory bound ({self.limits.memory_mb} MB)",
                reason="memory",
                **fields,
            )
        raise SandboxCodeError(f"{kind}: {message}", reason="code", **fields)

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        assert proc is not None and proc.process.stdin is not None
        try:
            proc.process.stdin.write(json.dumps(message).encode() + b"\n")
            proc.process.stdin.flush()
        except (BrokenPipeError, OSError):
            self._fail(self._death())

    def _read(self, deadline: float) -> dict[str, Any]:
        proc = self._proc
        assert proc is not None and proc.process.stdout is not None
        fd = proc.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(
                    SandboxTimeout(
                        f"sandboxed code ran past its {self.limits.timeout:g}s timeout; "
                        "its whole process tree was killed",
                        reason="timeout",
                        timeout=self.limits.timeout,
                    )
                )
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self._fail(self._death())
            self._buffer += chunk
            if len(self._buffer) > _MAX_LINE:
                self._fail(
                    SandboxViolation(
                        f"sandbox answer larger than {_MAX_LINE} bytes", reason="output"
                    )
                )
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self._fail(SandboxViolation("malformed sandbox message", reason="protocol"))
        return dict(answer)

    def _death(self) -> SandboxError:
        """The error for a sandbox process that exited."""
        proc = self._proc
        assert proc is not None
        proc.process.wait()
        code = proc.process.returncode
        signo = -code if code < 0 else code - 128 if code > 128 else 0
        err = b""
        if proc.process.stderr is not None:
            try:
                err = proc.process.stderr.read(4000) or b""
            except (OSError, ValueError):
                err = b""
        detail = err.decode(errors="replace").strip()
        if signo in (signal.SIGXCPU, signal.SIGKILL) and not detail:
            return SandboxTimeout(
                f"the sandbox was killed by {signal.Signals(signo).name} "
                f"(CPU budget {self.limits.cpu_seconds}s or a kill from its limits)",
                reason="cpu",
                signal=signo,
            )
        return SandboxViolation(
            f"the sandbox process exited (status {code}){': ' + detail if detail else ''}",
            reason="crashed",
            exitcode=code,
        )

    def _fail(self, error: SandboxError) -> Any:
        """End the session (kill the tree) and raise ``error``."""
        self._buffer = b""
        self._end()  # an internal end, not the caller's shutdown()
        raise error
