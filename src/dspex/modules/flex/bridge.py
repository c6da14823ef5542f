"""Host side of a ``Flex``: run its ``module_src`` in an interpreter, predictors on the host.

Each forward (:meth:`FlexBridge.forward`) gets a fresh interpreter from the Flex's factory and
a fresh :class:`FlexInvocation`: the interpreter is given the Flex's tools and the facade's two
host tools, runs :data:`~dspex.modules.flex.shim.SHIM_SOURCE`, the bound source, then the
module's ``forward`` on the call's inputs, and is shut down. The predictors the code builds
live in that invocation only, never on the Flex, so concurrent forwards of one Flex share
nothing.

What the code may ask of the host is bounded: only :data:`BRIDGEABLE_KINDS`, built natively;
only generation options (:data:`GENERATION_OPTIONS`) as LM settings, at construction or per
call; only the Flex's own tools; at most ``max_predictor_calls`` predictor calls per forward.
An error the host raised for the code (an LM failure, a refusal) that the code did not catch
is raised again as itself, not as the interpreter's report of it.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from dspex.adapters.types.base_type import Type
from dspex.adapters.values import annotation_allows_none, parse_value
from dspex.errors import (
    FlexBridgeError,
    FlexBudgetExceeded,
    FlexSourceError,
    LMError,
)
from dspex.primitives.code_interpreter import create_interpreter, resolve_interpreter_factory
from dspex.primitives.prediction import Prediction
from dspex.signatures import make_signature

from .shim import (
    BRIDGEABLE_KINDS,
    CALL_TOOL,
    CONSTRUCT_TOOL,
    HOST_TOKEN_VAR,
    RESULT_FN,
    SHIM_SOURCE,
    SIGNATURE_MARKER,
    TOOL_MARKER,
)

__all__ = [
    "GENERATION_OPTIONS",
    "HOST_TOKEN",
    "FlexBridge",
    "FlexInvocation",
    "module_class_name",
]

logger = logging.getLogger(__name__)

HOST_TOKEN = secrets.token_hex(16)
"""Known only to this process: the shim compares it to tell the host's memory from a sandbox."""

GENERATION_OPTIONS = frozenset(
    {
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "n", "seed",
        "logprobs", "top_logprobs", "response_format", "reasoning", "reasoning_effort",
        "tools", "tool_choice", "parallel_tool_calls",
        "cache", "rollout_id", "prompt_cache", "prompt_cache_key",
    }
)  # fmt: skip
"""LM options the code may set (DSPy's ``SANDBOX_LM_KWARGS``): never endpoints or keys."""

_CONFIG_KINDS = ("Predict", "ChainOfThought")
"""Kinds whose extra constructor keywords are LM options (``Predict(sig, **config)``)."""

_INPUTS_VAR = "__dspy_flex_inputs"
_INSTANCE_VAR = "__dspy_flex_instance"


def module_class_name(module_src: str) -> str:
    """The class ``module_src`` defines for Flex to run: the first top-level class with a
    ``forward`` method, else the first class (``SyntaxError`` if it does not parse)."""
    classes = [node for node in ast.parse(module_src).body if isinstance(node, ast.ClassDef)]
    with_forward = [
        c
        for c in classes
        if any(isinstance(n, ast.FunctionDef) and n.name == "forward" for n in c.body)
    ]
    chosen = with_forward or classes
    if not chosen:
        raise FlexSourceError(
            "module_src must define a dspy.Module subclass with a `forward` method"
        )
    return chosen[0].name


def _native_classes() -> dict[str, Any]:
    from dspex.modules.chain_of_thought import ChainOfThought
    from dspex.modules.code_act import CodeAct
    from dspex.modules.predict import Predict
    from dspex.modules.program_of_thought import ProgramOfThought
    from dspex.modules.react import ReAct
    from dspex.modules.react_v2 import ReActV2

    return {
        "Predict": Predict,
        "ChainOfThought": ChainOfThought,
        "CodeAct": CodeAct,
        "ProgramOfThought": ProgramOfThought,
        "ReAct": ReAct,
        "ReActV2": ReActV2,
    }


def _type_key(value: Type) -> str:
    serialized = value.serialize_model()
    if isinstance(serialized, str):
        return serialized
    return json.dumps(serialized, sort_keys=True, default=str)


