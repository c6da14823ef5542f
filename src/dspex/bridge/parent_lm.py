"""A ``dspy.BaseLM`` (worker side) whose completions come from an LM in the parent process.

Used when the parent's LM is not an HTTP endpoint DSPy can reach itself (``DummyLM``, a
user's own ``BaseLM``), and by the router's compare mode, which answers DSPy's requests with
the completions the native run already got. DSPy hands the engine the exact message dicts
its adapter built; they go to the parent unchanged, so prompts can be compared byte for byte.

Imported only inside DSPy workers (it needs ``dspy``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import dspy
from dspy.clients.call_result import CallResult, combine
from dspy.clients.engines.base import validate_request
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events

__all__ = ["ParentLM"]

Ask = Callable[[list[dict[str, Any]], dict[str, Any]], list[str]]


def _response(text: str, model: str) -> Any:
    return Response(
        id=None,
        model=model,
        message=Message.assistant([TextPart(text)]),
        finish_reason="stop",
        usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0),
    )


class _Engine:
    def __init__(self, owner: ParentLM) -> None:
        self.owner = owner

    def complete(self, request: Any) -> Any:
        validate_request(request)
        messages = []
        if request.system is not None:
            system = (
                request.system
                if isinstance(request.system, str)
                else "".join(p.text for p in request.system)
            )
            messages.append({"role": "system", "content": system})
        messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
        texts = self.owner.ask(messages, {})
        return _response(texts[0] if texts else "", self.owner.model)

    def complete_legacy(
        self,
        lm: Any,
        request: dict[str, Any],
        *,
        prompt: Any = None,
        messages: Any = None,
        **_: Any,
    ) -> Any:
        if messages is None and isinstance(prompt, list | tuple):
            messages = prompt
        messages = messages if messages is not None else request["messages"]
        options = {k: v for k, v in request.items() if k not in ("messages", "model", "prompt")}
        texts = self.owner.ask(list(messages), options) or [""]
        results = [CallResult.native(_response(t, self.owner.model)) for t in texts]
        return results[0] if len(results) == 1 else combine(results, model_type="chat")

    def stream(self, request: Any) -> Iterator[Any]:
        return response_to_events(self.complete(request))  # type: ignore[no-any-return]

    def close(self) -> None:
        pass


class _AsyncEngine:
    def __init__(self, sync: _Engine) -> None:
        self.sync = sync

    async def complete(self, request: Any) -> Any:
        return self.sync.complete(request)

    async def complete_legacy(self, lm: Any, request: Any, **context: Any) -> Any:
        return self.sync.complete_legacy(lm, request, **context)

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        for event in self.sync.stream(request):
            yield event

    async def aclose(self) -> None:
        pass


class ParentLM(dspy.BaseLM):  # type: ignore[misc]
    """Completions from ``ask(messages, options) -> [text, ...]`` (a parent callback)."""

    def __init__(self, model: str, ask: Ask) -> None:
        super().__init__(model, "chat", None, None, False)
        self.ask = ask
        self._engine_spec = _Engine(self)
        self._async_engine_spec = _AsyncEngine(self._engine_spec)
        self._cache_responses = False

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        from dspy.clients.execution import execute, prepare

        return execute(
            self, prepare(self, prompt, messages, kwargs, direct=True)
        ).provider_response()

    async def aforward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        return self.forward(prompt=prompt, messages=messages, **kwargs)
