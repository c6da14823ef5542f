"""Native output streaming: the LM's text deltas split into field-level chunks.

:class:`FieldSplitter` is sans-I/O: feed it text as it arrives and it returns
:class:`~dspex.primitives.streaming.StreamChunk` items for the signature's output fields,
cut at ChatAdapter's ``[[ ## field ## ]]`` markers (held back while a marker may still be
forming, whitespace around a value trimmed as the parser trims it). :func:`astream` drives a
``Predict`` flow with it: chunks while the reply streams, then the parsed ``Prediction``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Generator, Iterable
from typing import TYPE_CHECKING, Any

from dspex.errors import CallError
from dspex.primitives.streaming import StreamChunk

if TYPE_CHECKING:
    from dspex.adapters.base import LMRequest
    from dspex.lm.base import BaseLM
    from dspex.primitives.prediction import Prediction

__all__ = ["FieldSplitter", "astream"]

_MARKER = re.compile(r"\[\[ ## (\w+) ## \]\]")


class FieldSplitter:
    """Splits streamed ChatAdapter text into chunks of the named output fields."""

    def __init__(self, fields: Iterable[str], predictor: str | None = None) -> None:
        self.fields = frozenset(fields)
        self.predictor = predictor
        self._buf = ""
        self._field: str | None = None
        self._started = False

    def feed(self, text: str) -> list[StreamChunk]:
        """The chunks that ``text`` (the next piece of the reply) completes."""
        out: list[StreamChunk] = []
        self._buf += text
        while (match := _MARKER.search(self._buf)) is not None:
            self._emit(out, self._buf[: match.start()], last=True)
            name = match.group(1)
            self._field = name if name in self.fields else None
            self._started = False
            self._buf = self._buf[match.end() :]
        hold = _holdback(self._buf)
        self._emit(out, self._buf[:hold], last=False)
        self._buf = self._buf[hold:]
        return out

    def close(self) -> list[StreamChunk]:
        """The last chunk of the field still open when the reply ends."""
        out: list[StreamChunk] = []
        self._emit(out, self._buf, last=True)
        self._buf = ""
        self._field = None
        return out

    def _emit(self, out: list[StreamChunk], text: str, *, last: bool) -> None:
        if self._field is None:
            return
        if not self._started:
            text = text.lstrip()
        if last:
            text = text.rstrip()
        if text or last:
            out.append(StreamChunk(self._field, text, self.predictor, last))
            self._started = self._started or bool(text)
        if last:
            self._field = None


def _holdback(buf: str) -> int:
    """Where text that may still turn into a marker or trailing whitespace starts."""
    end = buf.find("[[")
    if end == -1:
        end = len(buf) - 1 if buf.endswith("[") else len(buf)
    return len(buf[:end].rstrip())


async def astream(
    lm: BaseLM,
    flow: Generator[LMRequest, list[Any], Prediction],
    fields: Iterable[str],
    *,
    predictor: str | None = None,
) -> AsyncIterator[StreamChunk | Prediction]:
    """Drive a Predict flow, streaming its first LM request; yield chunks, then the result."""
    request = next(flow)
    if int(request.options.get("n") or 1) > 1:
        raise CallError("streaming returns one completion: call without n > 1")
    splitter = FieldSplitter(fields, predictor)
    parts: list[str] = []
    stream = getattr(lm, "astream", None)
    if stream is None:  # an LM that cannot stream answers in one piece
        deltas: AsyncIterator[str] = _once(
            await lm.acall(messages=request.messages, **request.options)
        )
    else:
        deltas = stream(request.messages, **request.options)
    async for delta in deltas:
        parts.append(delta)
        for chunk in splitter.feed(delta):
            yield chunk
    for chunk in splitter.close():
        yield chunk
    outputs: list[Any] = ["".join(parts)]
    try:
        while True:  # a fallback request (e.g. Chat -> JSON) is answered without streaming
            request = flow.send(outputs)
            outputs = await lm.acall(messages=request.messages, **request.options)
    except StopIteration as stop:
        yield stop.value


async def _once(texts: list[str]) -> AsyncIterator[str]:
    yield texts[0] if texts else ""
