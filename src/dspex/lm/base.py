"""The interface every language model implements (native clients, test doubles, user LMs).

Two ways to write one, as in DSPy 3.4.1:

- implement ``acall`` (DSPex's primitive: messages in, one text per choice out), or
- implement DSPy's legacy ``forward(prompt=None, messages=None, **kwargs)`` (and optionally
  ``aforward``) returning an OpenAI-shaped completion (a LiteLLM ``ModelResponse`` or a dict
  of the same shape): ``__call__``/``acall`` then merge the LM's default ``kwargs`` (and
  ``cache``) into the call, turn the choices into outputs as DSPy does (a text per choice,
  or a dict with ``tool_calls``/``reasoning_content``/``logprobs``/``citations`` when
  present), bill the usage to the active tracker and record the call in the history.

State follows DSPy's format: ``dump_state()`` names the LM's class under ``_dspy_lm_class``,
and ``BaseLM.load_state(state)`` rebuilds it (a class other than the built-in LM only with
``allow_custom_lm_class=True``: loading imports it).
"""

from __future__ import annotations

import copy as copy_module
import importlib
import inspect
import time
from abc import ABC
from typing import Any, TypeVar

from dspex._sync import run_sync

__all__ = ["LM_CLASS_STATE_KEY", "BaseLM", "Message", "outputs_from_completion"]

Message = dict[str, Any]
L = TypeVar("L", bound="BaseLM")

LM_CLASS_STATE_KEY = "_dspy_lm_class"
BUILTIN_LM_CLASS_PATH = "dspy.clients.lm.LM"
"""How saved state names the built-in ``LM`` (DSPy's path, so both libraries load it)."""


