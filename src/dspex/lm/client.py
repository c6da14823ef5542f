"""``dspex.LM``: an async-first HTTP client for OpenAI-compatible and Anthropic chat models.

The LM is a stack of small parts, each with one concern:

- :class:`~dspex.lm.wire.HTTPTransport` (injectable: ``LM(..., transport=...)``) owns the
  connections — blocking keep-alive sockets for sync calls, one asyncio pool per event loop —
  and the body-size caps, and maps every socket/parser failure one way;
- :func:`~dspex.lm.flow.attempt_flow` holds the retry, deadline and circuit-breaker rules as
  a generator with no I/O, and :class:`~dspex.lm.flow.ErrorMap` turns every failure into a
  typed, secret-free LM error;
- this module: the options, cache and bookkeeping of a call. ``__call__`` and ``acall`` run
  the flow with :func:`~dspex.lm.flow.drive` / :func:`~dspex.lm.flow.adrive` (shared with
  the Embedder); ``astream`` drives it itself (a stream, retried until its head arrives).

Every call starts in :meth:`LM._begin` (options, cache key, cache hit) and ends in
:meth:`LM._end` (cache write, usage, history): one place each, for all three entry points.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
import time
from collections import deque
from collections.abc import AsyncIterator, Generator
from typing import Any

import orjson

from dspex.errors import ConfigurationError, LMConfigurationError, LMError
from dspex.lm.base import BUILTIN_LM_CLASS_PATH, BaseLM, Message
from dspex.lm.cache import active, request_blob
from dspex.lm.finetune import FinetuneMixin
from dspex.lm.flow import Attempts, ErrorMap, Outcome, adrive, attempt_flow, drive
from dspex.lm.options import initial_options, is_openai_reasoning_model, wrap_provider_exception
from dspex.lm.outputs import openai_tool_options, openai_tool_turns
from dspex.lm.providers import (
    Endpoint,
    ParsedResponse,
    StreamDecoder,
    build_body,
    parse_response,
    redact_url,
    resolve,
)
from dspex.lm.resilience import CircuitBreaker, RetryPolicy, breaker_for
from dspex.lm.transport import DEFAULT_MAX_BODY, HTTPError, Response, Target
from dspex.lm.usage import current_tracker
from dspex.lm.wire import HTTPTransport
from dspex.telemetry import events
from dspex.utils.callback import with_callbacks
from dspex.utils.inspect_history import record_history

__all__ = ["LM"]

Flow = Generator[float | None, Outcome, tuple[Any, Response, int]]

#: options that choose the endpoint (kept in ``kwargs`` as DSPy keeps them), never sent in a
#: request body nor part of a cache key
_CLIENT_KEYS = frozenset(("api_base", "base_url", "api_key"))


class _Call:
    """One call in progress: the request, its cache key, then its answer."""

    __slots__ = ("blob", "hit", "messages", "meta", "options", "template", "texts", "usage")

    def __init__(
        self,
        messages: list[Message],
        options: dict[str, Any],
        blob: bytes | None,
        hit: list[Any] | None = None,
        template: _Template | None = None,
    ) -> None:
        self.messages = messages
        self.options = options
        self.blob = blob
        self.template = template
        self.hit = hit is not None
        self.texts = hit  # set at once on a cache hit
        self.usage: dict[str, int] = {}
        self.meta: dict[str, Any] | None = None


#: the types of option values a template may hold: immutable, so the same object is the
#: same value for ever (a list or dict option could change in place: never templated)
_SCALARS = frozenset((str, int, float, bool, type(None)))
#: body keys the template writes itself, or that change how a request is sent
_UNTEMPLATED = frozenset(("model", "messages", "stream"))


class _Template:
    """What an LM's default options make of a call that adds none of its own: the options
    (as :meth:`LM._begin` computes them) and the request body around the messages.

    Built from one state of ``lm.kwargs`` and ``lm.endpoint`` and used only while both are
    the very same objects holding the very same keys and values (checked by identity on
    every call, so any change — a new dict, an option set, removed or re-set to an equal
    value of another type — rebuilds it). ``usable`` is false when the options cannot be
    templated (a non-scalar value, another wire): then every call takes the general path.
    """

    __slots__ = (
        "cache", "endpoint", "keys", "options", "prefix", "rollout_id", "source", "suffix",
        "usable", "values",
    )  # fmt: skip

    def __init__(self, source: dict[str, Any], endpoint: Endpoint) -> None:
        self.source = source
        self.endpoint = endpoint
        items = tuple(source.items())  # one snapshot (taken in C: no thread runs meanwhile)
        self.keys = tuple(k for k, _ in items)
        self.values = tuple(v for _, v in items)
        options = {k: v for k, v in items if k not in _CLIENT_KEYS}
        self.rollout_id = options.pop("rollout_id", None)
        self.cache = options.pop("cache", True)
        self.options = options
        sent = openai_tool_options({k: v for k, v in options.items() if v is not None})
        self.usable = (
            endpoint.wire == "openai"
            and endpoint.problem is None
            and all(type(k) is str for k in self.keys)
            and all(type(v) in _SCALARS for v in self.values)
            and _UNTEMPLATED.isdisjoint(sent)
        )
        self.prefix = self.suffix = b""
        if self.usable:  # ``{"model":…,"messages":`` + messages + ``,<options>}``
            self.prefix = b'{"model":' + orjson.dumps(endpoint.model) + b',"messages":'
            self.suffix = b"," + orjson.dumps(sent)[1:] if sent else b"}"


class LM(FinetuneMixin, BaseLM):
    """A chat model over HTTP: ``LM("openai/gpt-4o-mini")``, ``LM("anthropic/claude-...")``."""

    def __init__(
        self,
        model: str,
        model_type: str = "chat",
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        callbacks: list[Any] | None = None,
        num_retries: int = 3,
        provider: Any = None,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        finetuning_model: str | None = None,
        launch_kwargs: dict[str, Any] | None = None,
        train_kwargs: dict[str, Any] | None = None,
        use_developer_role: bool = False,
        retry_policy: RetryPolicy | None = None,
        circuit_threshold: int = 5,
        circuit_cooldown: float = 30.0,
        history_size: int = 1000,
        max_response_bytes: int | None = None,
        transport: HTTPTransport | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model, model_type=model_type, cache=cache, callbacks=callbacks, num_retries=num_retries
        )
        if api_base is not None:  # kept in kwargs as DSPy keeps it (never sent in a body)
            kwargs = {**kwargs, "api_base": api_base}
        self.kwargs = initial_options(model, temperature, max_tokens, kwargs)
        self.finetuning_model = finetuning_model
        self.launch_kwargs = dict(launch_kwargs or {})
        self.train_kwargs = dict(train_kwargs or {})
        self.use_developer_role = use_developer_role
        self.endpoint: Endpoint = resolve(model, api_base or kwargs.get("base_url"), api_key)
        self.provider = provider or self.infer_provider()  # training/launch (lm/finetune.py)
        self.cache = cache
        if num_retries < 0 or timeout <= 0:
            raise ConfigurationError("num_retries must be >= 0 and timeout > 0")
        if circuit_threshold < 1 or circuit_cooldown < 0:
            raise ConfigurationError("circuit_threshold must be >= 1 and circuit_cooldown >= 0")
        if transport is not None and max_response_bytes is not None:
            raise ConfigurationError(
                "pass max_response_bytes to the HTTPTransport you inject, not to the LM"
            )
        self._target: Target | None = None
        if self.endpoint.problem is None:
            try:
                self._target = Target(self.endpoint.url, self.endpoint.headers())
            except ValueError:
                raise ConfigurationError(
                    f"api_base must be an http(s) URL, got {self.endpoint.display_base!r}"
                ) from None
        self.num_retries = num_retries
        self.timeout = timeout
        self.retry_policy = retry_policy or RetryPolicy()
        self.circuit_threshold = circuit_threshold
        self.circuit_cooldown = circuit_cooldown
        self.history: deque[dict[str, Any]] = deque(maxlen=history_size)
        self._rules_cache: tuple[tuple[Any, ...], Attempts] | None = None
        self._template: _Template | None = None
        if transport is None:
            self._own_transport({"max_response_bytes": max_response_bytes or DEFAULT_MAX_BODY})
        else:
            self.transport = transport
            self._owns_transport = False

    # ------------------------------------------------------------------ public
    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker of this LM's endpoint and breaker settings."""
        return self._rules().breaker

    def copy(self, **overrides: Any) -> LM:
        """A new LM with the same configuration (retry policy, breaker settings, transport
        limits included), ``overrides`` applied; an injected transport is shared."""
        params: dict[str, Any] = {
            "api_key": self.endpoint.api_key,
            "cache": self.cache,
            "num_retries": self.num_retries,
            "timeout": self.timeout,
            "retry_policy": self.retry_policy,
            "circuit_threshold": self.circuit_threshold,
            "circuit_cooldown": self.circuit_cooldown,
            "history_size": self.history.maxlen,
            "model_type": self.model_type,
            "callbacks": list(self.callbacks),
            "provider": self.provider,
            "finetuning_model": self.finetuning_model,
            "launch_kwargs": self.launch_kwargs,
            "train_kwargs": self.train_kwargs,
            "use_developer_role": self.use_developer_role,
            **self.kwargs,
        }
        if "transport" not in overrides and "max_response_bytes" not in overrides:
            if self._owns_transport:
                params["max_response_bytes"] = self.transport.max_response_bytes
            else:
                params["transport"] = self.transport
        params.update(overrides)
        model = params.pop("model", self.model)
        return LM(model, **params)

    def dump_state(self) -> dict[str, Any]:
        """DSPy 3.4.1's LM state (never the API key, nor a password in ``api_base``):
        ``dspy.LM.load_state`` reads it too."""
        state = super().dump_state()
        state.update(
            finetuning_model=self.finetuning_model,
            launch_kwargs=self.launch_kwargs,
            train_kwargs=self.train_kwargs,
        )
        if self.use_developer_role:
            state["use_developer_role"] = True
        for key in ("api_base", "base_url"):  # a password in the URL is never saved
            if isinstance(state.get(key), str):
                state[key] = redact_url(state[key])
        if is_openai_reasoning_model(self.model) and "max_completion_tokens" in state:
            state["max_tokens"] = state.pop("max_completion_tokens")
        return state

    def _state_class_path(self) -> str:
        return BUILTIN_LM_CLASS_PATH if type(self) is LM else super()._state_class_path()

    @classmethod
    def load_state(cls, state: dict[str, Any], *, allow_custom_lm_class: bool = False) -> LM:
        """An LM rebuilt from :meth:`dump_state` output (a reasoning model's
        ``max_completion_tokens`` is read as ``max_tokens``)."""
        state = dict(state)
        model = state.get("model")
        reasoning = isinstance(model, str) and is_openai_reasoning_model(model)
        if reasoning and "max_completion_tokens" in state:
            state.setdefault("max_tokens", state["max_completion_tokens"])
            state.pop("max_completion_tokens")
        lm = super().load_state(state, allow_custom_lm_class=allow_custom_lm_class)
        if not isinstance(lm, LM):  # pragma: no cover - cls(**state) is an LM
            raise TypeError(f"load_state built {type(lm).__name__}, not an LM")
        return lm

    def _wrap_litellm_exception(self, error: BaseException) -> LMError:
        """DSPy's mapping of a LiteLLM/OpenAI exception onto the typed LM errors (for code
        that calls LiteLLM itself and wants DSPex's errors)."""
        return wrap_provider_exception(error, self.model)

    def __repr__(self) -> str:
        return f"LM({self.model!r}, api_base={self.endpoint.display_base!r})"

    async def aclose(self) -> None:
        """Close the connections of the current event loop."""
        await self.transport.aclose()

    def close(self) -> None:
        """Close the idle connections of sync calls (they also close with the LM)."""
        self.transport.close()

    def inspect_history(self, n: int = 1) -> list[dict[str, Any]]:
        return list(self.history)[-n:]

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles carry the configuration, never the live connections."""
        state = self.__dict__.copy()
        state["transport"] = self.transport.settings()
        state["_rules_cache"] = None
        state["_template"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        settings_ = state.pop("transport")
        self.__dict__.update(state)
        self._own_transport(settings_)

    def _own_transport(self, options: dict[str, Any]) -> None:
        self.transport = HTTPTransport(**options)
        self._owns_transport = True  # closed with the LM (the transport's own finalizer)

    # ------------------------------------------------------------------ calls
    @with_callbacks
    def __call__(
        self, prompt: str | None = None, messages: list[Message] | None = None, **kwargs: Any
    ) -> list[Any]:
        call = self._begin(prompt, messages, kwargs)
        if call.texts is None:
            target, message, deadline, flow = self._flow(call, self._parser(call))
            send = functools.partial(self.transport.request, target, message, deadline)
            with self._span(call):  # answered in the span: its event carries the status
                self._answered(call, *drive(flow, send))
        return self._end(call)

    @with_callbacks
    async def acall(
        self, prompt: str | None = None, messages: list[Message] | None = None, **kwargs: Any
    ) -> list[Any]:
        call = self._begin(prompt, messages, kwargs)
        if call.texts is None:
            target, message, deadline, flow = self._flow(call, self._parser(call))
            send = functools.partial(self.transport.arequest, target, message, deadline)
            with self._span(call):
                self._answered(call, *await adrive(flow, send))
        return self._end(call)

    async def astream(self, messages: list[Message], **kwargs: Any) -> AsyncIterator[str]:
        """Text deltas as the model produces them.

        The same rules as a call (breaker, retries, deadline over the whole stream), retried
        only until the reply's head arrives; no cache; usage and history are recorded when
        the stream ends.
        """
        call = self._begin(None, messages, kwargs, stream=True)
        target, message, deadline, flow = self._flow(call, _head)
        decoder = StreamDecoder(self.endpoint.wire)
        pieces: list[str] = []
        try:
            with self._span(call):
                step = next(flow)
                while True:
                    outcome: Outcome = None
                    if step is not None:
                        await asyncio.sleep(step)
                    else:
                        streaming = False
                        try:
                            async with self.transport.astream(
                                target, message, deadline
                            ) as response:
                                head = Response(
                                    response.status, response.reason, response.headers, b""
                                )
                                if response.status >= 400:
                                    head.body = await response.aread()
                                    outcome = head
                                else:
                                    streaming = True
                                    _finish_flow(flow, head, call)
                                    async for chunk in response.aiter_bytes():
                                        for text in decoder.feed(chunk):
                                            pieces.append(text)
                                            yield text
                                        if decoder.done:
                                            break
                                    for text in decoder.feed(b"", final=True):
                                        pieces.append(text)
                                        yield text
                        except HTTPError as exc:
                            if streaming:  # the reply began: not retried
                                raise self._rules().errors.failure(exc) from None
                            outcome = exc
                        if streaming:
                            if call.meta is not None:
                                call.meta.update(decoder.usage)
                            break
                    try:
                        step = flow.send(outcome)
                    except StopIteration:  # pragma: no cover - a head always streams
                        raise AssertionError("the flow accepted a reply without a stream") from None
        finally:
            flow.close()
        call.texts, call.usage = ["".join(pieces)], decoder.usage
        self._end(call)

    # ------------------------------------------------------------------ one call's life
    def _begin(
        self,
        prompt: str | None,
        messages: list[Message] | None,
        kwargs: dict[str, Any],
        *,
        stream: bool = False,
    ) -> _Call:
        """Where every call starts: options and cache key; on a hit the answer (a fresh
        list) is set already. No I/O but SQLite."""
        if messages is None:
            messages = [{"role": "user", "content": prompt or ""}]
        template = None if kwargs or stream else self._defaults()
        if template is not None:  # the call adds no options: the LM's own, computed once
            options = dict(template.options)  # the call's own (history keeps it)
            rollout_id, use_cache = template.rollout_id, template.cache and self.cache
        else:
            options = {k: v for k, v in {**self.kwargs, **kwargs}.items() if k not in _CLIENT_KEYS}
            rollout_id = options.pop("rollout_id", None)
            use_cache = options.pop("cache", True) and self.cache
        if stream:
            options["stream"] = True  # never cached
            return _Call(messages, options, None)
        if not use_cache:
            return _Call(messages, options, None, None, template)
        store = active()
        if not store.enabled:  # no key is computed for a cache that is off
            return _Call(messages, options, None, None, template)
        blob = request_blob({
            "model": self.model, "api_base": self.endpoint.display_base, "messages": messages,
            "options": options, "rollout_id": rollout_id,
        })  # fmt: skip
        hit = store.lookup(blob)
        observed = events.has_handlers()
        if hit is None:
            if observed:
                events.emit("dspex.cache.miss", None, {"model": self.model})
            return _Call(messages, options, blob, None, template)
        if observed:
            events.emit("dspex.cache.hit", None, {"model": self.model})
        self._remember(messages, options, list(hit[0]), {}, cached=True)
        return _Call(messages, options, None, list(hit[0]))

    def _answered(
        self, call: _Call, parsed: ParsedResponse, response: Response, attempts: int
    ) -> None:
        call.texts, call.usage = parsed.texts, parsed.usage
        if call.meta is not None:
            call.meta.update(status=response.status, attempts=attempts, **parsed.usage)

    def _end(self, call: _Call) -> list[Any]:
        """Where every answered call ends: store, bill and remember a fresh answer (a cache
        hit was remembered in :meth:`_begin`); the caller gets its own list."""
        texts = call.texts
        assert texts is not None
        if call.hit:
            return _fresh(texts)
        if call.blob is not None:
            active().save(call.blob, texts, call.usage)
        tracker = current_tracker()
        if tracker is not None:
            tracker.add(self.model, call.usage)
        self._remember(call.messages, call.options, texts, call.usage, cached=False)
        return _fresh(texts)

    def _remember(
        self,
        messages: list[Message],
        options: dict[str, Any],
        texts: list[Any],
        usage: dict[str, int],
        *,
        cached: bool,
    ) -> None:
        record_history(self, {
            "model": self.model, "messages": messages, "kwargs": options, "outputs": texts,
            "usage": {} if cached else usage, "cached": cached, "timestamp": time.time(),
        })  # fmt: skip

    # ------------------------------------------------------------------ internals
    def _rules(self) -> Attempts:
        """The call rules for the current settings (rebuilt only when a setting changed)."""
        key = (
            self.model, self.timeout, self.num_retries, self.retry_policy,
            self.circuit_threshold, self.circuit_cooldown,
        )  # fmt: skip
        cached = self._rules_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        rules = Attempts(
            self.num_retries,
            self.retry_policy,
            breaker_for(self.endpoint.url, self.circuit_threshold, self.circuit_cooldown),
            ErrorMap(self.endpoint, self.model, self.timeout),
        )
        self._rules_cache = (key, rules)
        return rules

    def _defaults(self) -> _Template | None:
        """The template of the LM's current default options, if they can have one."""
        template, kwargs = self._template, self.kwargs
        if not (  # still the very objects it was built from (identity: no equal-but-other)
            template is not None
            and kwargs is template.source
            and self.endpoint is template.endpoint
            and len(kwargs) == len(template.keys)
            and all(map(operator.is_, kwargs, template.keys))
            and all(map(operator.is_, kwargs.values(), template.values))
        ):
            if type(kwargs) is not dict:
                return None
            template = self._template = _Template(kwargs, self.endpoint)
        return template if template.usable else None

    def _flow(self, call: _Call, accept: Any) -> tuple[Target, bytes, float, Flow]:
        """Where to send, the request message, the call's deadline and its attempt flow (an LM whose model
        no provider here speaks is refused here: at its first request, as DSPy's)."""
        if self._target is None:
            raise LMConfigurationError(
                f"cannot send a request for {self.model!r}: {self.endpoint.problem}",
                model=self.model, provider=self.endpoint.provider or None,
            )  # fmt: skip
        template = call.template
        if template is not None:  # the same bytes as the general path's dict, dumped
            turns = orjson.dumps(openai_tool_turns(call.messages))
            message = self._target.post(b"".join((template.prefix, turns, template.suffix)))
        else:
            body = build_body(self.endpoint, call.messages, call.options)
            if call.options.get("stream") and self.endpoint.wire == "openai":
                body["stream_options"] = {"include_usage": True}
            message = self._target.post(orjson.dumps(body))
        deadline = time.monotonic() + self.timeout
        return self._target, message, deadline, attempt_flow(self._rules(), deadline, accept)

    def _parser(self, call: _Call) -> Any:
        """How the call's reply is read (with each choice's logprobs when it asked for them)."""
        if call.options.get("logprobs"):
            return functools.partial(self._parse, logprobs=True)
        return self._parse

    def _parse(self, response: Response, logprobs: bool = False) -> ParsedResponse:
        try:
            return parse_response(self.endpoint, orjson.loads(response.body), logprobs)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise self._rules().errors.malformed(exc) from None

    def _span(self, call: _Call) -> contextlib.AbstractContextManager[Any]:
        if not events.has_handlers():
            return _NO_SPAN
        call.meta = {"model": self.model, "provider": self.endpoint.provider}
        return events.span("dspex.lm.request", call.meta)


_NO_SPAN = contextlib.nullcontext()
"""What a call runs in when no event handler listens (reusable: it holds no state)."""


def _fresh(outputs: list[Any]) -> list[Any]:
    """The caller's own list (dict outputs copied: the cache and history keep theirs)."""
    return [dict(o) if isinstance(o, dict) else o for o in outputs]


def _head(response: Response) -> Response:
    """A stream's reply is accepted on its head (its body is read as it streams)."""
    return response


def _finish_flow(flow: Flow, head: Response, call: _Call) -> None:
    """Hand a stream's accepted head to the flow, which then ends (settling the breaker)."""
    try:
        flow.send(head)
    except StopIteration as done:
        _, response, attempts = done.value
        if call.meta is not None:
            call.meta.update(status=response.status, attempts=attempts)
        return
    raise AssertionError("the flow did not accept a 2xx head")  # pragma: no cover
