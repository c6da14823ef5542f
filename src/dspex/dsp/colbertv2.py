"""A client for a ColBERTv2 retrieval server (the ``wiki17_abstracts`` server of DSPy's tutorials).

``ColBERTv2(url, port=None, post_requests=False)(query, k=10, simplify=False)`` returns the
server's top ``k`` passages as :class:`dotdict` records (``text``, ``score``, ``pid``... and
``long_text``, the name DSPy's ``Retrieve`` reads), or just their texts with ``simplify=True``.
Answers are cached in memory per ``(url, query, k)``, as DSPy caches them; each call gets its
own copy. A server-reported error or an unexpected reply raises :class:`RetrieverError` (a
``ValueError``, as DSPy raises); an HTTP failure raises ``requests``' own error.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import requests

from dspex.dsp.utils import dotdict
from dspex.errors import CallError, RetrieverError

__all__ = [
    "ColBERTv2",
    "colbertv2_get_request",
    "colbertv2_get_request_v2",
    "colbertv2_post_request",
    "colbertv2_post_request_v2",
]

MAX_K = 100
"""The largest ``k`` the hosted ColBERTv2 servers answer."""
TIMEOUT = 10.0


class _Memo:
    """A bounded, thread-safe memo of ``(url, query, k) -> passages``; hits are deep copies."""

    def __init__(
        self, fn: Callable[[str, str, int], list[dict[str, Any]]], size: int = 4096
    ) -> None:
        self.fn, self.size = fn, size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str, int], list[dict[str, Any]]] = OrderedDict()

    def __call__(self, url: str, query: str, k: int) -> list[dict[str, Any]]:
        key = (url, query, k)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return copy.deepcopy(self._entries[key])
        value = self.fn(url, query, k)
        with self._lock:
            self._entries[key] = copy.deepcopy(value)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def cache_clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _topk(reply: Any, k: int) -> list[dict[str, Any]]:
    body = reply.json()
    if not isinstance(body, dict):
        raise RetrieverError(f"ColBERTv2 server returned an unexpected response: {body!r}")
    if body.get("error"):
        raise RetrieverError(
            f"ColBERTv2 server returned an error: {body.get('message', 'Unknown error')}"
        )
    if "topk" not in body:
        raise RetrieverError(f"ColBERTv2 server returned an unexpected response: {body}")
    return list(body["topk"][:k])


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 0 < k <= MAX_K:
        raise CallError(f"ColBERTv2: k must be an integer in 1..{MAX_K}, got {k!r}")


def colbertv2_get_request_v2(url: str, query: str, k: int) -> list[dict[str, Any]]:
    """``GET url?query=...&k=...``: the top ``k`` passages, each with ``long_text`` = ``text``."""
    _check_k(k)
    params: dict[str, str | int] = {"query": query, "k": k}
    reply = requests.get(url, params=params, timeout=TIMEOUT)
    reply.raise_for_status()
    return [{**passage, "long_text": passage["text"]} for passage in _topk(reply, k)]


def colbertv2_post_request_v2(url: str, query: str, k: int) -> list[dict[str, Any]]:
    """``POST url`` with ``{"query", "k"}`` as JSON: the top ``k`` passages.

    DSPy returns the server's records unchanged here; DSPEx adds ``long_text`` as the GET form
    does, so ``Retrieve`` and ``simplify=True`` work with either.
    """
    _check_k(k)
    reply = requests.post(
        url,
        json={"query": query, "k": k},
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=TIMEOUT,
    )
    reply.raise_for_status()
    return [{**passage, "long_text": passage["text"]} for passage in _topk(reply, k)]


colbertv2_get_request = _Memo(lambda url, query, k: colbertv2_get_request_v2(url, query, k))
colbertv2_post_request = _Memo(lambda url, query, k: colbertv2_post_request_v2(url, query, k))


class ColBERTv2:
    """A ColBERTv2 server as a retriever: ``dspex.configure(rm=ColBERTv2(url=...))``."""

    def __init__(
        self,
        url: str = "http://0.0.0.0",
        port: str | int | None = None,
        post_requests: bool = False,
    ) -> None:
        self.post_requests = post_requests
        self.url = f"{url}:{port}" if port else url

    def __repr__(self) -> str:
        return f"ColBERTv2(url={self.url!r}, post_requests={self.post_requests})"

    def __call__(
        self, query: str, k: int = 10, simplify: bool = False
    ) -> list[str] | list[dotdict]:
        fetch = colbertv2_post_request if self.post_requests else colbertv2_get_request
        topk = fetch(self.url, query, k)
        if simplify:
            return [passage["long_text"] for passage in topk]
        return [dotdict(passage) for passage in topk]
