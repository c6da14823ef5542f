"""``streamify``: run a program and yield its output as it is written.

The program runs as a task with a *send stream* in its settings context. A native ``Predict``
that a :class:`~dspex.streaming.listener.StreamListener` listens to streams its LM reply and
sends the listened fields as :class:`StreamResponse` chunks; callbacks send
:class:`StatusMessage` items; the final ``Prediction`` ends the stream.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from typing import Any

import orjson

from dspex import settings
from dspex._sync import run_sync
from dspex.primitives.prediction import Prediction
from dspex.streaming.listener import StreamListener, find_predictor_for_stream_listeners
from dspex.streaming.messages import (
    StatusMessage,
    StatusMessageProvider,
    StatusStreamingCallback,
    StreamResponse,
)

__all__ = [
    "SendStream",
    "apply_sync_streaming",
    "stream_predict",
    "streamify",
    "streaming_response",
]


class _Done:
    __slots__ = ("error", "value")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


class _Sent:
    """What :meth:`SendStream.send` returns: already done, so awaiting it is optional."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator that finishes at once


_SENT = _Sent()


class SendStream:
    """Where a running program sends stream items; safe to call from any thread."""

    def __init__(self, by_predict: dict[int, list[StreamListener]]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.by_predict = by_predict

    def send(self, item: Any) -> _Sent:
        """Queue ``item`` for the stream's reader. Sync code just calls it; async code may
        ``await`` it too (DSPy's send stream is awaited: ``await settings.send_stream.send(x)``)."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self._loop:
            self._queue.put_nowait(item)
        else:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        return _SENT

    async def get(self) -> Any:
        return await self._queue.get()

    def listeners(self, predictor: Any) -> list[StreamListener]:
        return self.by_predict.get(id(predictor), [])


async def stream_predict(predictor: Any, kwargs: dict[str, Any]) -> Prediction:
    """Run ``predictor`` streaming its reply; send the listened fields' chunks."""
    stream: SendStream = settings.current().send_stream
    listeners = {x.signature_field_name: x for x in stream.listeners(predictor)}
    result: Prediction | None = None
    async for item in predictor.astream(**kwargs):
        if isinstance(item, Prediction):
            result = item
            continue
        listener = listeners.get(item.field)
        if listener is None or not listener.accepts():
            continue
        if not listener.stream_start and not item.chunk and not item.is_last:
            continue
        listener.stream_start = True
        listener.stream_end = item.is_last
        stream.send(StreamResponse(listener.predict_name, item.field, item.chunk, item.is_last))
    if result is None:  # pragma: no cover - astream always ends with the prediction
        raise RuntimeError("the predictor's stream ended without a prediction")
    return result


def listened(predictor: Any) -> bool:
    """Whether a stream listener is waiting for ``predictor``'s output right now."""
    stream = settings.current().send_stream
    return isinstance(stream, SendStream) and bool(stream.listeners(predictor))


def streamed_sync(predictor: Any, kwargs: dict[str, Any]) -> Prediction:
    """:func:`stream_predict` from sync code (a sync ``forward`` inside ``streamify``)."""
    result: Prediction = run_sync(stream_predict(predictor, kwargs))
    return result


def streamify(
    program: Any,
    status_message_provider: StatusMessageProvider | None = None,
    stream_listeners: list[StreamListener] | None = None,
    include_final_prediction_in_output_stream: bool = True,
    is_async_program: bool = False,
    async_streaming: bool = True,
) -> Callable[..., Any]:
    """Wrap ``program``: calling the result returns an async generator (a sync one with
    ``async_streaming=False``) yielding :class:`StreamResponse` chunks of the listened fields,
    :class:`StatusMessage` items, then the final ``Prediction``.

    With ``include_final_prediction_in_output_stream=False`` the prediction is yielded only
    when nothing was streamed (no listener, or no listened field started).
    """
    listeners = list(stream_listeners or [])
    by_predict = find_predictor_for_stream_listeners(program, listeners) if listeners else {}
    if is_async_program:
        call: Callable[..., Any] = program.acall
    else:
        from dspex.utils.asyncify import asyncify

        call = asyncify(program)

    async def generate(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        for listener in listeners:
            listener.reset()
        stream = SendStream(by_predict)
        callbacks = list(settings.current().callbacks)
        if not any(isinstance(c, StatusStreamingCallback) for c in callbacks):
            callbacks.append(StatusStreamingCallback(status_message_provider))

        async def run() -> None:
            try:
                with settings.context(
                    send_stream=stream, callbacks=callbacks, stream_listeners=listeners
                ):
                    value = await call(*args, **kwargs)
            except BaseException as exc:
                stream.send(_Done(error=exc))
                raise
            stream.send(_Done(value))

        task = asyncio.create_task(run())
        try:
            while True:
                item = await stream.get()
                if not isinstance(item, _Done):
                    yield item
                    continue
                if item.error is not None:
                    raise item.error
                if include_final_prediction_in_output_stream or not any(
                    x.stream_start for x in listeners
                ):
                    yield item.value
                return
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    if async_streaming:
        return generate

    def sync_generate(*args: Any, **kwargs: Any) -> Generator[Any, None, None]:
        return apply_sync_streaming(generate(*args, **kwargs))

    return sync_generate


def apply_sync_streaming(async_generator: AsyncIterator[Any]) -> Generator[Any, None, None]:
    """Iterate an async stream from sync code (it runs on a helper thread's event loop)."""
    items: queue.Queue[Any] = queue.Queue()
    done = object()
    context = contextvars.copy_context()

    async def pump() -> None:
        try:
            async for item in async_generator:
                items.put(item)
        except BaseException as exc:
            items.put(_Done(error=exc))
        finally:
            items.put(done)

    thread = threading.Thread(target=context.run, args=(asyncio.run, pump()), daemon=True)
    thread.start()
    while True:
        item = items.get()
        if item is done:
            break
        if isinstance(item, _Done) and item.error is not None:
            raise item.error
        yield item
    thread.join()


async def streaming_response(streamer: AsyncIterator[Any]) -> AsyncGenerator[str, None]:
    """Server-sent events for an HTTP streaming response: ``data: {...}`` per item, then
    ``data: [DONE]``."""
    async for value in streamer:
        if isinstance(value, Prediction):
            data: dict[str, Any] = {"prediction": dict(value.items())}
        elif isinstance(value, StreamResponse):
            data = {
                "chunk": {
                    "predict_name": value.predict_name,
                    "signature_field_name": value.signature_field_name,
                    "chunk": value.chunk,
                    "is_last_chunk": value.is_last_chunk,
                }
            }
        elif isinstance(value, StatusMessage):
            data = {"status_message": value.message}
        elif isinstance(value, str) and value.startswith("data:"):
            yield value
            continue
        else:
            from dspex.errors import CallError

            raise CallError(f"Unknown chunk value type: {value}")
        yield f"data: {orjson.dumps(data).decode()}\n\n"
    yield "data: [DONE]\n\n"
