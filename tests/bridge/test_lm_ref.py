"""The LM spec (with its key) crosses to a session's worker once; later calls send a reference."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

import dspex
from dspex.testing import LMServer

pytestmark = pytest.mark.dspy


def _sent_contexts(session: Any) -> list[dict[str, Any]]:
    """Record the call context of every request the session sends from now on."""
    seen: list[dict[str, Any]] = []
    original = session.call_context

    def spy(lm: Any = None) -> dict[str, Any]:
        ctx: dict[str, Any] = original(lm)
        seen.append(ctx)
        return ctx

    session.call_context = spy
    return seen


def test_spec_once_then_reference(server: LMServer, lm: dspex.LM) -> None:
    remote = dspex.Predict("question -> answer", implementation="dspy")
    seen = _sent_contexts(remote._dspy_session)
    for i in range(3):
        assert remote(question=f"q{i}").answer
    first, *rest = (ctx["lm"] for ctx in seen)
    assert first["api_key"] == "sk-secret-key" and "ref" in first
    assert rest == [{"ref": first["ref"]}] * 2  # no key, no spec
    assert len(server.requests) == 3
    for r in server.requests:  # the worker's LM still authenticates with the key
        headers = {k.lower(): v for k, v in r.headers.items()}
        assert headers.get("authorization") == "Bearer sk-secret-key"


def test_changed_lm_is_sent_again(server: LMServer, lm: dspex.LM) -> None:
    remote = dspex.Predict("question -> answer", implementation="dspy")
    seen = _sent_contexts(remote._dspy_session)
    remote(question="a")
    remote(question="b")
    lm.kwargs["temperature"] = 0.5  # the same LM object, changed settings
    remote(question="c")
    specs = [ctx["lm"] for ctx in seen]
    assert "model" in specs[0] and set(specs[1]) == {"ref"} and "model" in specs[2]
    assert server.requests[-1].json["temperature"] == 0.5


def test_new_worker_gets_the_spec_again(server: LMServer, lm: dspex.LM) -> None:
    remote = dspex.Predict("question -> answer", implementation="dspy")
    seen = _sent_contexts(remote._dspy_session)
    remote(question="a")
    remote(question="b")
    pid = remote._dspy_session.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and remote._dspy_session.worker_pid == pid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    # rehydrated: the new worker lacks the LM the call names by reference, so the session
    # sends that call again with the full spec (the LM server is reached with the key) ...
    assert remote(question="c").answer
    assert remote._dspy_session.worker_pid != pid
    # ... and later calls are back to the reference alone
    assert remote(question="d").answer
    kinds = ["model" in ctx["lm"] for ctx in seen]
    assert kinds == [True, False, False, False]
    assert len(server.requests) == 4