def stand_in_custom_types(value: Any, originals: dict[str, Any]) -> Any:
    """``value`` with each custom-type object (``Image``...) replaced by its serialized text,
    recorded in ``originals`` so the host gets the object back when the code passes it on."""
    if isinstance(value, Type):
        key = _type_key(value)
        originals[key] = value
        return key
    if isinstance(value, dict):
        return {k: stand_in_custom_types(v, originals) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [stand_in_custom_types(v, originals) for v in value]
    return value


def restore_custom_types(value: Any, originals: dict[str, Any]) -> Any:
    """The inverse of :func:`stand_in_custom_types` on a value coming back from the code."""
    if isinstance(value, str) and value in originals:
        return originals[value]
    if isinstance(value, dict):
        return {k: restore_custom_types(v, originals) for k, v in value.items()}
    if isinstance(value, list):
        return [restore_custom_types(v, originals) for v in value]
    return value


def _fields_of(prediction: Any) -> dict[str, Any]:
    """A predictor's result as JSON values for the code (its output fields)."""
    from pydantic_core import PydanticSerializationError, to_jsonable_python

    if isinstance(prediction, Prediction):
        raw = dict(prediction.items())
    elif isinstance(prediction, dict):
        raw = prediction
    else:
        raise FlexBridgeError(
            f"A bridged predictor must return a dspy.Prediction; got {type(prediction).__name__}"
        )
    from dspex.adapters.types import History

    fields: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, History):  # a pydantic model in DSPy: its fields as JSON
            value = {"messages": value.messages}
        try:
            fields[key] = to_jsonable_python(value)
        except PydanticSerializationError:
            fields[key] = value
    try:
        json.dumps(fields)
    except TypeError as exc:
        raise FlexBridgeError(
            "A bridged predictor returned a field that cannot cross the sandbox boundary "
            f"(must be JSON-serializable): {exc}"
        ) from exc
    return fields


def _refuse_lm_options(options: dict[str, Any], where: str) -> None:
    refused = sorted(set(options) - GENERATION_OPTIONS)
    if refused:
        raise FlexBridgeError(
            f"Sandboxed code may not set LM option(s) {refused} {where}; allowed: "
            f"{sorted(GENERATION_OPTIONS)}."
        )


