"""The ``dspex serve`` app on Ray Serve (a real local cluster; slow: Serve takes ~15 s to start)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.testing import LMServer

pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


class Shout(dspex.Module):
    """A user module from this test file (not importable on the replica: travels by value)."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = dspex.Predict("question -> answer")

    def forward(self, question: str) -> Any:
        return self.answer(question=question.upper())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_app_deploys_on_ray_serve(ray_cluster: Any) -> None:
    from dspex.server.ray_serve import deployment
    from ray import serve

    with pytest.raises(ConfigurationError, match="unknown server option"):
        deployment({"qa": Shout()}, max_concurency=3)
    port = free_port()
    with LMServer() as lm_server:
        dspex.configure(lm=dspex.LM("openai/t", api_base=lm_server.url, api_key="k", cache=False))
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            serve.run(
                deployment({"qa": Shout()}, max_concurrency=4), name="dspex", route_prefix="/"
            )
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=60) as client:
                reply = client.post("/v1/programs/qa/call", json={"inputs": {"question": "hi"}})
                assert reply.status_code == 200, reply.text
                body = reply.json()
                assert body["outputs"]["answer"] and body["usage"]["openai/t"]["total_tokens"] > 0
                assert "HI" in lm_server.requests[-1].body.decode()  # the user code ran
                assert client.get("/health").json()["max_concurrency"] == 4
                bad = client.post("/v1/programs/qa/call", json={"inputs": {}})
                assert bad.status_code == 422
                assert client.post("/v1/programs/nope/call", json={"inputs": {}}).status_code == 404
                schema = client.get("/openapi.json").json()
                assert "/v1/programs/qa/call" in schema["paths"]
        finally:
            serve.shutdown()


def test_dspex_serve_ray_cli(ray_cluster: Any, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            import os
            import dspex

            dspex.configure(lm=dspex.LM("openai/t", api_base=os.environ["LM_URL"], api_key="k",
                                        cache=False))
            qa = dspex.ChainOfThought("question -> answer")
            """
        )
    )
    port = free_port()
    address = ray_cluster.get_runtime_context().gcs_address
    with LMServer() as lm_server:
        env = {**os.environ, "LM_URL": lm_server.url}
        cmd = [sys.executable, "-m", "dspex", "serve", f"{app}:qa", "--ray", "--port", str(port)]
        proc = subprocess.Popen(
            [*cmd, "--ray-address", address],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = ""
            deadline = time.monotonic() + 300
            while "on Ray Serve" not in line and time.monotonic() < deadline:
                line = proc.stdout.readline()
                assert line or proc.poll() is None, "dspex serve --ray exited early"
            reply = httpx.post(
                f"http://127.0.0.1:{port}/v1/programs/qa/call",
                json={"inputs": {"question": "where?"}},
                timeout=60,
            )
            assert reply.status_code == 200, reply.text
            assert set(reply.json()["outputs"]) == {"reasoning", "answer"}
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0 and "dspex serve: stopped" in out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