class BaseLM(ABC):
    """A chat language model.

    ``acall`` is the primitive: given messages (or a bare prompt) and request options it
    returns one completion text per choice (``n`` choices). ``kwargs`` holds the default
    request options (``temperature`` and ``max_tokens`` always, as DSPy's) merged under
    per-call options.
    """

    model: str
    kwargs: dict[str, Any]
    model_type: str = "chat"

    def __init__(
        self,
        model: str,
        model_type: str = "chat",
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        callbacks: list[Any] | None = None,
        num_retries: int = 3,
        **kwargs: Any,
    ) -> None:
        self.model = model
        self.model_type = model_type
        self.cache = cache
        self.callbacks: list[Any] = list(callbacks or [])
        self.num_retries = num_retries
        self.kwargs = {"temperature": temperature, "max_tokens": max_tokens, **kwargs}
        self.history: Any = []

    # Capabilities (``supports_function_calling``...) are not defined here: an LM that
    # declares them is asked first, the others are looked up by model in
    # ``dspex.adapters.capabilities``.

    # ------------------------------------------------------------------ calls
    async def acall(
        self,
        prompt: str | None = None,
        messages: list[Message] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """Send one request; return the completion text of each choice.

        Subclasses implement this (the primitive), or DSPy's legacy ``forward``/``aforward``.
        A subclass that only overrides ``__call__`` (as DSPy ``BaseLM`` subclasses in tests
        often do) gets it run in a worker thread here.
        """
        import asyncio

        cls = type(self)
        if cls.aforward is not BaseLM.aforward:
            merged = self._legacy_kwargs(kwargs)
            response = await self.aforward(prompt=prompt, messages=messages, **merged)
            return self._legacy_outputs(response, prompt, messages, kwargs, merged)
        if cls.forward is not BaseLM.forward or cls.__call__ is not BaseLM.__call__:
            result: list[Any] = await asyncio.to_thread(self.__call__, prompt, messages, **kwargs)
            return result
        raise NotImplementedError(f"{cls.__name__} must implement acall() or forward()")

    def __call__(
        self,
        prompt: str | None = None,
        messages: list[Message] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        if type(self).forward is not BaseLM.forward:
            merged = self._legacy_kwargs(kwargs)
            response = self.forward(prompt=prompt, messages=messages, **merged)
            return self._legacy_outputs(response, prompt, messages, kwargs, merged)
        return run_sync(self.acall(prompt, messages, **kwargs))

    def forward(
        self, prompt: str | None = None, messages: list[Message] | None = None, **kwargs: Any
    ) -> Any:
        """DSPy's legacy hook: return an OpenAI-shaped completion for one call."""
        raise NotImplementedError("Subclasses must implement this method.")

    async def aforward(
        self, prompt: str | None = None, messages: list[Message] | None = None, **kwargs: Any
    ) -> Any:
        """Async form of :meth:`forward`."""
        raise NotImplementedError("Subclasses must implement this method.")

    def _legacy_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**self.kwargs, "cache": self.cache, **kwargs}

    def _legacy_outputs(
        self,
        response: Any,
        prompt: str | None,
        messages: list[Message] | None,
        kwargs: dict[str, Any],
        merged: dict[str, Any],
    ) -> list[Any]:
        from dspex.lm.usage import current_tracker
        from dspex.utils.inspect_history import record_history

        outputs = outputs_from_completion(response, merged)
        usage = _usage_of(response)
        tracker = current_tracker()
        if tracker is not None and not _get(response, "cache_hit", False):
            tracker.add(self.model, usage)
        record_history(self, {
            "prompt": prompt, "messages": messages,
            "kwargs": {k: v for k, v in kwargs.items() if not k.startswith("api_")},
            "response": response, "outputs": outputs, "usage": usage,
            "model": self.model, "response_model": _get(response, "model"),
            "model_type": self.model_type, "timestamp": time.time(),
        })  # fmt: skip
        return outputs

    # ------------------------------------------------------------------ copies and state
    def copy(self: L, **kwargs: Any) -> L:
        """A shallow copy (clients shared) with its own history, callbacks list and kwargs;
        ``kwargs`` set attributes and/or request options (``None`` removes an option)."""
        new = copy_module.copy(self)
        new.history = []
        new.callbacks = list(getattr(self, "callbacks", None) or [])
        new.kwargs = dict(getattr(self, "kwargs", None) or {})
        for key, value in kwargs.items():
            if hasattr(new, key):
                setattr(new, key, value)
            if key in new.kwargs or not hasattr(self, key):
                if value is None:
                    new.kwargs.pop(key, None)
                else:
                    new.kwargs[key] = value
        return new

    def _extract_citations_from_response(self, choice: Any) -> list[Any] | None:
        """The citations a provider attached to one completion choice (LiteLLM puts
        Anthropic's under ``message.provider_specific_fields["citations"]``, one list per
        content block), flattened; ``None`` when there are none."""
        return choice_citations(choice)

    def dump_state(self) -> dict[str, Any]:
        """The LM's reconstruction state (never the API key), as DSPy writes it."""
        kwargs = {k: v for k, v in self.kwargs.items() if k not in ("api_key", LM_CLASS_STATE_KEY)}
        return {
            LM_CLASS_STATE_KEY: self._state_class_path(),
            "model": self.model,
            "model_type": self.model_type,
            "cache": getattr(self, "cache", True),
            "num_retries": getattr(self, "num_retries", 3),
            **kwargs,
        }

    def _state_class_path(self) -> str:
        return f"{type(self).__module__}.{type(self).__qualname__}"

    @classmethod
    def load_state(cls, state: dict[str, Any], *, allow_custom_lm_class: bool = False) -> BaseLM:
        """An LM rebuilt from :meth:`dump_state` output (here or by DSPy 3.4.1).

        On ``BaseLM`` the class comes from the state (no class: the built-in LM); a class
        other than the built-in LM is imported only with ``allow_custom_lm_class=True``.
        """
        from dspex.errors import StateError

        state = dict(state)
        class_path = state.pop(LM_CLASS_STATE_KEY, None)
        if cls is not BaseLM:
            return cls(**state)
        from dspex.lm.client import LM

        if class_path is None or class_path == BUILTIN_LM_CLASS_PATH:
            return LM.load_state(state, allow_custom_lm_class=allow_custom_lm_class)
        if not allow_custom_lm_class:
            raise StateError(
                f"Refusing to import custom serialized LM class `{class_path}`. Pass "
                "allow_unsafe_lm_state=True when loading trusted files to enable custom LM "
                "classes."
            )
        lm_cls = _import_class(class_path)
        if not (isinstance(lm_cls, type) and issubclass(lm_cls, BaseLM)):
            raise StateError(f"Serialized LM class `{class_path}` must be a subclass of BaseLM.")
        if "allow_custom_lm_class" in inspect.signature(lm_cls.load_state).parameters:
            return lm_cls.load_state(state, allow_custom_lm_class=allow_custom_lm_class)
        loaded: BaseLM = lm_cls.load_state(state)  # a subclass's own load_state(state), as DSPy
        return loaded

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"


def _import_class(path: str) -> Any:
    """``pkg.mod.Qual.Name`` -> the object, trying the longest importable module prefix."""
    from dspex.errors import StateError

    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            continue
        return obj
    raise StateError(f"Could not import serialized LM class `{path}`.")


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _usage_of(response: Any) -> dict[str, Any]:
    usage = _get(response, "usage") or {}
    if isinstance(usage, dict):
        return dict(usage)
    dump = getattr(usage, "model_dump", None)
    if callable(dump):
        data = dump()
        return dict(data) if isinstance(data, dict) else {}
    return dict(usage)


def choice_citations(choice: Any) -> list[Any] | None:
    """A completion choice's provider citations, flattened (see
    :meth:`BaseLM._extract_citations_from_response`)."""
    fields = _get(_get(choice, "message"), "provider_specific_fields") or {}
    found = _get(fields, "citations")
    if not isinstance(found, list):
        return None
    return [c for group in found for c in (group if isinstance(group, list) else [group])]


def outputs_from_completion(response: Any, options: dict[str, Any]) -> list[Any]:
    """DSPy's outputs of an OpenAI-shaped completion: each choice's text, or a dict with
    ``text`` and its ``reasoning_content``/``logprobs`` (when asked)/``tool_calls``/
    ``citations`` when any choice has one of them."""
    outputs: list[dict[str, Any]] = []
    for choice in _get(response, "choices") or []:
        message = _get(choice, "message")
        output: dict[str, Any] = {
            "text": _get(message, "content") if message is not None else _get(choice, "text")
        }
        if reasoning := _get(message, "reasoning_content"):
            output["reasoning_content"] = reasoning
        if options.get("logprobs"):
            output["logprobs"] = _get(choice, "logprobs")
        if calls := _get(message, "tool_calls"):
            output["tool_calls"] = calls
        if citations := choice_citations(choice):
            output["citations"] = citations
        outputs.append(output)
    if all(len(output) == 1 for output in outputs):
        return [output["text"] for output in outputs]
    return list(outputs)
