"""The server's parts in process: admission, error mapping, schemas, the ASGI app."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import dspex
from dspex.errors import (
    ConfigurationError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    PipelineError,
    PoolSaturated,
    ServerDraining,
    ServerSaturated,
    StepInputMissing,
    UserError,
)
from dspex.server.http import status_for
from dspex.server.limits import Limiter
from dspex.server.schema import describe
from dspex.testing import LMServer

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")


async def test_limiter_queues_then_refuses_then_drains() -> None:
    limiter = Limiter(max_concurrency=1, max_queue=1)
    await limiter.acquire()
    queued = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    assert limiter.waiting == 1
    with pytest.raises(ServerSaturated):
        await limiter.acquire()
    limiter.release()  # hands the slot to the queued caller
    await queued
    assert (limiter.in_flight, limiter.waiting) == (1, 0)
    limiter.start_draining()
    with pytest.raises(ServerDraining):
        await limiter.acquire()
    idle = asyncio.ensure_future(limiter.wait_idle())
    await asyncio.sleep(0)
    assert not idle.done()
    limiter.release()
    await idle
    assert limiter.stats()["in_flight"] == 0


async def test_a_cancelled_waiter_gives_its_slot_on() -> None:
    limiter = Limiter(max_concurrency=1, max_queue=2)
    await limiter.acquire()
    first = asyncio.ensure_future(limiter.acquire())
    second = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    first.cancel()
    limiter.release()
    await second
    assert (limiter.in_flight, limiter.waiting) == (1, 0)
    with pytest.raises(ConfigurationError):
        Limiter(max_concurrency=0)


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (UserError("x"), 422, None),
        (ConfigurationError("no LM"), 500, None),
        (ServerSaturated("x"), 429, "1"),
        (LMRateLimitError("x", retry_after=2.5), 503, "3"),
        (LMServerError("x"), 502, None),
        (LMTimeoutError("x"), 504, None),
        (PoolSaturated("x"), 503, "1"),
        (PipelineError("step failed", step="s", cause=LMTimeoutError("t")), 504, None),
        (StepInputMissing("missing", step="s"), 422, None),
        (RuntimeError("boom"), 500, None),
    ],
)
def test_status_mapping(error: BaseException, status: int, retry_after: str | None) -> None:
    code, headers = status_for(error)
    assert code == status and headers.get("Retry-After") == retry_after


def test_schema_from_a_class_signature() -> None:
    class QA(dspex.Signature):
        """Answer with a confidence."""

        question: str = dspex.InputField(desc="a trivia question")
        context: list[str] = dspex.InputField()
        answer: str = dspex.OutputField()
        confidence: float = dspex.OutputField()

    schema = describe(dspex.Predict(QA))
    assert schema.validate({"question": "q", "context": ["a"]}) == {
        "question": "q",
        "context": ["a"],
    }
    with pytest.raises(Exception, match="context"):
        schema.validate({"question": "q", "context": "not a list"})
    inputs = schema.input_schema()
    assert inputs["properties"]["question"]["description"] == "a trivia question"
    assert schema.output_schema()["properties"]["confidence"] == {"type": "number"}


async def test_app_in_process_over_asgi() -> None:
    from dspex.server import create_app

    with LMServer() as server:
        dspex.configure(
            lm=dspex.LM("openai/t", api_base=server.url, api_key="k", cache=False, num_retries=0)
        )
        app = create_app({"qa": dspex.Predict("question -> answer")}, max_concurrency=2)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            response = await client.post("/v1/programs/qa/call", json={"inputs": {"question": "q"}})
            assert response.status_code == 200 and response.json()["outputs"]["answer"]
            health = (await client.get("/health")).json()
            assert health["status"] == "ok" and health["max_concurrency"] == 2
    with pytest.raises(ConfigurationError):
        create_app({}, no_such_option=1)
    with pytest.raises(UserError, match="not a program instance"):
        create_app({"bad": dspex.Predict})


def test_lm_client_runs_under_uvloop() -> None:
    """uvicorn picks uvloop when it is installed: the LM transport must work there."""
    uvloop = pytest.importorskip("uvloop")

    async def call(lm: Any) -> Any:
        return await dspex.Predict("question -> answer").acall(question="q", lm=lm)

    with LMServer() as server:
        lm = dspex.LM("openai/t", api_base=server.url, api_key="k", cache=False, num_retries=0)
        assert uvloop.run(call(lm)).answer
