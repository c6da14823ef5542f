"""Explicit downloads for ``Image.from_url`` / ``Audio.from_url`` (stdlib only, with a timeout).

The media modules import this module under the name ``requests`` and call ``requests.get``,
so code written against DSPy's modules (which use the ``requests`` package) can patch
``dspex.adapters.types.image.requests.get`` the same way. Nothing here runs unless a caller
asks for a download.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import CustomTypeError

__all__ = ["Response", "get"]


@dataclass
class Response:
    """The parts of an HTTP response the media types read."""

    status_code: int
    content: bytes
    headers: Any = field(default_factory=dict)  # case-insensitive ``get`` when from urllib
    url: str = ""

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise CustomTypeError(f"HTTP {self.status_code} fetching {self.url}")


def get(url: str, verify: bool = True, timeout: float | None = 30.0, **_: Any) -> Response:
    """GET ``url`` (follows redirects); ``verify=False`` skips TLS certificate checks."""
    context = None if verify else ssl._create_unverified_context()
    request = urllib.request.Request(url, headers={"User-Agent": "dspex"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as reply:
            return Response(reply.status, reply.read(), reply.headers, url)
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read(), exc.headers, url)
