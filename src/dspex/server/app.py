"""``create_app({"qa": program, ...})``: DSPex programs as an ASGI (FastAPI) application.

Endpoints::

    GET    /health                      ok | draining (503), slots in use, programs served
    GET    /v1/programs                 each program: signature, inputs/outputs, modules
    POST   /v1/programs/{name}/call     {"inputs": {...}, "stream": false, "timeout": 30}
    POST   /v1/programs                 load a saved program or a pipeline spec
    DELETE /v1/programs/{name}          stop serving a program
    GET    /v1/pools                    the process's worker pools (configured and running)
    GET    /metrics                     Prometheus text format
    GET    /openapi.json                per-program request/response schemas

Each call runs in its own ``dspex.context()`` with its own usage tracker, so neither
settings nor token usage leak between requests; it holds one of ``max_concurrency`` slots
(queued up to ``max_queue``, then 429) and is cancelled at its deadline (504). Errors map to
HTTP as :mod:`dspex.server.http` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import pydantic
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from dspex import settings
from dspex.errors import ConfigurationError, RequestDeadlineExceeded, UserError
from dspex.lm.usage import UsageTracker, _tracker
from dspex.server.http import error_body, status_for
from dspex.server.limits import Limiter
from dspex.server.metrics import ServerMetrics
from dspex.server.programs import ProgramEntry, ProgramTable, build_from_spec

__all__ = ["ServerOptions", "create_app"]


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """How a server admits and bounds calls."""

    max_concurrency: int = 64
    """Calls running at once."""
    max_queue: int = 256
    """Calls waiting for a slot before new ones are refused with 429."""
    timeout: float | None = 60.0
    """Default per-request deadline in seconds (a request may ask for less or more)."""
    max_timeout: float | None = 600.0
    """The longest deadline a request may ask for."""
    allow_load: bool = True
    """Whether ``POST /v1/programs`` / ``DELETE`` may change the programs served."""
    import_roots: tuple[str, ...] = ()
    """Top-level packages a load request's class path may name, besides ``dspex`` and
    ``dspy_import_roots``."""
    drain_timeout: float = 30.0
    """On shutdown, how long calls in flight may take to finish."""
    event_metrics: bool = False
    """Also export DSPex's telemetry events (per module kind) on ``/metrics``."""


class _State:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.programs = ProgramTable()
        self.limiter = Limiter(options.max_concurrency, options.max_queue)
        self.metrics = ServerMetrics(self.limiter.stats, event_metrics=options.event_metrics)


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    body = orjson.dumps(payload, default=_default, option=orjson.OPT_NON_STR_KEYS)
    return Response(body, status, dict(headers or {}), media_type="application/json")


def _default(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value, fallback=repr)


def _error(exc: BaseException, program: str | None = None) -> Response:
    status, headers = status_for(exc)
    return _json(error_body(exc, status, program), status, headers)


def _outputs(result: Any) -> dict[str, Any]:
    if hasattr(result, "toDict"):
        return dict(result.toDict())
    if isinstance(result, Mapping):
        return dict(result)
    return {"output": result}


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        payload = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise UserError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise UserError("the request body must be a JSON object")
    return payload


def _deadline(payload: Mapping[str, Any], options: ServerOptions) -> float | None:
    timeout = payload.get("timeout", options.timeout)
    if timeout is None:
        return options.max_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise UserError(f"'timeout' must be a positive number of seconds, got {timeout!r}")
    if options.max_timeout is not None:
        timeout = min(float(timeout), options.max_timeout)
    return float(timeout)


class _Call:
    """One admitted call: its deadline, usage tracker and settings scope."""

    def __init__(self, state: _State, entry: ProgramEntry, inputs: dict[str, Any]) -> None:
        self.state = state
        self.entry = entry
        self.inputs = inputs
        self.tracker = UsageTracker()
        self.started = time.perf_counter()

    def _scope(self) -> Any:
        # Each request runs in its own task, whose context is a copy: the tracker set here,
        # and any settings scope a program opens, stay with this request.
        _tracker.set(self.tracker)
        if settings.current().track_usage:
            return contextlib.nullcontext()
        return settings.context(track_usage=True)  # usage is always reported

    async def run(self) -> Any:
        with self._scope():
            return await self.entry.program.acall(**self.inputs)

    async def stream(self) -> AsyncIterator[Any]:
        with self._scope():
            async for item in self.entry.program.astream(**self.inputs):
                yield item

    def usage(self) -> dict[str, Any]:
        return self.tracker.get_lm_usage()

    def finish(self, status: int) -> None:
        self.state.metrics.observe(
            self.entry.name, status, time.perf_counter() - self.started, self.usage()
        )


def _expired(timeout: float | None, program: str) -> RequestDeadlineExceeded:
    return RequestDeadlineExceeded(
        f"the call to {program!r} passed its {timeout:g} s deadline and was cancelled",
        program=program,
        timeout=timeout,
    )


