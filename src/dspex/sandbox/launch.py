"""Start the sandboxed interpreter process: bubblewrap namespaces + an unprivileged uid + rlimits.

The process tree, from the outside in:

``bwrap`` (own session and process group; rlimits set before exec; joins a per-sandbox
cgroup when the machine lets us create one) builds new mount, pid, network, IPC, UTS and
cgroup namespaces with a root filesystem that holds only ``/usr`` and the Python install
(read-only), a fresh ``/proc``, a minimal ``/dev`` and a size-capped ``/tmp`` tmpfs (the
scratch dir), an empty environment, and ``--die-with-parent``. Inside, ``setpriv`` drops to
a uid of its own (never root, never shared with another sandbox), clears groups, capabilities
and the bounding set and sets ``no_new_privs``; then ``python -I -S`` runs
:mod:`dspex.sandbox._runner`.

Killing the tree: ``SIGKILL`` to bwrap's process group; the sandbox's pid 1 dies with its
parent and the kernel kills every process of the pid namespace; the cgroup (when there is
one) is emptied and removed.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dspex.errors import SandboxUnavailable

__all__ = ["Limits", "Sandboxed", "bwrap_executable", "spawn"]

_RUNNER = Path(__file__).with_name("_runner.py")
_PYTHON_MOUNT = "/python"
_UID_RANGE = (200_000, 1_200_000)
_CGROUP_ROOTS = (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup/pids"))


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource bounds of one sandbox (per process where the kernel counts per process)."""

    timeout: float = 30.0
    """Wall-clock seconds one ``execute`` may take before the whole tree is killed."""
    memory_mb: int = 512
    """Address-space cap of each process (RLIMIT_AS); the whole tree's RAM with a cgroup."""
    cpu_seconds: int = 120
    """CPU seconds of the session's processes (RLIMIT_CPU: SIGXCPU, then SIGKILL)."""
    max_processes: int = 16
    """Processes and threads the sandbox uid may have (RLIMIT_NPROC, and pids.max)."""
    max_file_mb: int = 16
    """Largest file the code may write (RLIMIT_FSIZE)."""
    scratch_mb: int = 64
    """Size of the writable ``/tmp`` scratch tmpfs."""


def bwrap_executable() -> str | None:
    """The bubblewrap binary, if installed."""
    return shutil.which("bwrap")


def _python() -> tuple[str, str]:
    """``(host prefix to bind, interpreter path inside the sandbox)``."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    prefix = os.path.realpath(sys.base_prefix)
    name = os.path.basename(base)
    if prefix == "/usr" or prefix.startswith("/usr/"):
        return "", base
    return prefix, f"{_PYTHON_MOUNT}/bin/{name}"


def _argv(limits: Limits, uid: int) -> list[str]:
    bwrap = bwrap_executable()
    if bwrap is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed; run `make install` or "
            "`apt-get install -y bubblewrap` (sandboxed code is never run without it)",
            reason="unavailable",
        )
    prefix, python = _python()
    argv = [
        bwrap,
        "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
        "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv",
        "--hostname", "sandbox",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin",
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(limits.scratch_mb * 1024 * 1024), "--tmpfs", "/tmp",
        "--chmod", "1777", "/tmp", "--chdir", "/tmp",
        "--setenv", "HOME", "/tmp", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
    ]  # fmt: skip
    if prefix:
        argv += ["--ro-bind", prefix, _PYTHON_MOUNT]
    if os.geteuid() == 0:
        # root: no user namespace; setpriv drops to a uid of our own with no capabilities
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        argv += [
            "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all",
        ]  # fmt: skip
    else:
        argv += ["--unshare-user", "--uid", "65534", "--gid", "65534"]
    return [*argv, python, "-I", "-S", "-B", "-c", _RUNNER.read_text(encoding="utf-8")]


class _Cgroup:
    """A per-sandbox cgroup (v1 memory + pids) when this machine lets us create one."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.dirs: list[Path] = []
        for root in _CGROUP_ROOTS:
            path = root / name
            try:
                path.mkdir()
            except OSError:
                continue
            self.dirs.append(path)
            try:
                if root.name == "memory":
                    cap = (limits.memory_mb + limits.scratch_mb) * 1024 * 1024
                    (path / "memory.limit_in_bytes").write_text(str(cap))
                    with contextlib.suppress(OSError):
                        (path / "memory.memsw.limit_in_bytes").write_text(str(cap))
                else:
                    (path / "pids.max").write_text(str(limits.max_processes + 4))
            except OSError:
                self.close()
                self.dirs = []
                return

    def join(self) -> None:
        """Called in the child before exec: move it (and what it forks) into the cgroup."""
        for path in self.dirs:
            (path / "cgroup.procs").write_text(str(os.getpid()))

    def kill(self) -> None:
        for path in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)

    def close(self) -> None:
        """Kill what is left and remove the cgroup (it empties once the kernel reaps)."""
        deadline = time.monotonic() + 5.0
        for path in self.dirs:
            while True:
                self.kill()
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
        self.dirs = []

    @staticmethod
    def sweep() -> None:
        """Remove empty cgroups left by sandbox owners that no longer exist."""
        for root in _CGROUP_ROOTS:
            with contextlib.suppress(OSError):
                for path in root.glob("dspex-sandbox-*"):
                    owner = path.name.split("-")[2]
                    if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                        with contextlib.suppress(OSError):
                            path.rmdir()


@dataclass
class Sandboxed:
    """A running sandbox process and what is needed to kill it completely."""

    process: subprocess.Popen[bytes]
    uid: int
    cgroup: _Cgroup

    def kill(self) -> None:
        """Kill the whole tree (idempotent) and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.cgroup.kill()
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()
        self.cgroup.close()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def spawn(limits: Limits) -> Sandboxed:
    """Start a sandboxed runner; its stdin/stdout carry the JSON-lines protocol."""
    uid = _UID_RANGE[0] + secrets.randbelow(_UID_RANGE[1] - _UID_RANGE[0])
    argv = _argv(limits, uid)
    _Cgroup.sweep()
    cgroup = _Cgroup(f"dspex-sandbox-{os.getpid()}-{uid}", limits)

    def prepare() -> None:  # in the child, before exec
        cgroup.join()
        mb = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_mb * mb,) * 2)
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={},
            start_new_session=True,
            preexec_fn=prepare,  # only resource limits and a cgroup write
            close_fds=True,
        )
    except OSError as exc:
        cgroup.close()
        raise SandboxUnavailable(f"cannot start bubblewrap: {exc}", reason="unavailable") from exc
    return Sandboxed(process, uid, cgroup)
