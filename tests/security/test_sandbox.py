"""dspex.sandbox: DSPy-interpreter semantics, and escape attempts that must be blocked or
contained with a typed error (issue 11, item 2). Real bubblewrap processes, no mocks."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import dspex
from dspex.errors import (
    SandboxCodeError,
    SandboxError,
    SandboxMemoryError,
    SandboxTimeout,
)
from dspex.sandbox import FinalOutput, PythonSandbox, bwrap_executable

pytestmark = pytest.mark.skipif(
    bwrap_executable() is None, reason="bubblewrap is not installed (make install)"
)


@pytest.fixture
def sandbox() -> Iterator[PythonSandbox]:
    with PythonSandbox(timeout=20, memory_mb=256, max_processes=8) as sb:
        yield sb


def _processes_of(uid: int) -> list[int]:
    """Host pids whose real uid is ``uid`` (the sandbox's own uid)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                found.append(int(entry.name))
    return found


# ---------------------------------------------------------------- DSPy interpreter semantics


def test_values_prints_state_and_submit(sandbox: PythonSandbox) -> None:
    assert sandbox("x = 6 * 7\nx") == 42
    assert sandbox("print('x is', x)") == "x is 42\n"  # state persists across calls
    assert sandbox("y = x") == ""
    assert sandbox("SUBMIT(y + 1)") == FinalOutput({"output": 43})
    assert sandbox("n + len(items)", variables={"n": 1, "items": ("a", "b")}) == 3
    assert sandbox.execute("{'k': [1, 2]}") == {"k": [1, 2]}


def test_named_outputs_and_tools_cross_the_boundary() -> None:
    calls: list[str] = []

    def lookup(word: str) -> str:
        calls.append(word)
        return word.upper()

    with PythonSandbox(timeout=20, tools={"lookup": lookup}, output_fields=["answer"]) as sb:
        assert sb("SUBMIT(answer=lookup('hi'))") == FinalOutput({"answer": "HI"})
        with pytest.raises(SandboxCodeError, match="missing output"):
            sb("SUBMIT()")
    assert calls == ["hi"]


def test_code_errors_are_typed_and_keep_the_session(sandbox: PythonSandbox) -> None:
    with pytest.raises(SyntaxError):
        sandbox("def (")
    with pytest.raises(SandboxCodeError) as info:
        sandbox("1 / 0")
    assert info.value.fields["type"] == "ZeroDivisionError"
    assert sandbox("2 + 2") == 4
    with pytest.raises(SandboxError, match="invalid variable name"):
        sandbox("1", variables={"not valid": 1})
    with pytest.raises(SandboxError, match="cannot be passed"):
        sandbox("1", variables={"x": object()})


def test_shutdown_ends_the_session() -> None:
    sb = PythonSandbox(timeout=20)
    sb.start()
    sb.shutdown()
    sb.shutdown()  # idempotent
    with pytest.raises(SandboxError, match="ended"):
        sb("1")


# ---------------------------------------------------------------- escape attempts


def test_host_files_are_not_there(sandbox: PythonSandbox, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    for path in ("/etc/passwd", "/etc/shadow", str(secret), "/root/.bashrc", "/proc/1/environ"):
        with pytest.raises(SandboxCodeError) as info:
            sandbox(f"open({path!r}).read()")
        assert info.value.fields["type"] in ("FileNotFoundError", "PermissionError")
    listing = sandbox("import os; sorted(os.listdir('/'))")
    assert set(listing) <= {"bin", "dev", "lib", "lib64", "proc", "python", "tmp", "usr"}


def test_environment_secrets_do_not_leak(
    sandbox: PythonSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPEX_TEST_SECRET", "s3cr3t-value")
    environ = sandbox("import os; dict(os.environ)")
    assert "s3cr3t-value" not in repr(environ)
    assert set(environ) <= {"HOME", "PYTHONDONTWRITEBYTECODE", "PWD", "LC_CTYPE"}


def test_no_network_not_even_loopback(sandbox: PythonSandbox) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        try:
            accepted.append(listener.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        for host in ("127.0.0.1", "1.1.1.1"):
            with pytest.raises(SandboxCodeError) as info:
                sandbox(f"import socket; socket.create_connection(({host!r}, {port}), timeout=2)")
            assert info.value.fields["type"] in ("ConnectionRefusedError", "OSError")
    finally:
        thread.join()
        listener.close()
    assert accepted == []


def test_writes_outside_the_scratch_dir_are_refused(sandbox: PythonSandbox) -> None:
    for path in ("/usr/evil", "/python/evil", "/evil", "/proc/evil"):
        with pytest.raises(SandboxCodeError):
            sandbox(f"open({path!r}, 'w').write('x')")
    assert sandbox("open('/tmp/ok.txt', 'w').write('fine')") == 4
    # file size is capped (RLIMIT_FSIZE) and so is the scratch tmpfs
    with pytest.raises(SandboxCodeError):
        sandbox("open('/tmp/big', 'wb').write(b'x' * (40 * 1024 * 1024))")


def test_no_privilege_inside(sandbox: PythonSandbox) -> None:
    assert sandbox("import os; os.getuid()") != 0
    with pytest.raises(SandboxCodeError):
        sandbox("import os; os.setuid(0)")


def test_fork_bomb_is_contained(sandbox: PythonSandbox) -> None:
    assert sandbox._proc is None
    sandbox.start()
    assert sandbox._proc is not None
    uid = sandbox._proc.uid
    with pytest.raises(SandboxCodeError) as info:
        sandbox("import os\nwhile True:\n    os.fork()")
    assert info.value.fields["type"] == "BlockingIOError"
    assert len(_processes_of(uid)) <= 8  # RLIMIT_NPROC held
    assert sandbox("'still alive'") == "still alive"
    sandbox.shutdown()
    assert _processes_of(uid) == []


def test_memory_bomb_is_a_typed_error(sandbox: PythonSandbox) -> None:
    with pytest.raises(SandboxMemoryError):
        sandbox("'a' * 10**10")
    with pytest.raises(SandboxMemoryError):
        sandbox("chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 * 1024))")
    assert sandbox("1 + 1") == 2


def test_infinite_loop_times_out_and_nothing_survives() -> None:
    sb = PythonSandbox(timeout=3, memory_mb=128)
    sb.start()
    assert sb._proc is not None
    uid = sb._proc.uid
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    while True: time.sleep(0.1)\n"
        "while True: pass\n"
    )
    with pytest.raises(SandboxTimeout) as info:
        sb(code)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, dspex.SecurityError)
    assert _processes_of(uid) == []  # the daemonized grandchild died with the tree
    with pytest.raises(SandboxError, match="ended"):
        sb("1")


def test_cpu_budget_kills_a_busy_session() -> None:
    with PythonSandbox(timeout=60, cpu_seconds=1) as sb, pytest.raises(SandboxTimeout) as info:
        sb("while True: pass")
    assert info.value.fields["reason"] in ("cpu", "timeout")


def test_a_sandbox_left_unclosed_is_killed_when_collected() -> None:
    sb = PythonSandbox(timeout=20)
    sb.start()
    assert sb._proc is not None
    uid, pid = sb._proc.uid, sb._proc.process.pid
    del sb
    import gc

    gc.collect()
    assert _processes_of(uid) == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_sandbox_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A worker killed with SIGKILL (no cleanup runs) takes its sandbox tree with it."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "worker.py"
    script.write_text(
        "import sys\n"
        "from dspex.sandbox import PythonSandbox\n"
        "sb = PythonSandbox(timeout=600)\n"
        "sb.start()\n"
        "print(sb._proc.uid, flush=True)\n"
        "sb('import os, time\\nif os.fork() == 0:\\n    os.setsid()\\n"
        "    while True: time.sleep(0.1)\\nNone')\n"
        "print('forked', flush=True)\n"
        "sb('while True: pass')\n"
    )
    worker = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    uid = int(worker.stdout.readline())
    assert worker.stdout.readline().strip() == "forked"
    assert _processes_of(uid)  # the runner and its daemonized child are alive
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    worker.stdout.close()
    deadline = time.monotonic() + 30  # the kernel reaps asynchronously; not a speed assertion
    while _processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_of(uid) == []
