"""Native ``Predict``: format with the adapter, call the LM, parse into a ``Prediction``."""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Generator, Mapping
from typing import TYPE_CHECKING, Any

from dspex import settings
from dspex.adapters.base import LMRequest, drive_async, drive_sync
from dspex.adapters.chat import ChatAdapter
from dspex.errors import CallError, ConfigurationError, StateError
from dspex.lm.base import BaseLM
from dspex.primitives.input_checks import check_inputs
from dspex.primitives.module import TRUSTED_LM_STATE, Module, Parameter
from dspex.primitives.prediction import Prediction
from dspex.signatures import ensure_signature, is_undefined
from dspex.signatures.field import UNDEFINED
from dspex.signatures.signature import SignatureMeta
from dspex.telemetry import events

if TYPE_CHECKING:
    from dspex.adapters.base import Adapter
    from dspex.primitives.streaming import StreamChunk

__all__ = ["DEFAULT_ADAPTER", "Predict"]

logger = logging.getLogger(__name__)

DEFAULT_ADAPTER: Adapter = ChatAdapter()
"""The adapter a call uses when none is configured (``settings.adapter``), as DSPy's
``settings.adapter or ChatAdapter()``: one shared instance (it holds no per-call state)."""


def _serialize(value: Any) -> Any:
    """DSPy's ``serialize_object``: pydantic models to JSON-able dicts, containers recursively."""
    if hasattr(value, "model_dump") and callable(value.model_dump):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_serialize(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_serialize(v) for v in value)
    if isinstance(value, dict):
        return {k: _serialize(v) for k, v in value.items()}
    return value


serialize_object = _serialize  # DSPy's name for it


