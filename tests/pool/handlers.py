"""Handler targets the pool tests run in real worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from dspex.pool.worker import current_call


class Handler:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.calls = 0

    def ping(self) -> str:
        return "pong"

    def echo(self, value: Any) -> Any:
        return value

    def add(self, a: int, b: int) -> int:
        return a + b

    def pid(self) -> int:
        return os.getpid()

    def count(self) -> int:
        self.calls += 1
        return self.calls

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def sleep_marked(self, path: str, seconds: float) -> float:
        """:meth:`sleep`, having written this worker's pid to ``path`` (the call has started)."""
        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(path + ".tmp", path)
        return self.sleep(seconds)

    def spin(self) -> None:
        while True:
            pass

    def blocking_c_call(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
        signal.sigwait([signal.SIGALRM])  # blocks in C forever

    async def asleep(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slept"

    async def aadd(self, a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    def fail(self, message: str) -> None:
        raise ValueError(message)

    def die(self, sig: int = signal.SIGKILL) -> None:
        os.kill(os.getpid(), sig)

    def exit(self, code: int) -> None:
        os._exit(code)

    def allocate(self, mb: int) -> int:
        block = bytearray(mb * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        return len(block)

    def open_files(self, n: int) -> int:
        files = [open(os.devnull) for _ in range(n)]  # noqa: SIM115
        return len(files)

    def burn_cpu(self) -> None:
        while True:
            pass

    def context(self) -> dict[str, Any]:
        call = current_call()
        return {"session": call.session, "remaining": call.remaining(), "method": call.method}

    def cooperative(self, seconds: float) -> str:
        call = current_call()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if call.cancelled:
                return "cancelled"
            time.sleep(0.01)
        return "done"

    def set(self, key: str, value: Any) -> None:
        self.state[f"{current_call().session}:{key}"] = value

    def get(self, key: str) -> Any:
        return self.state.get(f"{current_call().session}:{key}")

    def keys(self) -> list[str]:
        return sorted(self.state)

    def drop_session(self, session: str) -> None:
        for key in [k for k in self.state if k.startswith(session + ":")]:
            del self.state[key]

    def size_of(self, data: bytes) -> int:
        return len(data)

    def blob(self, n: int) -> bytes:
        return b"\x00" * n

    def ask_parent(self, name: str, *args: Any) -> Any:
        return current_call().call_parent(name, *args)

    async def aask_parent(self, name: str, *args: Any) -> Any:
        return await current_call().acall_parent(name, *args)

    def parent_error(self, name: str, *args: Any) -> list[Any]:
        """What a failing parent callback raises in here: [class name, message, fields]."""
        try:
            current_call().call_parent(name, *args)
        except Exception as exc:
            return [type(exc).__name__, str(exc), dict(getattr(exc, "fields", {}))]
        return ["no error", "", {}]

    def numbers(self, n: int) -> Iterator[int]:
        yield from range(n)

    def endless(self) -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    async def anumbers(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    def grandchild(self) -> int:
        """Double-fork a grandchild that sleeps forever; return its pid."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            if os.fork() == 0:
                os.write(w, str(os.getpid()).encode())
                time.sleep(3600)
            os._exit(0)
        os.waitpid(pid, 0)
        return int(os.read(r, 64))

    def setsid_grandchild(self) -> int:
        """A grandchild in its own session (escapes the worker's process group); its pid."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                os.write(w, str(os.getpid()).encode())
                time.sleep(3600)
            os._exit(0)
        os.waitpid(pid, 0)
        return int(os.read(r, 64))


def make() -> Handler:
    return Handler()


def broken() -> Handler:
    raise RuntimeError("factory exploded")


def slow_init() -> Handler:
    time.sleep(30)
    return Handler()


_retained: list[bytearray] = []


def _retain(self: Handler, mb: int) -> int:
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    _retained.append(block)
    return mb


Handler.retain = _retain  # type: ignore[attr-defined]


def _environment(self: Handler) -> dict[str, Any]:
    import importlib.util
    import sys

    return {
        "executable": sys.executable,
        "prefix": sys.prefix,
        "has": {
            m: importlib.util.find_spec(m) is not None
            for m in ("msgpack", "psutil", "pydantic", "dspy")
        },
    }


Handler.environment = _environment  # type: ignore[attr-defined]


class TypedErrors(Handler):
    """A handler that describes its errors as typed DSPex errors (``_error_payload``)."""

    def _error_payload(self, exc: BaseException) -> dict[str, Any] | None:
        if isinstance(exc, KeyError):
            return None  # not described: a plain RemoteError
        return {
            "type": "ConfigurationError",
            "message": str(exc).replace("hunter2", "***"),
            "fields": {"field": "demo", "remote_traceback": "scrubbed traceback"},
        }

    def missing(self) -> None:
        raise KeyError("nope")


def make_typed() -> TypedErrors:
    return TypedErrors()
