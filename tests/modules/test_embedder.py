"""Native ``dspex.Embedder`` against DSPy 3.4.1's ``dspy.Embedder``: callables and a hosted
model served by a real local HTTP server (the same request bytes, the same arrays), caching in
memory and on disk, the async call, and the failure paths."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.clients.embedding import Embedder
from dspex.errors import CallError, ConfigurationError, LMServerError
from dspex.lm.cache import shared_cache

np = pytest.importorskip("numpy")


class _EmbeddingServer:
    """A real OpenAI-style ``/v1/embeddings`` endpoint on loopback that records each body;
    ``fail`` answers that many requests with 500 first."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.fail = 0
        self.malformed = False
        self.reverse = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                owner.bodies.append(body)
                if owner.fail > 0:
                    owner.fail -= 1
                    self._send(500, {"error": {"message": "boom"}})
                    return
                if owner.malformed:
                    self._send(200, {"object": "list"})
                    return
                inputs = json.loads(body)["input"]
                data = [
                    {"object": "embedding", "index": i, "embedding": [len(t) / 10, 0.5, 1.0]}
                    for i, t in enumerate(inputs)
                ]
                if owner.reverse:  # "index" says which is which
                    data.reverse()
                self._send(200, {"object": "list", "data": data, "model": "m"})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                out = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_EmbeddingServer]:
    srv = _EmbeddingServer()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    with dspex.context(cache_dir=tmp_path / "cache"):
        yield tmp_path / "cache"


def _letters(texts: list[str]) -> list[list[float]]:
    return [[t.count("a") / 3, t.count("b") / 7, len(t) / 11] for t in texts]


def test_callable_results_match_dspy() -> None:
    dspy = pytest.importorskip("dspy")
    texts = ["abc", "bb", "a", "ccccab", "b"]
    ours = Embedder(_letters, batch_size=2, caching=False)
    theirs = dspy.Embedder(_letters, batch_size=2, caching=False)
    for got, want in ((ours(texts), theirs(texts)), (ours("abba"), theirs("abba"))):
        assert got.dtype == want.dtype == np.float32
        assert got.shape == want.shape
        assert got.tobytes() == want.tobytes()


# litellm's embedding path builds a pydantic schema that warns about TypedDict ReadOnly items
@pytest.mark.filterwarnings("ignore:.*ReadOnly. qualifier:UserWarning")
def test_hosted_model_sends_dspys_bytes_and_returns_its_arrays(server: _EmbeddingServer) -> None:
    dspy = pytest.importorskip("dspy")
    texts = ["a", "bb", "ccc"]
    options = {"api_base": server.url, "api_key": "sk-test", "batch_size": 2}
    # DSPy's async path (its sync litellm call leaves an event loop open for the next
    # asyncio.run in the process); both go through litellm to the same request
    theirs = asyncio.run(
        dspy.Embedder("openai/text-embedding-3-small", caching=False, **options).acall(texts)
    )
    dspy_bodies = list(server.bodies)
    assert len(dspy_bodies) == 2  # batch_size=2: two requests
    ours = Embedder("openai/text-embedding-3-small", caching=False, **options)
    for result in (ours(texts), asyncio.run(ours.acall(texts))):
        assert server.bodies[-2:] == dspy_bodies
        assert result.tobytes() == theirs.tobytes()
        assert result[:, 0].tolist() == pytest.approx([0.1, 0.2, 0.3])


def test_bare_model_names_mean_openai(server: _EmbeddingServer) -> None:
    out = Embedder("text-embedding-ada-002", api_base=server.url, api_key="k", caching=False)(
        ["x"], dimensions=3
    )
    assert out.shape == (1, 3)
    assert json.loads(server.bodies[0]) == {
        "model": "text-embedding-ada-002",
        "input": ["x"],
        "dimensions": 3,
    }


def test_rows_follow_the_reply_index(server: _EmbeddingServer) -> None:
    server.reverse = True
    out = Embedder("openai/e", api_base=server.url, api_key="k", caching=False)(["a", "bbb"])
    assert out[:, 0].tolist() == pytest.approx([0.1, 0.3])


