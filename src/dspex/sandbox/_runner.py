"""The program that runs *inside* the sandbox (standard library only, never imported by DSPex).

:mod:`dspex.sandbox.launch` passes this file's text to ``python -I -S -c``. It speaks JSON
lines with the host: it reads requests on stdin and answers on a private duplicate of stdout;
the code's own stdout is captured, and file descriptors 1 and 2 point at ``/dev/null`` so raw
writes cannot corrupt the protocol.

Requests: ``{"op": "execute", "code": str, "variables": {...}}``,
``{"op": "register", "tools": [name...], "outputs": [name...]}`` and
``{"op": "tool_result", "ok": bool, "value": any}`` (the answer to a tool call).
Answers: ``{"kind": "result", "output": any}``, ``{"kind": "final", "value": any}``,
``{"kind": "error", "type": str, "message": str, "args": [...]}`` and
``{"kind": "tool_call", "name": str, "args": [...], "kwargs": {...}}``.
"""

import ast
import io
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

_proto_in = sys.stdin
_proto_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
_null = os.open(os.devnull, os.O_WRONLY)
os.dup2(_null, 1)
os.dup2(_null, 2)
sys.stdin = io.StringIO("")


class _Final(BaseException):
    """Raised by SUBMIT(); a BaseException so bare ``except Exception`` in code cannot eat it."""


_MAIN_PID = os.getpid()


def _send(message: dict[str, Any]) -> None:
    if os.getpid() != _MAIN_PID:  # a process the code forked never speaks the protocol
        os._exit(0)
    _proto_out.write(json.dumps(message, default=repr) + "\n")
    _proto_out.flush()


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError, OverflowError):
        if isinstance(value, (list, tuple, set, frozenset)):
            return [_jsonable(v) for v in value]
        if isinstance(value, dict):
            return {str(k): _jsonable(v) for k, v in value.items()}
        return repr(value)


def _submit_for(outputs: list[str]) -> Callable[..., NoReturn]:
    if not outputs:

        def submit_one(output: Any) -> NoReturn:
            raise _Final({"output": output})

        return submit_one

    def submit(*args: Any, **kwargs: Any) -> NoReturn:
        values = dict(zip(outputs, args, strict=False))
        values.update(kwargs)
        missing = [name for name in outputs if name not in values]
        if missing:
            raise TypeError(f"SUBMIT() missing output(s): {', '.join(missing)}")
        raise _Final(values)

    return submit


def _tool(name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        _send({"kind": "tool_call", "name": name, "args": args, "kwargs": kwargs})
        answer = json.loads(_proto_in.readline() or "null")
        if not isinstance(answer, dict) or answer.get("op") != "tool_result":
            raise RuntimeError(f"tool {name} got no answer")
        if not answer.get("ok"):
            raise RuntimeError(str(answer.get("value")))
        return answer.get("value")

    call.__name__ = name
    return call


_namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
_namespace["SUBMIT"] = _submit_for([])


def _execute(code: str, variables: dict[str, Any] | None) -> Any:
    _namespace.update(variables or {})
    tree = ast.parse(code, "<sandbox>", "exec")
    last: ast.Expression | None = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body[-1].value)
        tree.body.pop()
    captured = io.StringIO()
    sys.stdout = sys.stderr = captured
    try:
        exec(compile(tree, "<sandbox>", "exec"), _namespace)
        value = eval(compile(last, "<sandbox>", "eval"), _namespace) if last else None
    finally:
        if os.getpid() != _MAIN_PID:
            os._exit(0)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    if value is None:
        return captured.getvalue()
    return _jsonable(value)


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "kind": "error",
        "type": type(exc).__name__,
        "message": str(exc),
        "args": _jsonable(list(getattr(exc, "args", ()))),
        "traceback": "".join(traceback.format_exception_only(type(exc), exc))[-2000:],
    }


def main() -> None:
    for line in _proto_in:
        request = json.loads(line)
        op = request.get("op")
        if op == "register":
            for name in request.get("tools") or []:
                _namespace[name] = _tool(name)
            _namespace["SUBMIT"] = _submit_for(request.get("outputs") or [])
            _send({"kind": "result", "output": None})
        elif op == "execute":
            try:
                output = _execute(request.get("code") or "", request.get("variables"))
            except _Final as final:
                _send({"kind": "final", "value": _jsonable(final.args[0])})
            except SyntaxError as exc:
                _send(_error(exc))
            except BaseException as exc:  # the code's failure is reported, never fatal
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    exc = RuntimeError(f"{type(exc).__name__}: {exc}")
                _send(_error(exc))
            else:
                _send({"kind": "result", "output": output})
        else:
            _send({"kind": "error", "type": "ProtocolError", "message": f"unknown op {op!r}"})


main()