class FlexInvocation:
    """One forward's host side: the predictors its code built and its call budget."""

    def __init__(
        self,
        tools: dict[str, Any],
        interpreter_factory: Callable[[], Any] | None,
        max_predictor_calls: int | None,
        *,
        custom_types: dict[str, type] | None = None,
        originals: dict[str, Any] | None = None,
    ) -> None:
        self._tools = tools
        self._interpreter_factory = interpreter_factory
        self._max_predictor_calls = max_predictor_calls
        self._custom_types = custom_types or None
        self._originals = originals or {}
        self._predictors: dict[str, Any] = {}
        self._calls = 0
        self._raised: dict[str, BaseException] = {}
        """Host errors handed to the code, by the tag their message carries."""

    def install(self, interpreter: Any) -> None:
        """Register the facade's host tools and run the shim in ``interpreter``."""
        interpreter.tools.update({CONSTRUCT_TOOL: self.construct, CALL_TOOL: self.call})
        interpreter.execute(SHIM_SOURCE, variables={HOST_TOKEN_VAR: HOST_TOKEN})

    # ------------------------------------------------------------------ host tools
    def construct(
        self, kind: str, signature: Any, attr_name: str, kwargs: dict[str, Any] | None = None
    ) -> str:
        """Build the predictor the code declared; its handle is ``attr_name``."""
        with self._handing_errors_to_code():
            self._predictors[attr_name] = self._build(kind, signature, dict(kwargs or {}))
        return attr_name

    def call(self, handle: str, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run predictor ``handle`` on ``inputs``: its output fields as JSON values."""
        with self._handing_errors_to_code():
            self._calls += 1
            budget = self._max_predictor_calls
            if budget is not None and self._calls > budget:
                raise FlexBudgetExceeded(
                    f"Sandboxed forward exceeded its predictor-call budget ({budget}). "
                    "Raise max_predictor_calls if this is expected.",
                    budget=budget,
                )
            predictor = self._predictors.get(handle)
            if predictor is None:
                raise FlexBridgeError(f"Unknown predictor handle: {handle!r}")
            arguments = {k: restore_custom_types(v, self._originals) for k, v in (inputs or {}).items()}  # fmt: skip
            if "lm" in arguments:
                raise FlexBridgeError("Sandboxed code may not choose the LM of a predictor call.")
            if isinstance(arguments.get("config"), dict):
                _refuse_lm_options(arguments["config"], "in a call's config")
            return _fields_of(predictor(**arguments))

    # ------------------------------------------------------------------ errors
    @contextmanager
    def _handing_errors_to_code(self) -> Iterator[None]:
        """Tag an LM or bridge error on its way into the code, to recognise it coming out."""
        try:
            yield
        except (LMError, FlexBridgeError) as exc:
            tag = f"[dspex flex host-error #{len(self._raised) + 1}]"
            self._raised[tag] = exc
            raise FlexBridgeError(f"{tag} {type(exc).__name__}: {exc}") from exc

    def host_error(self, error: BaseException) -> BaseException | None:
        """The host error ``error`` (the interpreter's report) carries, if any."""
        text = str(error)
        for tag, original in self._raised.items():
            if tag in text:
                return original
        return None

    # ------------------------------------------------------------------ building
    def _build(self, kind: str, signature: Any, kwargs: dict[str, Any]) -> Any:
        if kind not in BRIDGEABLE_KINDS:
            raise FlexBridgeError(
                f"dspy.{kind} is not supported through the sandbox dspy bridge yet "
                f"(bridgeable: {', '.join(BRIDGEABLE_KINDS)})"
            )
        classes = _native_classes()
        if kind not in classes:
            raise FlexBridgeError(
                f"dspy.{kind} has no native DSPEx implementation, so a Flex cannot build it; "
                f"use one of {', '.join(classes)} in the Flex's code."
            )
        if "interpreter_factory" in kwargs:
            raise FlexBridgeError(
                f"dspy.{kind} built in the sandbox runs on the host module's interpreter; "
                "sandboxed code cannot choose its interpreter_factory."
            )
        if kind in _CONFIG_KINDS:
            _refuse_lm_options(kwargs, f"when building dspy.{kind}")
        arguments = {k: self._decode_tools(v) for k, v in kwargs.items()}
        if kind in ("CodeAct", "ProgramOfThought"):
            arguments["interpreter_factory"] = self._interpreter_factory
        return classes[kind](self._signature(signature), **arguments)

    def _signature(self, signature: Any) -> Any:
        if isinstance(signature, dict) and signature.get(SIGNATURE_MARKER):
            return make_signature(
                signature["signature"],
                signature.get("instructions"),
                custom_types=self._custom_types,
            )
        if isinstance(signature, str):
            return make_signature(signature, custom_types=self._custom_types)
        raise FlexBridgeError(
            "A sandboxed predictor's signature must be a string or dspy.Signature(text, "
            f"instructions); got {type(signature).__name__}"
        )

    def _decode_tools(self, value: Any) -> Any:
        if isinstance(value, dict) and TOOL_MARKER in value:
            name = value[TOOL_MARKER]
            if name not in self._tools:
                raise FlexBridgeError(
                    f"Sandboxed code referenced tool {name!r}, which was not provided to the "
                    "host module's tools. Functions authored inside the sandbox cannot be "
                    "handed to a bridged sub-predictor."
                )
            return self._tools[name]
        if isinstance(value, list):
            return [self._decode_tools(v) for v in value]
        if isinstance(value, dict):
            return {k: self._decode_tools(v) for k, v in value.items()}
        return value


SANDBOX_LIMITS: dict[str, Any] = {"timeout": 600.0, "cpu_seconds": 60}
"""DSPEx's sandbox as a Flex's default interpreter: its wall-clock bound covers the forward's
LM calls (served while the code waits), so it is longer than the sandbox's own default; the
code's CPU time stays bounded separately."""


def _new_interpreter(factory: Callable[[], Any] | None) -> Any:
    from dspex.primitives.python_interpreter import PythonInterpreter

    if resolve_interpreter_factory(factory) is PythonInterpreter:
        return PythonInterpreter(**SANDBOX_LIMITS)
    return create_interpreter(factory)


def _tool_entry(tool: Any, originals: dict[str, Any]) -> Callable[..., Any]:
    """A Flex tool as the interpreter calls it: keyword arguments, custom types restored."""
    func = getattr(tool, "func", None) or tool

    @functools.wraps(func)
    def entry(**kwargs: Any) -> Any:
        return tool(**{k: restore_custom_types(v, originals) for k, v in kwargs.items()})

    return entry


class FlexBridge:
    """Runs the bound source of one ``Flex`` (which it reads for its signature and tools)."""

    def __init__(
        self, flex: Any, factory: Callable[[], Any] | None, max_predictor_calls: int | None = 100
    ) -> None:
        self._flex = flex
        self._factory = factory
        self._max_predictor_calls = max_predictor_calls
        self._module_src: str | None = None
        self._class_name: str | None = None

    def bind(self, module_src: str) -> None:
        """Check ``module_src`` (parse only: nothing runs) and use it from the next forward."""
        if not isinstance(module_src, str):
            raise FlexSourceError(f"module_src must be a string, got {type(module_src).__name__}")
        self._class_name = module_class_name(module_src)
        self._module_src = module_src

    def forward(self, inputs: dict[str, Any]) -> Prediction:
        if self._module_src is None or self._class_name is None:
            raise FlexSourceError("this Flex has no bound module_src")
        ctx = self._flex._flex_ctx
        originals: dict[str, Any] = {}
        wire_inputs = stand_in_custom_types(dict(inputs), originals)
        tools = ctx.context_names()
        invocation = FlexInvocation(
            tools,
            self._factory,
            self._max_predictor_calls,
            custom_types=ctx.custom_types(),
            originals=originals,
        )
        interpreter = _new_interpreter(self._factory)
        try:
            interpreter.tools.update(
                {name: _tool_entry(tool, originals) for name, tool in tools.items()}
            )
            invocation.install(interpreter)
            interpreter.execute(self._module_src)
            driver = (
                f"{_INSTANCE_VAR} = {self._class_name}()\n"
                f"{RESULT_FN}({_INSTANCE_VAR}.forward(**{_INPUTS_VAR}))"
            )
            result = interpreter.execute(driver, variables={_INPUTS_VAR: wire_inputs})
        except Exception as exc:
            original = invocation.host_error(exc)
            if original is not None:
                raise original from exc
            raise
        finally:
            try:
                interpreter.shutdown()
            except Exception:
                logger.warning("Flex: interpreter.shutdown() raised after forward", exc_info=True)
        if not isinstance(result, str) or not result:
            raise FlexSourceError(
                "Sandboxed forward returned no serializable result; the generated forward must "
                f"return a dspy.Prediction (got {result!r})"
            )
        fields = json.loads(result)
        if not isinstance(fields, dict):
            raise FlexSourceError(
                f"Sandboxed forward must return a dspy.Prediction, got {fields!r:.200}"
            )
        return self._to_prediction(fields)

    def _to_prediction(self, fields: dict[str, Any]) -> Prediction:
        """The code's output fields checked against the signature and parsed to its types."""
        outputs = self._flex.signature.output_fields
        values = dict(fields)
        defaulted: set[str] = set()
        for name, info in outputs.items():
            if name in values:
                continue
            if not info.is_required():
                values[name] = info.get_default(call_default_factory=True)
            elif annotation_allows_none(info.annotation):
                values[name] = None
            else:
                continue
            defaulted.add(name)
        missing = [name for name in outputs if name not in values]
        if missing:
            raise FlexSourceError(
                "Sandboxed forward returned a dspy.Prediction missing required output field(s) "
                f"{missing}; the signature declares {list(outputs)}.",
                field=missing[0],
            )
        for name, info in outputs.items():
            if name not in defaulted:
                values[name] = _parse_output(name, values[name], info.annotation)
        return Prediction(**values)


def _parse_output(name: str, value: Any, annotation: Any) -> Any:
    try:
        if value is None:
            from pydantic import TypeAdapter

            return TypeAdapter(annotation).validate_python(None)
        return parse_value(value, annotation)
    except Exception as exc:
        raise FlexSourceError(
            f"Sandboxed forward returned {value!r} for output field {name!r}, which is not a "
            f"valid {annotation}: {exc}",
            field=name,
        ) from exc
