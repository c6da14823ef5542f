"""Compare mode: run both implementations of a call, return the primary's, report divergence.

``implementation="compare"`` (or ``compare_sample_rate``) builds a :class:`CompareModule`
around the native module (the primary: its result is returned) and the DSPy one (the
shadow). A compared call:

1. runs the primary with its LM wrapped in a recorder (prompt bytes -> completions);
2. runs the shadow with an LM that answers DSPy's requests from the recording when DSPy
   sends byte-identical messages — so the LM is not called twice — and otherwise records a
   *prompt divergence* and calls the real LM;
3. compares the parsed outputs.

Each compared call emits ``dspex.router.compare`` (durations, whether anything diverged) and,
on divergence, ``dspex.router.divergence`` plus a warning log line naming the first
difference. Shadow failures are reported the same way and never fail the call.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from typing import Any, ClassVar

import orjson

from dspex import settings
from dspex.errors import ConfigurationError
from dspex.lm.base import BaseLM, Message
from dspex.primitives.module import Module
from dspex.telemetry import events

__all__ = ["CompareModule", "CompareReport"]

logger = logging.getLogger(__name__)


def _key(messages: Any) -> bytes:
    return orjson.dumps(messages, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


class _Recorder(BaseLM):
    """Wraps the real LM; remembers each prompt's completions for the shadow to replay."""

    def __init__(self, inner: BaseLM) -> None:
        super().__init__(inner.model, **inner.kwargs)
        self.inner = inner
        self.replies: dict[bytes, deque[list[Any]]] = {}
        self.prompts: list[Any] = []

    async def acall(
        self, prompt: str | None = None, messages: list[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        outputs = await self.inner.acall(prompt, messages, **kwargs)
        self.prompts.append(messages if messages is not None else prompt)
        self.replies.setdefault(_key(messages or prompt), deque()).append(list(outputs))
        return outputs


class _Replay(BaseLM):
    """Answers from the recording when the prompt is byte-identical, else calls the real LM."""

    def __init__(self, recorder: _Recorder) -> None:
        super().__init__(recorder.model, **recorder.kwargs)
        self.recorder = recorder
        self.unmatched: list[Any] = []
        self.live_calls = 0

    async def acall(
        self, prompt: str | None = None, messages: list[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        queue = self.recorder.replies.get(_key(messages or prompt))
        if queue:
            return queue.popleft()
        self.unmatched.append(messages if messages is not None else prompt)
        self.live_calls += 1
        return await self.recorder.inner.acall(prompt, messages, **kwargs)


class CompareReport(dict[str, Any]):
    """What one compared call found (also the ``dspex.router.compare`` metadata)."""

    @property
    def diverged(self) -> bool:
        return bool(self["prompt_diverged"] or self["outputs_diverged"] or self["shadow_error"])


def _first_difference(a: Any, b: Any) -> str:
    ta, tb = orjson.dumps(a, default=repr).decode(), orjson.dumps(b, default=repr).decode()
    i = next(
        (i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y), min(len(ta), len(tb))
    )
    return f"at char {i}: native …{ta[max(0, i - 40) : i + 40]!r} vs dspy …{tb[max(0, i - 40) : i + 40]!r}"


def _outputs(pred: Any) -> dict[str, Any]:
    items = pred.items() if hasattr(pred, "items") else []
    return {k: v for k, v in items}


class CompareModule(Module):
    """Runs ``primary`` and ``shadow`` on the same call; returns the primary's result."""

    implementation: ClassVar[str] = "compare"

    def __init__(
        self,
        kind: str,
        primary: Module,
        shadow: Module,
        *,
        sample_rate: float = 1.0,
        history: int = 100,
    ) -> None:
        super().__init__()
        if not 0.0 <= sample_rate <= 1.0:
            raise ConfigurationError(f"sample_rate must be within [0, 1], got {sample_rate!r}")
        self.kind = kind
        self.primary = primary
        self.shadow = shadow
        self.sample_rate = sample_rate
        self.reports: deque[CompareReport] = deque(maxlen=history)
        self._random = random.Random()

    def __repr__(self) -> str:
        return f"CompareModule({self.kind!r}, primary={self.primary!r})"

    @property
    def _dspex_kind(self) -> str:
        return self.kind

    @property
    def last_report(self) -> CompareReport | None:
        return self.reports[-1] if self.reports else None

    # the interface of the primary
    @property
    def signature(self) -> Any:
        return getattr(self.primary, "signature", None)

    def named_parameters(self) -> list[tuple[str, Any]]:
        return self.primary.named_parameters()

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        return self.primary.dump_state(json_mode=json_mode)

    def load_state(self, state: dict[str, Any]) -> CompareModule:
        self.primary.load_state(state)
        self.shadow.load_state(state)
        return self

    async def aforward(self, **kwargs: Any) -> Any:
        if self.sample_rate < 1.0 and self._random.random() >= self.sample_rate:
            return await self.primary.acall(**kwargs)
        lm = kwargs.pop("lm", None) or getattr(self.primary, "lm", None) or settings.current().lm
        if lm is None:
            return await self.primary.acall(**kwargs)  # raises the usual ConfigurationError
        recorder = _Recorder(lm)
        started = time.perf_counter()
        result = await self.primary.acall(**kwargs, lm=recorder)
        primary_s = time.perf_counter() - started
        replay = _Replay(recorder)
        started = time.perf_counter()
        shadow_error: str | None = None
        shadow_result: Any = None
        try:
            shadow_result = await self.shadow.acall(**kwargs, lm=replay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the shadow never fails the call
            shadow_error = f"{type(exc).__name__}: {exc}"
        shadow_s = time.perf_counter() - started
        self._report(recorder, replay, result, shadow_result, shadow_error, primary_s, shadow_s)
        return result

    def _report(
        self,
        recorder: _Recorder,
        replay: _Replay,
        result: Any,
        shadow_result: Any,
        shadow_error: str | None,
        primary_s: float,
        shadow_s: float,
    ) -> None:
        mine, theirs = _outputs(result), _outputs(shadow_result)
        outputs_diverged = shadow_error is None and mine != theirs
        report = CompareReport(
            kind=self.kind,
            prompt_diverged=bool(replay.unmatched),
            outputs_diverged=outputs_diverged,
            shadow_error=shadow_error,
            fields=sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            if outputs_diverged
            else [],
            live_lm_calls=replay.live_calls,
            detail="",
        )
        if replay.unmatched:
            native_prompt = recorder.prompts[0] if recorder.prompts else None
            report["detail"] = "prompt " + _first_difference(native_prompt, replay.unmatched[0])
        elif outputs_diverged:
            report["detail"] = "outputs " + _first_difference(mine, theirs)
        elif shadow_error:
            report["detail"] = f"dspy failed: {shadow_error}"
        self.reports.append(report)
        durations = {"native_duration": primary_s, "dspy_duration": shadow_s}
        events.emit("dspex.router.compare", durations, report)
        if report.diverged:
            logger.warning("dspex compare: %s diverged: %s", self.kind, report["detail"])
            events.emit("dspex.router.divergence", durations, report)
