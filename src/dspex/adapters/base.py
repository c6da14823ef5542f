"""The adapter interface: format a signature + demos + inputs into messages, parse replies."""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from dspex.adapters.native import (
    completion_values,
    history_tool_turn,
    plan_native_features,
    without_fields,
)
from dspex.adapters.types import History
from dspex.adapters.types.markers import CUSTOM_TYPE_START_IDENTIFIER as _CUSTOM_TYPE_START
from dspex.adapters.types.markers import expand_custom_type_markers
from dspex.errors import AdapterParseError
from dspex.utils.callback import with_callbacks

if TYPE_CHECKING:
    from dspex.lm.base import BaseLM

__all__ = ["Adapter", "LMRequest", "drive_async", "drive_sync"]

Demo = Mapping[str, Any]
T = TypeVar("T")
_UNSET: Any = object()


class LMRequest(NamedTuple):
    """What a flow asks of the LM: messages and request options (``lm``: another LM to ask,
    e.g. TwoStepAdapter's extraction model; ``None`` means the call's LM)."""

    messages: list[dict[str, Any]]
    options: dict[str, Any]
    lm: Any = None


def drive_sync(flow: Generator[LMRequest, list[Any], T], lm: BaseLM) -> T:
    """Run a flow, answering its LM requests with the LM's sync call."""
    request = next(flow)
    while True:
        outputs = (request.lm or lm)(messages=request.messages, **request.options)
        try:
            request = flow.send(outputs)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def drive_async(flow: Generator[LMRequest, list[Any], T], lm: BaseLM) -> T:
    """Run a flow, awaiting the LM for each request."""
    request = next(flow)
    while True:
        outputs = await (request.lm or lm).acall(messages=request.messages, **request.options)
        try:
            request = flow.send(outputs)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class Adapter(ABC):
    """Turns a signature call into chat messages and the LM's reply back into field values.

    Subclasses implement the message-building hooks; ``format`` assembles them exactly as
    DSPy 3.4.1 does: system message, demos (incomplete ones first), conversation history,
    then the user request.
    """

    def __init__(
        self,
        callbacks: list[Any] | None = None,
        use_native_function_calling: bool = False,
        native_response_types: list[type] | None = None,
        parallel_tool_calls: bool | None = None,
    ) -> None:
        self.callbacks = callbacks or []
        self.use_native_function_calling = use_native_function_calling
        self.parallel_tool_calls = parallel_tool_calls
        self._native_response_types = native_response_types

    @property
    def native_response_types(self) -> list[type]:
        """Output types filled by native LM features (default: ``Citations``, ``Reasoning``)."""
        if self._native_response_types:
            return self._native_response_types
        from dspex.adapters.types.citation import Citations
        from dspex.adapters.types.reasoning import Reasoning

        return [Citations, Reasoning]

    @native_response_types.setter
    def native_response_types(self, value: list[type] | None) -> None:
        self._native_response_types = value

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("format", "parse"):  # callbacks see each format/parse, as in DSPy
            if name in cls.__dict__:
                setattr(cls, name, with_callbacks(cls.__dict__[name]))

    #: request options this adapter adds to every LM call (e.g. JSON mode)
    def prepare_lm_kwargs(
        self, lm_kwargs: dict[str, Any], signature: Any, lm: Any = None
    ) -> dict[str, Any]:
        return lm_kwargs

    # ------------------------------------------------------------------ the call
    def flow(
        self,
        lm_kwargs: dict[str, Any],
        signature: Any,
        demos: Sequence[Demo],
        inputs: Mapping[str, Any],
        lm: Any = None,
    ) -> Generator[LMRequest, list[Any], list[dict[str, Any]]]:
        """The call without I/O: yields the LM request, receives the completions, returns values.

        ``__call__`` (sync) and ``acall`` (async) only drive this generator, so every decision
        is shared and an in-process LM runs without an event loop. ``lm`` (optional) is asked
        for its capabilities (native tools, reasoning, structured outputs). On an
        :class:`AdapterParseError` the call is redone once with :meth:`fallback_adapter`.
        """
        try:
            options = dict(lm_kwargs)
            if type(self).prepare_lm_kwargs is not Adapter.prepare_lm_kwargs:  # else a no-op
                options = self.prepare_lm_kwargs(options, signature, lm)
            rendered = plan_native_features(self, lm, options, signature, inputs)
            messages = self.format(rendered, demos, inputs)
            if options and options.get("parallel_tool_calls") is not None:
                options.setdefault("tool_choice", "auto")
            outputs = yield LMRequest(messages, options)
            if type(outputs) is list and len(outputs) == 1:  # one choice: no comprehension frame
                return [completion_values(self, rendered, signature, outputs[0], self.parse)]
            return [
                completion_values(self, rendered, signature, output, self.parse)
                for output in outputs
            ]
        except AdapterParseError:
            fallback = self.fallback_adapter()
            if fallback is None:
                raise
            return (yield from fallback.flow(lm_kwargs, signature, demos, inputs, lm))

    def _call_preprocess(
        self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, inputs: Mapping[str, Any]
    ) -> Any:
        """DSPy's hook: the signature to render (``lm_kwargs`` updated in place)."""
        return plan_native_features(self, lm, lm_kwargs, signature, inputs)

    def _call_postprocess(
        self,
        processed_signature: Any,
        original_signature: Any,
        outputs: list[Any],
        lm: Any = None,
        lm_kwargs: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """DSPy's hook: the output values of each completion (text or provider dict)."""
        return [
            completion_values(self, processed_signature, original_signature, o, self.parse)
            for o in outputs
        ]

    def fallback_adapter(self) -> Adapter | None:
        """The adapter that retries a call whose reply did not parse (none by default)."""
        return None

    def __call__(
        self,
        lm: BaseLM,
        lm_kwargs: dict[str, Any],
        signature: Any,
        demos: Sequence[Demo],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        return drive_sync(self.flow(lm_kwargs, signature, demos, inputs, lm), lm)

    async def acall(
        self,
        lm: BaseLM,
        lm_kwargs: dict[str, Any],
        signature: Any,
        demos: Sequence[Demo],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """Format, call ``lm``, parse every choice. Raises :class:`AdapterParseError`."""
        return await drive_async(self.flow(lm_kwargs, signature, demos, inputs, lm), lm)

    # ------------------------------------------------------------------ formatting
    @with_callbacks
    def format(
        self, signature: Any, demos: Sequence[Demo], inputs: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """The full message list for one call (byte-identical to DSPy 3.4.1)."""
        history_name = signature._cache.get("history", _UNSET)
        if history_name is _UNSET:
            history_name = signature._cache["history"] = self._history_field_name(signature)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.system_message(signature)}
        ]
        if history_name:
            inputs = dict(inputs)  # the history value is popped from the copy
            request_sig = without_fields(signature, history_name)
            history = self.format_conversation_history(request_sig, history_name, inputs)
            messages.extend(self.format_demos(signature, demos))
            messages.extend(history)
        else:
            request_sig = signature
            if demos or type(self).format_demos is not Adapter.format_demos:  # else none
                messages.extend(self.format_demos(signature, demos))
        content = self.format_user_message_content(request_sig, inputs, main_request=True)
        if content:
            messages.append({"role": "user", "content": content})
        for i, message in enumerate(messages):
            if message["role"] == "user" and _CUSTOM_TYPE_START in message["content"]:
                messages[i] = expand_custom_type_markers(message)
        return messages

    def format_system_message(self, signature: Any) -> str:
        """The system message: field descriptions, structure, and task (DSPy's hook name)."""
        return self.system_message(signature)

    def system_message(self, signature: Any) -> str:
        """Cached per (signature class, adapter class) in the signature's ``_cache`` (emptied
        whenever its fields or instructions change), with the ``__doc__`` it was built from:
        a signature whose ``__doc__`` was assigned directly builds it again."""
        cached: tuple[Any, str] | None = signature._cache.get(type(self))
        doc = signature.__doc__
        if cached is None or cached[0] is not doc:
            text = (
                f"{self.format_field_description(signature)}\n"
                f"{self.format_field_structure(signature)}\n"
                f"{self.format_task_description(signature)}"
            )
            signature._cache[type(self)] = cached = (doc, text)
        return cached[1]

    def format_demos(self, signature: Any, demos: Sequence[Demo]) -> list[dict[str, Any]]:
        if not demos:
            return []
        complete, incomplete = [], []
        for demo in demos:
            if all(k in demo and demo[k] is not None for k in signature._fields):
                complete.append(demo)
            elif any(k in demo for k in signature._input_fields) and any(
                k in demo for k in signature._output_fields
            ):
                incomplete.append(demo)
        messages: list[dict[str, Any]] = []
        groups = (
            (incomplete, "This is an example of the task, though some input or output fields are not supplied.",
             "Not supplied for this particular example. "),
            (complete, "", "Not supplied for this conversation history message. "),
        )  # fmt: skip
        for group, prefix, missing in groups:
            for demo in group:
                user = self.format_user_message_content(signature, demo, prefix=prefix)
                assistant = self.format_assistant_message_content(
                    signature, demo, missing_field_message=missing
                )
                messages.append({"role": "user", "content": user})
                messages.append({"role": "assistant", "content": assistant})
        return messages

    def format_conversation_history(
        self, signature: Any, history_name: str, inputs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        history = inputs.pop(history_name, None)
        if history is None:
            return []
        messages: list[dict[str, Any]] = []
        with_tools = "dspex.adapters.types.tool" in sys.modules  # else no turn holds tool calls
        for message in getattr(history, "messages", history):
            user = self.format_user_message_content(
                signature, message, main_request=any(n in message for n in signature._input_fields)
            )
            if user:
                messages.append({"role": "user", "content": user})
            if with_tools:
                turn = history_tool_turn(self, signature, message)
                if turn is not None:
                    messages.extend(turn)
                    continue
            assistant = self.format_assistant_message_content(signature, message)
            if assistant:
                messages.append({"role": "assistant", "content": assistant})
        return messages

    @staticmethod
    def _history_field_name(signature: Any) -> str | None:
        for name, field in signature._input_fields.items():
            if (
                field.annotation is History
                or getattr(field.annotation, "__name__", None) == "History"
            ):
                return str(name)
        return None

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def format_field_description(self, signature: Any) -> str: ...

    @abstractmethod
    def format_field_structure(self, signature: Any) -> str: ...

    @abstractmethod
    def format_task_description(self, signature: Any) -> str: ...

    @abstractmethod
    def format_user_message_content(
        self,
        signature: Any,
        inputs: Mapping[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str: ...

    @abstractmethod
    def format_assistant_message_content(
        self, signature: Any, outputs: Mapping[str, Any], missing_field_message: str | None = None
    ) -> str: ...

    @abstractmethod
    def parse(self, signature: Any, completion: str) -> dict[str, Any]: ...
