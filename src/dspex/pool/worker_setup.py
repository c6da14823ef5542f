"""Process setup of a pool worker or fork-server template: parent-death signal, process
name, resource limits, preloading and importing the target, the init-failure report.

Only the standard library and ``msgpack`` are needed here (like :mod:`dspex.pool.worker`).
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import os
import resource
import signal
import socket
import traceback
from collections.abc import Callable
from typing import Any

from dspex.pool.protocol import Codec, InitFailed

__all__ = ["WORKER_COMM", "WORKER_ENV"]

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
WORKER_COMM = "dspexw"
WORKER_ENV = "DSPEX_POOL_WORKER"
"""Set in every worker (and so in everything it starts) to the worker's pid."""


def _prctl(option: int, arg: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: parent-death is then caught by pipe EOF
        pass


def _set_name(name: str) -> None:
    """The process name (``/proc/<pid>/comm``, 15 bytes), inherited by forked children."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _die_with_parent(parent_pid: int) -> None:
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(70)


def _qualname(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _import_target(target: str) -> Callable[[], Any]:
    module, _, attr = target.partition(":")
    factory: Callable[[], Any] = getattr(importlib.import_module(module), attr)
    return factory


def _apply_limits(spec: dict[str, Any]) -> None:
    mem = spec.get("memory_limit_mb")
    if mem and spec.get("memory_limit_kind") == "address_space":
        n = int(mem * 1024 * 1024)
        resource.setrlimit(resource.RLIMIT_AS, (n, n))
    cpu = spec.get("cpu_limit_s")
    if cpu:
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + 1))
    nproc = spec.get("max_processes")
    if nproc:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        n = int(nproc) if hard == resource.RLIM_INFINITY else min(int(nproc), hard)
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
    files = spec.get("open_files_limit")
    if files:
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(files), int(files)))


def _preload(spec: dict[str, Any]) -> Callable[[], Any]:
    for name in spec.get("preload", ()):
        importlib.import_module(name)
    factory = _import_target(spec["target"])
    _freeze_heap()
    return factory


def _freeze_heap() -> None:
    """Move the objects the preload and target imports made out of the collector's reach:
    full collections then scan only what the handler and its calls create (DSPy's import heap
    made each one a ~100-150 ms pause), and forked workers keep sharing the template's pages
    instead of writing GC headers into them (the pre-fork server recipe of the
    :func:`gc.freeze` docs; no collection first, which would leave holes in shared pages).
    The handler is built after this: its state stays collectable."""
    gc.freeze()


def _init_failed(sock: socket.socket, codec: Codec, exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    try:
        sock.sendall(codec.frame(InitFailed("init_failed", _qualname(exc), str(exc), text)))
    except OSError:
        pass


def _killpg(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
