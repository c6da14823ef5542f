"""A real `dspex serve` subprocess over HTTP, against the test process's LMServer."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dspex.testing import LMServer

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

APP = Path(__file__).with_name("served_app.py")
STARTUP = 60.0


class Served:
    """A running `dspex serve` process: its URL, an httpx client, its output lines."""

    def __init__(
        self,
        proc: subprocess.Popen[str],
        url: str,
        lines: queue.Queue[str],
        pump: threading.Thread,
    ) -> None:
        self.proc = proc
        self.pump = pump
        self.url = url
        self.lines = lines
        self.client = httpx.Client(base_url=url, timeout=60.0)

    def call(self, name: str, inputs: dict[str, Any], **extra: Any) -> Any:
        return self.client.post(f"/v1/programs/{name}/call", json={"inputs": inputs, **extra})

    def wait_for(self, check: Callable[[dict[str, Any]], bool], status: int = 200) -> None:
        """Poll /health until ``check`` holds (bounded: never hangs a test)."""
        for _ in range(3000):
            response = self.client.get("/health")
            if response.status_code == status and check(response.json()):
                return
            threading.Event().wait(0.02)
        raise AssertionError(f"server never reached the state; last: {response.text}")

    def stop(self) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.proc.wait(30)
        self.pump.join(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def start_serve(lm: LMServer, *args: str) -> Served:
    env = {**os.environ, "DSPEX_TEST_LM": lm.url, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dspex.cli", "serve", f"{APP}:programs", f"{APP}:qa",
         "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    seen = []
    while True:
        try:
            line = lines.get(timeout=STARTUP)
        except queue.Empty:
            proc.kill()
            proc.wait(30)
            raise AssertionError(f"dspex serve did not start: {seen}") from None
        seen.append(line)
        if not line:
            raise AssertionError(f"dspex serve exited: {''.join(seen)}")
        if "listening on " in line:
            url = line.split("listening on ", 1)[1].split()[0]
            return Served(proc, url, lines, thread)


@pytest.fixture(scope="module")
def lm_server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def served(lm_server: LMServer) -> Iterator[Served]:
    server = start_serve(lm_server, "--max-concurrency", "16")
    yield server
    server.stop()


@pytest.fixture
def lm(lm_server: LMServer) -> LMServer:
    lm_server.clear()
    return lm_server