class Predict(Module, Parameter):
    """Map a signature's inputs to its outputs with one LM call.

    ``config`` holds default LM request options (``temperature``, ``n``...); a call may pass
    ``config={...}``, ``lm=...``, ``demos=[...]`` or ``signature=...`` to override them.
    """

    implementation: str = "native"

    def __init__(
        self,
        signature: Any,
        callbacks: list[Any] | None = None,
        **config: Any,
    ) -> None:
        super().__init__(callbacks=callbacks)
        self.signature = ensure_signature(signature)
        self.config: dict[str, Any] = config
        self.reset()

    def reset(self) -> None:
        self.lm: BaseLM | None = None
        self.traces: list[Any] = []
        self.train: list[Any] = []
        self.demos: list[Any] = []

    # ------------------------------------------------------------------ calling
    # ``__call__``/``acall`` are Module's: with ``_keyword_only`` a positional argument raises
    # DSPy's error before any callback runs (no layer of our own on every call)
    _keyword_only = True

    if TYPE_CHECKING:

        def __call__(self, *args: Any, **kwargs: Any) -> Prediction: ...

        async def acall(self, *args: Any, **kwargs: Any) -> Prediction: ...

    def forward(self, **kwargs: Any) -> Prediction:
        now = settings.scoped() or settings.current()  # no frame in a context()
        if now.send_stream is not None:  # inside dspex.streamify
            from dspex.streaming.streamify import listened, streamed_sync

            if listened(self):
                return streamed_sync(self, kwargs)
        lm, flow = self._flow(kwargs, now)
        try:
            return drive_sync(flow, lm)
        finally:  # an LM error leaves the flow suspended: close it (ends its span now)
            flow.close()

    async def aforward(self, **kwargs: Any) -> Prediction:
        now = settings.scoped() or settings.current()
        if now.send_stream is not None:  # inside dspex.streamify
            from dspex.streaming.streamify import listened, stream_predict

            if listened(self):
                return await stream_predict(self, kwargs)
        lm, flow = self._flow(kwargs, now)
        try:
            return await drive_async(flow, lm)
        finally:
            flow.close()

    async def astream(self, **kwargs: Any) -> AsyncIterator[StreamChunk | Prediction]:
        """Output text as it streams, as field-level :class:`StreamChunk` items, then the
        parsed ``Prediction`` (the shape ``dspy.streamify`` gives, for ChatAdapter markers)."""
        from dspex.modules.streaming import astream

        fields = ensure_signature(kwargs.get("signature", self.signature)).output_fields
        lm, flow = self._flow(kwargs)
        async for item in astream(lm, flow, fields, predictor="self"):
            yield item

    def _flow(
        self, kwargs: dict[str, Any], now: settings.Settings | None = None
    ) -> tuple[BaseLM, Generator[LMRequest, list[Any], Prediction]]:
        record = kwargs.pop("_trace", True)
        if now is None:
            now = settings.current()
        lm, config, signature, demos, inputs = self._prepare(kwargs, now)
        adapter = now.adapter or DEFAULT_ADAPTER
        return lm, self._run(adapter, config, signature, demos, inputs, bool(record), lm)

    def _run(
        self,
        adapter: Adapter,
        config: dict[str, Any],
        signature: Any,
        demos: list[Any],
        inputs: dict[str, Any],
        record: bool = True,
        lm: BaseLM | None = None,
    ) -> Generator[LMRequest, list[Any], Prediction]:
        if events.ATTACHED:  # events.has_handlers() without its frame
            meta = {"module": "predict", "signature": signature.signature}
            with events.span("dspex.native.execute", meta):
                completions = yield from adapter.flow(config, signature, demos, inputs, lm)
        else:
            completions = yield from adapter.flow(config, signature, demos, inputs, lm)
        prediction = Prediction.from_completions(completions, signature=signature)
        if record:  # ``(self, inputs, prediction)`` joins the trace in force, as in DSPy
            now = settings.scoped() or settings.current()
            trace = now.trace  # optimizers read demos from it; bounded by max_trace_size
            if trace is not None and now.max_trace_size > 0:
                if len(trace) >= now.max_trace_size:
                    trace.pop(0)
                trace.append((self, dict(inputs), prediction))
        return prediction

    def _prepare(
        self, kwargs: dict[str, Any], now: settings.Settings | None = None
    ) -> tuple[BaseLM, dict[str, Any], Any, list[Any], dict[str, Any]]:
        """``now``: the settings in force, when the caller already has them."""
        signature = kwargs.pop("signature", self.signature)
        if type(signature) is not SignatureMeta:  # a string or dict (a class returns as is)
            signature = ensure_signature(signature)
        demos = kwargs.pop("demos", self.demos)
        call_config = kwargs.pop("config", None) or {}
        if type(call_config) is not dict and not isinstance(call_config, Mapping):
            raise CallError(
                f"config must be a dict of LM options, got {type(call_config).__name__}"
            )
        config = {**self.config, **call_config}
        if now is None:
            now = settings.current()
        lm = kwargs.pop("lm", None) or self.lm or now.lm
        if lm is None:
            raise ConfigurationError(
                "No LM is configured. Use dspex.configure(lm=dspex.LM('openai/gpt-4o-mini')) "
                "or pass lm= to the module or the call."
            )
        if BaseLM not in type(lm).__mro__ and not isinstance(lm, BaseLM):  # MRO: no ABC hook
            raise ConfigurationError(
                f"lm must be a dspex.BaseLM instance (e.g. dspex.LM({lm!r})), got {type(lm).__name__}"
            )
        # DSPy's rule: sampling several choices at (near) zero temperature is pointless.
        defaults = lm.kwargs
        temperature = config.get("temperature") or defaults.get("temperature")
        n = config.get("n") or defaults.get("n") or defaults.get("num_generations") or 1
        if (temperature is None or temperature <= 0.15) and n > 1:
            config["temperature"] = 0.7
        input_fields = signature._input_fields
        for name, field in input_fields.items():
            default = field.default
            if default is not UNDEFINED and name not in kwargs and not is_undefined(default):
                kwargs[name] = default
        if not kwargs.keys() <= input_fields.keys():
            logger.warning(
                "Input contains fields not in signature. These fields will be ignored: %s. "
                "Expected fields: %s.",
                [k for k in kwargs if k not in input_fields],
                list(input_fields),
            )
        check_inputs(signature, kwargs, logger, now)  # DSPy's input warnings
        return lm, config, signature, demos, kwargs

    def _positional_error(self) -> str:
        names = list(self.signature.input_fields)
        example = f"`predict({names[0]}=input_value, ...)`" if names else "`predict()`"
        return (  # DSPy's words
            "Positional arguments are not allowed when calling `dspy.Predict`, must use keyword "
            f"arguments that match your signature input fields: '{', '.join(names)}'. For "
            f"example: {example}."
        )

    # ------------------------------------------------------------------ state (DSPy format)
    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        state: dict[str, Any] = {"traces": self.traces, "train": self.train, "demos": []}
        for demo in self.demos:
            demo = demo.copy()
            for field in demo:
                demo[field] = _serialize(demo[field])
            if isinstance(demo, dict) or not json_mode:
                state["demos"].append(demo)
            else:
                state["demos"].append(demo.toDict())
        state["signature"] = self.signature.dump_state()
        state["lm"] = (
            self.lm.dump_state() if self.lm is not None and hasattr(self.lm, "dump_state") else None
        )
        return state

    def load_state(
        self, state: dict[str, Any], *, allow_unsafe_lm_state: bool | None = None
    ) -> Predict:
        """Load DSPy-format state; returns ``self``. A saved LM's endpoint keys (``api_base``,
        ``base_url``, ``model_list``) and custom LM classes are honoured only with
        ``allow_unsafe_lm_state=True`` (trusted files), as in DSPy."""
        if not isinstance(state, dict) or "signature" not in state:
            raise StateError("Predict state must be an object with a 'signature' entry")
        if "extended_signature" in state:
            raise StateError("legacy 'extended_signature' state (DSPy <= 2.5) is not supported")
        self.signature = self.signature.load_state(state["signature"])
        for name, value in state.items():
            if name in ("signature", "extended_signature", "lm", "fields"):
                continue
            setattr(self, name, copy.deepcopy(value))  # demos as saved (dicts), as DSPy
        lm_state = state.get("lm")
        if allow_unsafe_lm_state is None:  # Module.load(..., allow_unsafe_lm_state=...)
            allow_unsafe_lm_state = TRUSTED_LM_STATE.get()
        self.lm = _lm_from_state(lm_state, allow_unsafe_lm_state) if lm_state else None
        return self

    def update_config(self, **kwargs: Any) -> None:
        self.config = {**self.config, **kwargs}

    def get_config(self) -> dict[str, Any]:
        return self.config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature})"


