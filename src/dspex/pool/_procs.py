"""Parent-side process plumbing: spawning workers (directly or via the fork-server template),
collecting exit statuses, killing process groups, and sweeping leftovers of dead parents.

Every call here runs on the pool's own event-loop thread. That thread lives as long as the
pool, which matters: ``PR_SET_PDEATHSIG`` fires when the *thread* that spawned a child exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspex.errors import ProtocolError
from dspex.pool.config import PoolConfig
from dspex.pool.loop import SETTLE_TASK_NAME
from dspex.pool.protocol import fs_decode, fs_encode

__all__ = [
    "PARENT_MARKER",
    "DirectSpawner",
    "ExitInfo",
    "SpawnError",
    "Spawner",
    "TemplateLost",
    "TemplateSpawner",
    "kill_group",
    "make_spawner",
    "read_rss",
    "sweep_leftovers",
]

PARENT_MARKER = "DSPEX_POOL_PARENT"
_SRC_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding `dspex/`
_PAGE = os.sysconf("SC_PAGE_SIZE")


class SpawnError(Exception):
    """A worker or template could not be started; ``args[0]`` says why."""


class TemplateLost(SpawnError):
    """The fork-server template died while a fork was pending (not the worker's fault)."""


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How a process ended: by ``signal`` (number) or with ``exitcode``; both None if unknown."""

    signal: int | None
    exitcode: int | None

    @classmethod
    def from_status(cls, status: int) -> ExitInfo:
        if os.WIFSIGNALED(status):
            return cls(os.WTERMSIG(status), None)
        return cls(None, os.WEXITSTATUS(status))

    @classmethod
    def from_returncode(cls, code: int | None) -> ExitInfo:
        if code is None:
            return cls(None, None)
        return cls(-code, None) if code < 0 else cls(None, code)

    def describe(self) -> str:
        if self.signal is not None:
            try:
                return f"signal {signal.Signals(self.signal).name}"
            except ValueError:
                return f"signal {self.signal}"
        if self.exitcode is not None:
            return f"exit code {self.exitcode}"
        return "unknown status"


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal the process group led by ``pid`` (and ``pid`` itself, in case it has none yet)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def read_rss(pid: int) -> int | None:
    """Resident set size of ``pid`` in bytes (from /proc; None if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _marker() -> str:
    import psutil

    return f"{os.getpid()}:{psutil.Process().create_time():.3f}"


def _worker_env(config: PoolConfig, role: str, fd: int, pool: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(config.env)
    paths = [_SRC_ROOT, *config.pythonpath]
    if config.python is None:  # same interpreter: the worker sees what the parent sees
        paths += [p for p in sys.path if p]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    spec: dict[str, Any] = {
        "role": role,
        "pool": pool,
        "parent_pid": os.getpid(),
        "target": config.target,
        "preload": list(config.preload),
        "codec": config.codec,
        "memory_limit_mb": config.memory_limit_mb,
        "memory_limit_kind": config.memory_limit_kind,
        "cpu_limit_s": config.cpu_limit_s,
        "open_files_limit": config.open_files_limit,
        "max_processes": config.max_processes,
    }
    env["DSPEX_POOL_SPEC"] = json.dumps(spec)
    env["DSPEX_POOL_FD"] = str(fd)
    env[PARENT_MARKER] = _marker()
    return env


def _popen(config: PoolConfig, role: str, fd: int, pool: str) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            [config.interpreter, "-m", "dspex.pool._boot"],
            env=_worker_env(config, role, fd, pool),
            cwd=config.cwd,
            pass_fds=(fd,),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
    except OSError as exc:
        raise SpawnError(f"cannot start {config.interpreter!r}: {exc}") from exc


class Spawner:
    """Starts worker processes and reports how they ended."""

    def __init__(self, config: PoolConfig, pool: str, executor: ThreadPoolExecutor) -> None:
        self.config = config
        self.pool = pool
        self.executor = executor

    async def spawn(self, fd: int) -> int:
        """Start a worker whose channel is ``fd``; return its pid."""
        raise NotImplementedError

    async def wait_exit(self, pid: int, limit: float) -> ExitInfo:
        """The exit status of a worker that is dead or being killed."""
        raise NotImplementedError

    async def close(self) -> None:
        """Stop helper processes (the template); workers are stopped by the pool."""


class DirectSpawner(Spawner):
    """One fresh interpreter per worker: every start pays the imports."""

    def __init__(self, config: PoolConfig, pool: str, executor: ThreadPoolExecutor) -> None:
        super().__init__(config, pool, executor)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    async def spawn(self, fd: int) -> int:
        proc = _popen(self.config, "worker", fd, self.pool)
        self.procs[proc.pid] = proc
        return proc.pid

    async def wait_exit(self, pid: int, limit: float) -> ExitInfo:
        proc = self.procs.get(pid)
        if proc is None:
            return ExitInfo(None, None)
        code = await _wait_process(proc, limit)
        if code is None:
            return ExitInfo(None, None)
        self.procs.pop(pid, None)
        return ExitInfo.from_returncode(code)


class TemplateSpawner(Spawner):
    """A pre-imported template process forks each worker (restart without re-importing)."""

    def __init__(self, config: PoolConfig, pool: str, executor: ThreadPoolExecutor) -> None:
        super().__init__(config, pool, executor)
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self._ready: asyncio.Future[None] | None = None
        self._forks: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[ExitInfo]] = {}
        self._token = 0
        self.init_error: tuple[str, str, str] | None = None

    @property
    def alive(self) -> bool:
        return self.sock is not None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = _popen(self.config, "template", theirs.fileno(), self.pool)
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._readable)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.config.startup_timeout)
        except TimeoutError:
            self._lost()
            raise SpawnError(
                f"fork-server template did not start within {self.config.startup_timeout}s"
            ) from None

    def _readable(self) -> None:
        sock = self.sock
        while sock is not None:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            try:
                msg = fs_decode(data)
            except ProtocolError:
                self._lost()
                return
            self._handle(msg)

    def _handle(self, msg: list[Any]) -> None:
        kind = msg[0]
        if kind == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        elif kind == "init_failed":
            self.init_error = (msg[1], msg[2], msg[3])
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(
                    SpawnError(f"worker initialization failed: {msg[1]}: {msg[2]}")
                )
        elif kind == "forked":
            fut = self._forks.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result(msg[2])
        elif kind == "exited":
            efut = self._exits.setdefault(msg[1], asyncio.get_running_loop().create_future())
            if not efut.done():
                efut.set_result(ExitInfo.from_status(msg[2]))

    def _lost(self) -> None:
        """The template died or closed its end: every waiter learns it now."""
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        error: SpawnError = TemplateLost("the fork-server template exited")
        if self.init_error is not None:
            error = SpawnError(
                f"worker initialization failed: {self.init_error[0]}: {self.init_error[1]}"
            )
        if self._ready is not None and not self._ready.done():  # dying at start: it counts
            self._ready.set_exception(SpawnError(f"{error} while starting"))
        for fut in self._forks.values():
            if not fut.done():
                fut.set_exception(error)
        self._forks.clear()
        for efut in self._exits.values():  # workers die with their template (PDEATHSIG)
            if not efut.done():
                efut.set_result(ExitInfo(None, None))
        proc = self.proc
        if proc is not None:
            kill_group(proc.pid)
            try:  # reap it without a thread (executors refuse work at interpreter exit)
                reaper = asyncio.get_running_loop().create_task(
                    _wait_process(proc, 5.0), name=SETTLE_TASK_NAME
                )
                _REAPERS.add(reaper)
                reaper.add_done_callback(_REAPERS.discard)
            except RuntimeError:  # not on a loop
                proc.wait(timeout=5.0)

    async def spawn(self, fd: int) -> int:
        for attempt in (1, 2):
            if self.sock is None:  # first use, or the template died: (re)create it
                await self.start()
            sock = self.sock
            assert sock is not None
            self._token += 1
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._forks[self._token] = fut
            try:
                socket.send_fds(sock, [fs_encode("fork", self._token)], [fd])
                break
            except OSError as exc:  # the template died before we noticed: replace it once
                self._forks.pop(self._token, None)
                if self.init_error is not None or attempt == 2:
                    raise SpawnError(f"cannot reach the fork-server template: {exc}") from exc
                self._lost()
        try:
            pid = await asyncio.wait_for(fut, self.config.startup_timeout)
        except TimeoutError:
            raise SpawnError("the fork-server template did not fork in time") from None
        self._exits.setdefault(pid, asyncio.get_running_loop().create_future())
        return pid

    async def wait_exit(self, pid: int, limit: float) -> ExitInfo:
        fut = self._exits.get(pid)
        if fut is None:
            return ExitInfo(None, None)
        try:
            info = await asyncio.wait_for(asyncio.shield(fut), limit)
        except TimeoutError:
            return ExitInfo(None, None)
        self._exits.pop(pid, None)
        return info

    async def close(self) -> None:
        sock, proc = self.sock, self.proc
        if sock is not None:
            try:
                sock.send(fs_encode("stop"))
            except OSError:
                pass
        if proc is not None and await _wait_process(proc, 2.0) is None:
            kill_group(proc.pid)
            await _wait_process(proc, 5.0)
        if self.sock is not None:
            self._lost()
        self.proc = None