async def _admit(state: _State, name: str, deadline: float | None) -> None:
    """Take a slot within the deadline."""
    if state.limiter.try_acquire(name):
        return
    try:
        async with asyncio.timeout(deadline):
            await state.limiter.acquire(name)
    except TimeoutError:
        raise _expired(deadline, name) from None


async def _call_once(state: _State, call: _Call, deadline: float | None) -> Response:
    name = call.entry.name
    try:
        await _admit(state, name, deadline)
    except Exception as exc:
        call.finish(status_for(exc)[0])
        raise
    try:
        cm = asyncio.timeout(deadline)
        try:
            async with cm:
                result = await call.run()
        except TimeoutError:
            if not cm.expired():
                raise
            raise _expired(deadline, name) from None
    except Exception as exc:
        status = status_for(exc)[0]
        call.finish(status)
        return _error(exc, name)
    finally:
        state.limiter.release()
    call.finish(200)
    return _json({"program": name, "outputs": _outputs(result), "usage": call.usage()})


def _sse(event: str, payload: Any) -> bytes:
    data = orjson.dumps(payload, default=_default, option=orjson.OPT_NON_STR_KEYS)
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def _stream_item(item: Any) -> bytes:
    from dspex.primitives.streaming import StreamChunk

    if isinstance(item, StreamChunk):
        return _sse(
            "chunk",
            {
                "field": item.field,
                "chunk": item.chunk,
                "predictor": item.predictor,
                "is_last": item.is_last,
            },
        )
    metrics = getattr(item, "metrics", None)
    if callable(metrics) and hasattr(item, "depth"):  # a pipeline step finished
        return _sse("step", metrics())
    return b""


async def _events(state: _State, call: _Call, deadline: float | None) -> AsyncIterator[bytes]:
    """SSE: ``chunk``/``step`` events, then ``prediction`` (or ``error``), then ``done``."""
    name, status = call.entry.name, 200
    final: Any = None
    streams = callable(getattr(call.entry.program, "astream", None))
    try:
        cm = asyncio.timeout(deadline)
        try:
            async with cm:
                if streams:
                    async for item in call.stream():
                        data = _stream_item(item)
                        if data:
                            yield data
                        else:
                            final = item
                else:
                    final = await call.run()
        except TimeoutError:
            if not cm.expired():
                raise
            raise _expired(deadline, name) from None
        if hasattr(final, "state") and hasattr(final, "to_prediction"):  # PipelineResult
            final = final.to_prediction()
        yield _sse(
            "prediction", {"program": name, "outputs": _outputs(final), "usage": call.usage()}
        )
    except Exception as exc:
        status = status_for(exc)[0]
        yield _sse("error", error_body(exc, status, name))
    finally:
        call.finish(status)
    yield _sse("done", {})


class _SlotStream(StreamingResponse):
    """A streaming response that gives its call slot back however the stream ends."""

    def __init__(self, content: AsyncIterator[bytes], limiter: Limiter) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._limiter.release()


def _openapi(app: FastAPI, state: _State) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for entry in state.programs:
        prefix = f"program_{entry.name}"
        inputs = entry.schema.model.model_json_schema(
            ref_template=f"#/components/schemas/{prefix}__{{model}}"
        )
        for key, sub in inputs.pop("$defs", {}).items():
            schemas[f"{prefix}__{key}"] = sub
        schemas[f"{prefix}__Inputs"] = inputs
        schemas[f"{prefix}__Outputs"] = entry.schema.output_schema()
        schemas[f"{prefix}__Request"] = {
            "type": "object",
            "properties": {
                "inputs": {"$ref": f"#/components/schemas/{prefix}__Inputs"},
                "stream": {"type": "boolean", "default": False},
                "timeout": {"type": "number", "exclusiveMinimum": 0},
            },
            "required": ["inputs"],
            "additionalProperties": False,
        }
        schemas[f"{prefix}__Response"] = {
            "type": "object",
            "properties": {
                "program": {"type": "string", "const": entry.name},
                "outputs": {"$ref": f"#/components/schemas/{prefix}__Outputs"},
                "usage": {"type": "object", "additionalProperties": {"type": "object"}},
            },
            "required": ["program", "outputs", "usage"],
        }
        doc["paths"][f"/v1/programs/{entry.name}/call"] = {
            "post": {
                "summary": f"Call {entry.name}"
                + (f": {entry.schema.signature}" if entry.schema.signature else ""),
                "description": entry.schema.instructions or "",
                "operationId": f"call_{entry.name}",
                "tags": ["programs"],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{prefix}__Request"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The prediction (or, with stream, an SSE stream)",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{prefix}__Response"}
                            },
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **{
                        str(code): {"description": text}
                        for code, text in (
                            (422, "invalid inputs"),
                            (429, "saturated (Retry-After)"),
                            (502, "LM or worker error"),
                            (503, "draining or upstream saturated (Retry-After)"),
                            (504, "deadline exceeded"),
                        )
                    },
                },
            }
        }
    return doc


