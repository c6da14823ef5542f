"""LMServer: protocols, scripting, faults and real DSPy talking to it."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Literal

import httpx
import orjson
import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.testing import DummyLM, Fault, LMServer


@pytest.fixture
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def chat(server: LMServer, messages: list[dict[str, str]], **body: object) -> httpx.Response:
    return httpx.post(
        server.url + "/chat/completions",
        json={"model": "m", "messages": messages, **body},
        timeout=5,
    )


def test_auto_answers_are_typed_and_deterministic(server: LMServer) -> None:
    sig = dspex.Signature(
        "q -> n: int, f: float, ok: bool, tags: list[str], mode: Literal['x', 'y'], d: dict[str, int]"
    )
    for adapter in (dspex.ChatAdapter(), dspex.JSONAdapter()):
        messages = adapter.format(sig, [], {"q": "hi"})
        first = chat(server, messages).json()["choices"][0]["message"]["content"]
        again = chat(server, messages).json()["choices"][0]["message"]["content"]
        assert first == again
        out = adapter.parse(sig, first)
        assert (
            isinstance(out["n"], int)
            and isinstance(out["f"], float)
            and isinstance(out["ok"], bool)
        )
        assert out["mode"] in ("x", "y") and isinstance(out["d"], dict)


def test_scripted_replies_rules_and_recording(server: LMServer) -> None:
    sig = dspex.Signature("q -> a")
    messages = dspex.ChatAdapter().format(sig, [], {"q": "special"})
    server.reply("raw text", {"a": "from dict"})
    server.add_rule("never-matches", "nope")
    assert chat(server, messages).json()["choices"][0]["message"]["content"] == "raw text"
    second = chat(server, messages).json()["choices"][0]["message"]["content"]
    assert dspex.ChatAdapter().parse(sig, second) == {"a": "from dict"}
    server.add_rule("special", lambda req: "by rule")
    assert chat(server, messages).json()["choices"][0]["message"]["content"] == "by rule"
    assert len(server.requests) == 3 and server.requests[0].json["model"] == "m"
    server.clear()
    assert server.requests == []


def test_n_choices_and_usage(server: LMServer) -> None:
    data = chat(server, [{"role": "user", "content": "x"}], n=3).json()
    assert len(data["choices"]) == 3 and data["usage"]["total_tokens"] > 0


def test_bad_requests_get_provider_shaped_400s(server: LMServer) -> None:
    r = httpx.post(server.url + "/chat/completions", content=b"not json", timeout=5)
    assert r.status_code == 400 and "error" in r.json()
    r = httpx.post(server.url + "/messages", json={"model": "m"}, timeout=5)
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert httpx.get(server.base_url + "/nowhere", timeout=5).status_code == 404


def test_faults_apply_in_order_and_expire(server: LMServer) -> None:
    server.fault(Fault(status=503, headers={"Retry-After": "1"}, times=2))
    msgs = [{"role": "user", "content": "x"}]
    assert [chat(server, msgs).status_code for _ in range(3)] == [503, 503, 200]
    server.fault(Fault(status=500, match="only-this"))
    assert chat(server, msgs).status_code == 200
    assert chat(server, [{"role": "user", "content": "only-this"}]).status_code == 500


def test_drop_and_hang_do_not_block_other_connections(server: LMServer) -> None:
    server.fault(Fault(hang=True, match="hang"))
    hung: list[str] = []

    def hang() -> None:
        try:
            chat(server, [{"role": "user", "content": "hang"}])
        except httpx.HTTPError as exc:
            hung.append(type(exc).__name__)

    t = threading.Thread(target=hang)
    t.start()
    time.sleep(0.1)
    assert chat(server, [{"role": "user", "content": "fine"}]).status_code == 200
    server.fault(Fault(drop=True))
    with pytest.raises(httpx.HTTPError):
        chat(server, [{"role": "user", "content": "x"}])
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 1.0
    t.join(5)
    assert hung  # the hung client got an error when the server stopped


def test_stop_leaves_no_threads_behind() -> None:
    before = threading.active_count()
    for _ in range(3):
        with LMServer() as srv:
            chat(srv, [{"role": "user", "content": "x"}])
    assert threading.active_count() == before


def test_only_loopback() -> None:
    with pytest.raises(ConfigurationError):
        LMServer(host="0.0.0.0")


def test_streaming_sse_openai(server: LMServer) -> None:
    with httpx.stream("POST", server.url + "/chat/completions", json={"model": "m", "stream": True,
                      "messages": [{"role": "user", "content": "x"}]}, timeout=5) as r:  # fmt: skip
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and len(lines) > 3


def test_dummy_lm_scripts_and_auto_answers() -> None:
    lm = DummyLM([{"answer": "scripted"}])
    qa = dspex.Predict("question -> answer")
    assert qa(question="q", lm=lm).answer == "scripted"
    assert isinstance(dspex.Predict("question -> n: int")(question="q", lm=lm).n, int)
    assert len(lm.calls) == 2


dspy = pytest.importorskip("dspy")


@pytest.mark.dspy
def test_real_dspy_gets_typed_predictions(server: LMServer) -> None:
    lm = dspy.LM("openai/test-model", api_base=server.url, api_key="test", cache=False)

    class Task(dspy.Signature):
        """Do the task."""

        question: str = dspy.InputField()
        n: int = dspy.OutputField()
        score: float = dspy.OutputField()
        tags: list[str] = dspy.OutputField()
        mode: Literal["fast", "slow"] = dspy.OutputField()
        ok: bool = dspy.OutputField()

    for adapter in (dspy.ChatAdapter(), dspy.JSONAdapter()):
        with dspy.context(lm=lm, adapter=adapter):
            for module in (dspy.Predict(Task), dspy.ChainOfThought(Task)):
                pred = module(question="q")
                assert isinstance(pred.n, int) and isinstance(pred.score, float)
                assert isinstance(pred.tags, list) and pred.mode in ("fast", "slow")
                assert isinstance(pred.ok, bool)


def test_latency_is_a_floor_from_arrival_and_fault_delays_add_to_it() -> None:
    # lower bounds only (a loaded machine can only make replies later, never earlier)
    with LMServer(latency=0.05) as srv:
        srv.reply("scripted")
        start = time.monotonic()
        reply = chat(srv, [{"role": "user", "content": "x"}])
        assert time.monotonic() - start >= 0.05
        assert reply.json()["choices"][0]["message"]["content"] == "scripted"
        srv.fault(Fault(delay=0.05))  # a delay-only fault, then the normal reply
        start = time.monotonic()
        assert chat(srv, [{"role": "user", "content": "x"}]).status_code == 200
        assert time.monotonic() - start >= 0.1


def _pipelined(srv: LMServer, texts: list[str]) -> list[bytes]:
    """Send requests back to back on one connection (one write), read the replies in order."""
    import socket

    requests = b""
    for text in texts:
        body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})
        requests += (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
    with socket.create_connection((srv.host, srv.port), timeout=5) as sock:
        sock.sendall(requests)
        data = b""
        while data.count(b"HTTP/1.1 ") < len(texts) or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            data += chunk
    return [b"HTTP/1.1 " + part for part in data.split(b"HTTP/1.1 ")[1:]]


def test_pipelined_requests_are_answered_in_order_behind_a_fault() -> None:
    with LMServer(latency=0.01) as srv:
        srv.add_rule("one", "first answer")
        srv.add_rule("two", "second answer")
        srv.add_rule("three", "third answer")
        srv.fault(Fault(delay=0.1, match="one"))  # the first waits in a task, the rest behind it
        replies = _pipelined(srv, ["one", "two", "three"])
        assert [r.split(b"\r\n", 1)[0] for r in replies] == [b"HTTP/1.1 200 OK"] * 3
        texts = [orjson.loads(r.split(b"\r\n\r\n", 1)[1]) for r in replies]
        contents = [t["choices"][0]["message"]["content"] for t in texts]
        assert contents == ["first answer", "second answer", "third answer"]
        srv.fault(Fault(status=503, match="two"))  # an immediate fault between two replies
        replies = _pipelined(srv, ["one", "two", "three"])
        assert [r.split(b"\r\n", 1)[0] for r in replies] == [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 503 Service Unavailable",
            b"HTTP/1.1 200 OK",
        ]


def test_a_client_leaving_a_hung_request_ends_its_server_task() -> None:
    import asyncio
    import socket

    with LMServer() as srv:
        srv.fault(Fault(hang=True))
        body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})
        with socket.create_connection((srv.host, srv.port), timeout=5) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            for _ in range(500):  # until the server has the request (bounded)
                if srv.requests:
                    break
                time.sleep(0.01)
            assert srv.requests

        async def pending() -> int:
            return len([t for t in asyncio.all_tasks() if t is not asyncio.current_task()])

        assert srv._loop is not None
        for _ in range(500):  # the connection's loss reaches the server (bounded)
            count = asyncio.run_coroutine_threadsafe(pending(), srv._loop).result(5)
            if count == 0 and not srv._connections:
                break
            time.sleep(0.01)
        assert count == 0 and not srv._connections


@pytest.mark.skipif(sys.platform != "linux", reason="the epoll selector is Linux's")
def test_the_server_loop_waits_to_the_microsecond_and_wakes_on_sockets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import select
    import socket

    from dspex.testing.server import _PreciseEpoll, _server_loop

    waits: list[float] = []
    real_select = select.select

    def spy(r: list[int], w: list[int], x: list[int], timeout: float) -> object:
        waits.append(timeout)
        return real_select(r, w, x, timeout)

    loop = _server_loop()
    try:
        monkeypatch.setattr(select, "select", spy)
        fired: list[float] = []
        # far enough out that even a loaded machine reaches the wait before the timer is due
        due = loop.time() + 0.2505
        loop.call_at(due, lambda: (fired.append(loop.time()), loop.stop()))
        loop.run_forever()
        assert fired[0] >= due  # never early
        assert any(0 < w < 0.2505 and w * 1e3 % 1 for w in waits)  # a fractional-ms wait
        a, b = socket.socketpair()
        with a, b:
            got: list[bytes] = []
            loop.add_reader(a.fileno(), lambda: (got.append(a.recv(10)), loop.stop()))
            late = loop.call_later(30, loop.stop)
            b.send(b"ping")
            loop.run_forever()  # woken by the socket, not the 30 s timer
            late.cancel()
            loop.remove_reader(a.fileno())
            assert got == [b"ping"]
    finally:
        loop.close()
    selector = _PreciseEpoll()
    try:

        def too_high(*args: object) -> object:
            raise ValueError("filedescriptor out of range in select()")

        monkeypatch.setattr(select, "select", too_high)
        assert selector.select(0.001) == [] and selector.exact is False  # epoll's own wait
    finally:
        selector.close()


@pytest.mark.skipif(sys.platform != "linux", reason="timer slack is Linux's")
def test_the_server_thread_has_no_timer_slack() -> None:
    """Its timed waits end when due, not up to the default 50 µs slack later; other threads
    keep theirs."""
    import asyncio
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    async def slack() -> int:
        return int(prctl(30, 0, 0, 0, 0))  # PR_GET_TIMERSLACK of the calling thread

    with LMServer() as srv:
        assert srv._loop is not None
        assert asyncio.run_coroutine_threadsafe(slack(), srv._loop).result(5) == 1
    assert asyncio.run(slack()) != 1