def test_cache_in_memory_then_on_disk_and_the_per_call_switch(server: _EmbeddingServer) -> None:
    embedder = Embedder("openai/e", api_base=server.url, api_key="k1")
    first = embedder(["hello", "world"])
    assert embedder(["hello", "world"]).tobytes() == first.tobytes()
    assert len(server.bodies) == 1
    # another key, same request: a cache hit (credentials are not part of the key)
    Embedder("openai/e", api_base=server.url, api_key="k2")(["hello", "world"])
    assert len(server.bodies) == 1
    shared_cache(dspex.settings.current().cache_dir).clear_memory()
    assert embedder(["hello", "world"]).tobytes() == first.tobytes()  # from disk
    assert len(server.bodies) == 1
    embedder(["hello", "world"], caching=False)
    assert len(server.bodies) == 2
    Embedder("openai/e", api_base=server.url, api_key="k1", caching=False)(["hello"])
    Embedder("openai/e", api_base=server.url, api_key="k1", caching=False)(["hello"])
    assert len(server.bodies) == 4
    # options are part of the key
    embedder(["hello", "world"], dimensions=2)
    assert len(server.bodies) == 5


def test_callables_are_cached_by_identity() -> None:
    calls: list[list[str]] = []

    def one(texts: list[str]) -> list[list[float]]:
        calls.append(texts)
        return [[1.0, 2.0] for _ in texts]

    def two(texts: list[str]) -> list[list[float]]:
        calls.append(texts)
        return [[3.0, 4.0] for _ in texts]

    assert Embedder(one)(["x"]).tolist() == [[1.0, 2.0]]
    assert Embedder(one)(["x"]).tolist() == [[1.0, 2.0]]
    assert Embedder(two)(["x"]).tolist() == [[3.0, 4.0]]  # not the other callable's result
    assert len(calls) == 2
    shared_cache(dspex.settings.current().cache_dir).clear_memory()
    assert Embedder(one)(["x"]).tolist() == [[1.0, 2.0]]
    assert len(calls) == 2


def test_acall_shares_the_rules(server: _EmbeddingServer) -> None:
    embedder = Embedder("openai/e", api_base=server.url, api_key="k", batch_size=1)

    async def main() -> tuple[Any, Any]:
        return await embedder.acall(["a", "bb"]), await embedder.acall("bb")

    both, single = asyncio.run(main())
    assert both[:, 0].tolist() == pytest.approx([0.1, 0.2])
    assert single.shape == (3,)
    assert len(server.bodies) == 2  # "bb" came from the cache the second time
    assert asyncio.run(Embedder(_letters).acall(["ab"])).shape == (1, 3)


def test_server_errors_are_retried_then_typed(server: _EmbeddingServer) -> None:
    server.fail = 1
    out = Embedder("openai/e", api_base=server.url, api_key="k", caching=False)(["a"])
    assert out.shape == (1, 3) and len(server.bodies) == 2
    server.fail = 10
    with pytest.raises(LMServerError):
        Embedder("openai/e", api_base=server.url, api_key="k", caching=False, num_retries=1)(["a"])


def test_malformed_reply_is_a_typed_error(server: _EmbeddingServer) -> None:
    server.malformed = True
    with pytest.raises(dspex.errors.LMError):
        Embedder("openai/e", api_base=server.url, api_key="k", num_retries=0)(["a"])


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError):  # DSPy raises ValueError too
        Embedder(123)(["x"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Embedder(123)(["x"])  # type: ignore[arg-type]
    with pytest.raises(CallError):
        Embedder(_letters)(["x", 3])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError):
        Embedder(_letters, batch_size=0)
    with pytest.raises(ConfigurationError, match="no embeddings API"):
        Embedder("anthropic/claude", api_key="k")(["x"])
    with pytest.raises(CallError, match="shape"):
        Embedder(lambda texts: [[1.0]], caching=False)(["x", "y"])


def test_public_name_is_native() -> None:
    assert dspex.Embedder is Embedder
    from dspex.clients import Embedder as from_clients

    assert from_clients is Embedder