def create_app(
    programs: Mapping[str, Any] | None = None,
    *,
    options: ServerOptions | None = None,
    title: str = "DSPex programs",
    **option_changes: Any,
) -> FastAPI:
    """An ASGI app serving ``programs`` by name (``options`` or keyword changes to them)."""
    import dataclasses

    try:
        opts = dataclasses.replace(options or ServerOptions(), **option_changes)
    except TypeError as exc:
        raise ConfigurationError(f"create_app: {exc}") from None
    state = _State(opts)
    for name, program in (programs or {}).items():
        state.programs.add(name, program)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.limiter.start_draining()
            try:
                async with asyncio.timeout(opts.drain_timeout):
                    await state.limiter.wait_idle()
            except TimeoutError:
                pass
            state.metrics.close()

    from dspex import __version__

    app = FastAPI(title=title, version=__version__, lifespan=lifespan)
    app.state.dspex = state

    @app.get("/health", tags=["server"])
    async def health() -> Response:
        stats = state.limiter.stats()
        body = {
            "status": "draining" if stats["draining"] else "ok",
            "programs": len(state.programs),
        }
        return _json({**body, **stats}, 503 if stats["draining"] else 200)

    @app.get("/v1/programs", tags=["programs"])
    async def list_programs() -> Response:
        return _json({"programs": [entry.as_dict() for entry in state.programs]})

    @app.get("/v1/programs/{name}", tags=["programs"])
    async def get_program(name: str) -> Response:
        try:
            return _json(state.programs.get(name).as_dict())
        except Exception as exc:
            return _error(exc, name)

    @app.post("/v1/programs/{name}/call", tags=["programs"])
    async def call(name: str, request: Request) -> Response:
        try:
            entry = state.programs.get(name)
            payload = await _body(request)
            unknown = set(payload) - {"inputs", "stream", "timeout"}
            if unknown:
                raise UserError(
                    f"unknown request keys {sorted(unknown)}; send "
                    '{"inputs": {...}, "stream": false, "timeout": seconds}'
                )
            inputs = entry.schema.validate(payload.get("inputs", {}))
            timeout = _deadline(payload, opts)
        except pydantic.ValidationError as exc:
            state.metrics.observe(name, 422, 0.0, None)
            detail = orjson.loads(exc.json(include_url=False))
            return _json(
                {"error": {"type": "ValidationError", "message": str(exc), "status": 422,
                           "program": name, "detail": detail}},
                422,
            )  # fmt: skip
        except Exception as exc:
            return _error(exc, name)
        run = _Call(state, entry, inputs)
        if not payload.get("stream"):
            try:
                return await _call_once(state, run, timeout)
            except Exception as exc:
                return _error(exc, name)
        try:
            await _admit(state, name, timeout)
        except Exception as exc:
            run.finish(status_for(exc)[0])
            return _error(exc, name)
        return _SlotStream(_events(state, run, timeout), state.limiter)

    @app.post("/v1/programs", tags=["programs"], status_code=201)
    async def load(request: Request) -> Response:
        try:
            if not opts.allow_load:
                raise UserError("this server does not allow loading programs (allow_load=False)")
            payload = await _body(request)
            from dspex.server.programs import check_name

            name = check_name(payload.get("name"))
            try:
                program = await asyncio.to_thread(build_from_spec, payload, opts.import_roots)
            except ConfigurationError as exc:  # bad arguments in the spec, not our setup
                raise UserError(str(exc)) from exc
            entry = state.programs.add(
                name, program, origin="loaded", replace=bool(payload.get("replace"))
            )
        except Exception as exc:
            return _error(exc)
        app.openapi_schema = None
        return _json(entry.as_dict(), 201)

    @app.delete("/v1/programs/{name}", tags=["programs"])
    async def delete(name: str) -> Response:
        try:
            if not opts.allow_load:
                raise UserError("this server does not allow removing programs (allow_load=False)")
            entry = state.programs.remove(name)
        except Exception as exc:
            return _error(exc, name)
        app.openapi_schema = None
        return _json({"deleted": entry.name})

    @app.get("/v1/pools", tags=["server"])
    async def pools() -> Response:
        from dspex.pool.cli import status

        try:
            rows = await asyncio.to_thread(status)
        except Exception as exc:
            return _error(exc)
        return _json({"pools": rows})

    @app.get("/metrics", tags=["server"])
    async def metrics() -> Response:
        body, content_type = state.metrics.render()
        return Response(body, 200, media_type=content_type)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi(app, state)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def add_program(app: FastAPI, name: str, program: Any) -> None:
    """Serve ``program`` under ``name`` on an app made by :func:`create_app`."""
    state: _State = app.state.dspex
    state.programs.add(name, program)
    app.openapi_schema = None