_REAPERS: set[asyncio.Task[int | None]] = set()


async def _wait_process(proc: subprocess.Popen[bytes], limit: float) -> int | None:
    """``proc``'s exit code, polled without a thread (this also runs at interpreter exit,
    when executors refuse new work); ``None`` if it is still running after ``limit`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    delay = 0.001
    while (code := proc.poll()) is None:
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)
    return code


def make_spawner(config: PoolConfig, pool: str, executor: ThreadPoolExecutor) -> Spawner:
    if config.fork_server:
        return TemplateSpawner(config, pool, executor)
    return DirectSpawner(config, pool, executor)


_swept = False


def sweep_leftovers() -> int:
    """Kill pool processes (workers, templates, their children) whose parent process is gone.

    They are recognized by the ``DSPEX_POOL_PARENT=<pid>:<start time>`` marker every pool
    process (and anything it spawns) inherits. Runs once per process; returns how many died.
    A pool never runs this by itself (it would kill what *other* programs' pools left): the
    fork-server template contains its tree instead (:mod:`dspex.pool.template`). It is the
    explicit clean-up for leftovers of a SIGKILLed parent with ``fork_server=False``.
    """
    global _swept
    if _swept:
        return 0
    _swept = True
    import psutil

    uid = os.getuid()
    killed = 0
    alive: dict[str, bool] = {}
    for proc in psutil.process_iter(["uids"]):
        try:
            if (
                proc.info["uids"] is None
                or proc.info["uids"].real != uid
                or proc.pid == os.getpid()
            ):
                continue
            marker = proc.environ().get(PARENT_MARKER)
        except (psutil.Error, OSError):
            continue
        if not marker:
            continue
        if marker not in alive:
            pid_text, _, ctime = marker.partition(":")
            try:
                parent = psutil.Process(int(pid_text))
                alive[marker] = f"{parent.create_time():.3f}" == ctime
            except (psutil.Error, ValueError):
                alive[marker] = False
        if not alive[marker]:
            try:
                proc.kill()
                killed += 1
            except psutil.Error:
                pass
    return killed
