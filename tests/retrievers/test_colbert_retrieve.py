"""Native ``ColBERTv2`` and ``Retrieve`` against a real loopback ColBERTv2-style server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests

import dspex
from dspex.dsp import colbertv2
from dspex.errors import CallError, ConfigurationError, RetrieverError

PASSAGES = [
    {"text": f"passage {i} | about the sky", "pid": i, "score": 10.0 - i} for i in range(20)
]


class Server:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.reply: Any = None  # None: answer from PASSAGES
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, method: str, params: dict[str, Any]) -> None:
                outer.requests.append((method, params))
                body = (
                    outer.reply
                    if outer.reply is not None
                    else {"topk": PASSAGES[: int(params["k"])]}
                )
                data = json.dumps(body).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                self._answer("GET", {k: v[0] for k, v in query.items()})

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                self._answer("POST", json.loads(self.rfile.read(length)))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/search"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    colbertv2.colbertv2_get_request.cache_clear()
    colbertv2.colbertv2_post_request.cache_clear()
    s = Server()
    yield s
    s.close()


@pytest.mark.parametrize("post", [False, True])
def test_colbert_returns_top_k_passages_and_caches(server: Server, post: bool) -> None:
    rm = dspex.ColBERTv2(url=server.url, post_requests=post)
    found = rm("why is the sky blue", k=3)
    assert [p.pid for p in found] == [0, 1, 2] and found[0].long_text == PASSAGES[0]["text"]
    found[0]["text"] = "mutated"  # a caller's change never reaches the cache
    again = rm("why is the sky blue", k=3, simplify=True)
    assert again == [p["text"] for p in PASSAGES[:3]]
    assert len(server.requests) == 1
    method, params = server.requests[0]
    assert method == ("POST" if post else "GET") and params["query"] == "why is the sky blue"
    assert str(params["k"]) == "3"


def test_server_errors_are_typed(server: Server) -> None:
    rm = dspex.ColBERTv2(url=server.url)
    server.reply = {"error": True, "message": "index not loaded"}
    with pytest.raises(RetrieverError, match="index not loaded"):
        rm("q1")
    server.reply = {"unexpected": 1}
    with pytest.raises(RetrieverError, match="unexpected response"):
        rm("q2")
    server.reply, server.status = {"topk": []}, 500
    with pytest.raises(requests.HTTPError):
        rm("q3")
    with pytest.raises(CallError, match=r"1\.\.100"):
        rm("q4", k=101)
    assert isinstance(RetrieverError("x"), ValueError)  # DSPy raises ValueError here


def test_retrieve_reads_the_configured_rm(server: Server) -> None:
    retrieve = dspex.Retrieve(k=2)
    with pytest.raises(ConfigurationError, match="No RM is loaded"):
        retrieve("q")
    with dspex.context(rm=dspex.ColBERTv2(url=server.url)):
        assert retrieve("q").passages == [PASSAGES[0]["text"], PASSAGES[1]["text"]]
        assert len(retrieve("q", k=4).passages) == 4
    with dspex.context(rm=lambda query, k: ["plain text"] * k):
        import asyncio

        assert asyncio.run(retrieve.acall("q")).passages == ["plain text"] * 2
    assert retrieve.dump_state() == {"k": 2}
    assert dspex.Retrieve().load_state({"k": 5}).k == 5


def test_same_passages_as_dspy(server: Server) -> None:
    dspy = pytest.importorskip("dspy")
    ours = dspex.ColBERTv2(url=server.url)("sky", k=4)
    theirs = dspy.ColBERTv2(url=server.url)("sky", k=4)
    assert [dict(p) for p in ours] == [dict(p) for p in theirs]
    with (
        dspex.context(rm=dspex.ColBERTv2(url=server.url)),
        dspy.context(rm=dspy.ColBERTv2(url=server.url)),
    ):
        assert dspex.Retrieve(k=3)("sky").passages == dspy.Retrieve(k=3)("sky").passages
