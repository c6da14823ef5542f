"""The programs a test `dspex serve` process serves (loaded by path, as a user's app.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import dspex
from dspex import settings

dspex.configure(
    lm=dspex.LM(
        "openai/test",
        api_base=os.environ["DSPEX_TEST_LM"],
        api_key="test",
        cache=False,
        num_retries=0,
    )
)

qa = dspex.ChainOfThought("question -> answer: int")


class Echo(dspex.Module):
    async def aforward(self, text: str, times: int = 1) -> dspex.Prediction:
        return dspex.Prediction(echo=text * times)


class Gate(dspex.Module):
    """Returns once the file ``path`` exists (tests hold calls in flight with it)."""

    async def aforward(self, path: str) -> dspex.Prediction:
        # another process opens the gate: polling is the simplest cross-process signal
        while not await asyncio.to_thread(Path(path).exists):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        return dspex.Prediction(opened=path)


class Leaky(dspex.Module):
    """Sets a settings scope and never resets it: it must not outlive its request."""

    async def aforward(self) -> dspex.Prediction:
        leaked = dspex.LM("openai/leaked", api_base="http://127.0.0.1:9", api_key="x")
        settings._scoped.set(settings.current().replace(lm=leaked))
        return dspex.Prediction(model=settings.current().lm.model)  # type: ignore[union-attr]


class WhichLM(dspex.Module):
    async def aforward(self) -> dspex.Prediction:
        return dspex.Prediction(model=settings.current().lm.model)  # type: ignore[union-attr]


programs = {
    "predict": dspex.Predict("question -> answer"),
    "echo": Echo(),
    "gate": Gate(),
    "leaky": Leaky(),
    "which_lm": WhichLM(),
}