_UNSAFE_LM_KEYS = ("api_base", "base_url", "model_list")
_LM_CLASS_KEY = "_dspy_lm_class"  # DSPy's LM_CLASS_STATE_KEY
_BUILTIN_LM_CLASSES = ("dspy.clients.lm.LM", "dspex.lm.client.LM", "dspex.lm.LM")


def _lm_from_state(lm_state: dict[str, Any], allow_unsafe: bool = False) -> BaseLM:
    """Rebuild a saved LM. From an untrusted file (the default) endpoint keys are dropped with
    DSPy's warning and only the built-in LM class is rebuilt."""
    if not isinstance(lm_state, dict):
        raise StateError(f"saved LM state must be an object, got {type(lm_state).__name__}")
    state = dict(lm_state)
    unsafe = sorted(k for k in _UNSAFE_LM_KEYS if k in state)
    if unsafe and not allow_unsafe:
        logger.warning(
            "Ignoring unsafe LM config key(s) during state load: %s. "
            "Pass allow_unsafe_lm_state=True to preserve these keys for trusted files.",
            unsafe,
        )
        state = {k: v for k, v in state.items() if k not in _UNSAFE_LM_KEYS}
    loader = getattr(BaseLM, "load_state", None)
    if loader is not None:  # the LM layer's own rebuild (class markers, custom classes)
        lm: BaseLM = loader(state, allow_custom_lm_class=allow_unsafe)
        return lm
    class_path = state.pop(_LM_CLASS_KEY, None)
    if class_path is not None and class_path not in _BUILTIN_LM_CLASSES:
        return _custom_lm(str(class_path), state, allow_unsafe)
    from dspex.lm import LM

    model = state.pop("model", None)
    if not isinstance(model, str):
        raise StateError("saved LM state has no model name")
    state.pop("model_type", None)
    return LM(model, **state)


def _custom_lm(class_path: str, state: dict[str, Any], allow: bool) -> BaseLM:
    """A saved user LM class: imported only from a trusted file, and only a BaseLM."""
    import importlib

    if not allow:
        raise StateError(
            f"Refusing to import custom serialized LM class `{class_path}`. Pass "
            "allow_unsafe_lm_state=True when loading trusted files to enable custom LM classes."
        )
    parts = class_path.split(".")
    target: Any = None
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module prefix
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for part in parts[cut:]:
                target = getattr(target, part)
        except AttributeError:
            target = None
            continue
        break
    if target is None:
        raise StateError(f"cannot import serialized LM class `{class_path}`")
    if not (isinstance(target, type) and issubclass(target, BaseLM)):
        raise StateError(f"Serialized LM class `{class_path}` must be a subclass of BaseLM")
    rebuilt: BaseLM = target(**state)
    return rebuilt
