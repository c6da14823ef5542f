"""The fork-server template: pre-import once, fork workers on request, reap, report, contain.

The template imports ``preload`` modules and the target module once, then forks a
ready-to-initialize worker for each request of the parent (over a ``SOCK_SEQPACKET`` control
channel, see :func:`dspex.pool.protocol.fs_encode`) and reports every worker's exit status.

Containment: the template is a *child subreaper*, so a process a handler started and left
behind — even one that called ``setsid()`` — is re-parented to the template when its own
parent exits, never to init. Every process below a worker carries the worker's pid in its
name (``dspexw<pid>``, kept across ``fork``) or its environment (``DSPEX_POOL_WORKER``,
kept across ``exec``); the template kills adopted processes
whose worker is gone (at each child exit), and everything below it when it stops — also when
the parent was SIGKILLed (``PR_SET_PDEATHSIG`` delivers SIGTERM to the template, which then
stops its tree before exiting). Only processes below this template are ever signalled.

Only the standard library and ``msgpack`` are needed here.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
import traceback
from typing import Any

from dspex.pool.protocol import fs_decode, fs_encode
from dspex.pool.worker import _run_worker
from dspex.pool.worker_setup import (
    WORKER_COMM,
    WORKER_ENV,
    _die_with_parent,
    _killpg,
    _prctl,
    _preload,
    _qualname,
)

__all__ = ["adopted_orphans", "children", "serve"]

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (from /proc; empty if unknown)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out += [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            continue
    return out


def _owner(pid: int) -> int | None:
    """The worker pid a process descends from, if it says: its name (``dspexw<pid>``, kept
    by a fork) or its environment (``DSPEX_POOL_WORKER``, kept by an exec)."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            comm = f.read().strip()
        if comm.startswith(WORKER_COMM.encode()) and comm[len(WORKER_COMM) :].isdigit():
            return int(comm[len(WORKER_COMM) :])
    except OSError:
        return None
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    prefix = WORKER_ENV.encode() + b"="
    for item in env:
        if item.startswith(prefix):
            try:
                return int(item[len(prefix) :])
            except ValueError:
                return None
    return None


def adopted_orphans(me: int, workers: set[int]) -> list[int]:
    """Children of the template left behind by a worker that is gone (per their marker;
    an unmarked one is left alone until the template stops)."""
    out = []
    for pid in children(me):
        if pid in workers:
            continue
        owner = _owner(pid)
        if owner is not None and owner not in workers:
            out.append(pid)
    return out


def _reap(workers: set[int], send: Any) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in workers:
            workers.discard(pid)
            _killpg(pid)  # grandchildren left in the worker's group
            send("exited", pid, status)


def serve(ctl_fd: int, spec: dict[str, Any]) -> None:
    """Run the fork server on control channel ``ctl_fd`` (never returns)."""
    ctl = socket.socket(fileno=ctl_fd)
    me = os.getpid()
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    try:
        factory = _preload(spec)
    except BaseException as exc:
        text = "".join(traceback.format_exception(exc))
        ctl.send(fs_encode("init_failed", _qualname(exc), str(exc), text))
        os._exit(1)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    stopping: list[bool] = []
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    # the parent's death (even SIGKILL) now means SIGTERM: stop the tree, then exit
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != spec["parent_pid"]:
        stopping.append(True)
    workers: set[int] = set()

    def send(*fields: Any) -> None:
        try:
            ctl.send(fs_encode(*fields))
        except OSError:
            stopping.append(True)

    def stop_all() -> None:
        """Kill the workers' groups, then every process re-parented to us, until none."""
        for pid in workers:
            _killpg(pid)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            left = children(me)
            if not left:
                break
            for pid in left:
                _killpg(pid)
            time.sleep(0.01)
            while True:
                try:
                    if os.waitpid(-1, os.WNOHANG)[0] == 0:
                        break
                except ChildProcessError:
                    break
        os._exit(0)

    send("ready", me)
    while True:
        if stopping:
            stop_all()
        try:
            readable, _, _ = select.select([ctl.fileno(), wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
            _reap(workers, send)
            for pid in adopted_orphans(me, workers):  # left behind by a dead worker
                _killpg(pid)
        if ctl.fileno() in readable:
            try:
                data, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 16, 1)
            except OSError:
                stop_all()
            if not data:
                stop_all()
            msg = fs_decode(data)
            if msg[0] == "fork" and fds:
                pid = os.fork()
                if pid == 0:
                    try:
                        ctl.close()
                        signal.set_wakeup_fd(-1)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        signal.signal(signal.SIGTERM, signal.SIG_DFL)
                        os.close(wake_r)
                        os.close(wake_w)
                        os.setpgid(0, 0)
                        os.environ[WORKER_ENV] = str(os.getpid())
                        _die_with_parent(me)
                        _run_worker(fds[0], spec, factory)
                    finally:
                        os._exit(1)
                try:
                    os.setpgid(pid, pid)
                except OSError:
                    pass
                os.close(fds[0])
                workers.add(pid)
                send("forked", msg[1], pid)
            else:
                for fd in fds:
                    os.close(fd)
                if msg[0] == "stop":
                    stop_all()
