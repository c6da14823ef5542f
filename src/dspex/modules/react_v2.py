"""Native ``ReActV2``: an agent whose turns are native tool calls, ended by a ``submit`` tool.

DSPy 3.4.1's ``dspy.ReActV2`` (the default ReAct from DSPy 3.5) with the same constructor, the
same prompts and the same request bytes at every step. Each turn one ``Predict`` over
``inputs, history: History, tools: list[Tool] -> next_thought: Reasoning, tool_calls: ToolCalls``
asks the LM for tool calls (native function calling when the adapter and LM allow it, else as a
text field); every call runs (parallel calls in order), and the turn - its thought, its calls
with their provider ids and their results - is appended to the conversation history, which the
adapter replays (as ``tool`` messages with native function calling).

The loop ends when ``submit`` (built from the signature's output fields) returns the outputs
(``termination_reason="submit"``). Otherwise - ``max_iters`` turns, a turn with no tool calls, a
reply that does not parse, a context-window overflow - one last request forces ``submit``
(``tool_choice`` = submit, no reasoning effort): ``"forced_submit"``, or an error if even that
yields no outputs. A tool error, an unknown tool or a bad argument becomes the call's result
(``is_error=True``) for the LM to see, as in DSPy. The episode is one generator of steps doing
no I/O (:meth:`ReActV2._episode`); ``forward`` runs tools sync, ``aforward`` awaits them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, get_args

import pydantic

from dspex.adapters.types.history import History
from dspex.adapters.types.reasoning import Reasoning
from dspex.adapters.types.tool import Tool
from dspex.adapters.types.tool_calls import ToolCallResults, ToolCalls
from dspex.errors import (
    AgentNoFinalOutputs,
    ContextWindowExceeded,
    LMError,
    SignatureError,
    ToolError,
)
from dspex.modules.lm_feedback import format_error_for_lm
from dspex.modules.predict import Predict
from dspex.modules.steps import CallModule, Steps, drive_async, drive_sync
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.signatures import InputField, OutputField, ensure_signature, make_signature
from dspex.utils.annotation import experimental

__all__ = ["ReActV2"]

logger = logging.getLogger(__name__)

# attached to every Prediction beside the outputs: an output field of that name would collide
_RESERVED_OUTPUTS = frozenset({"history", "termination_reason"})
# the inner Predict's own inputs: a user input of that name would be overwritten
_RESERVED_INPUTS = frozenset({"history", "tools"})
_FORCE_SUBMIT = {
    "tool_choice": {"type": "function", "function": {"name": "submit"}},
    "reasoning_effort": None,
}


@dataclass(frozen=True, slots=True)
class _CallTool:
    """Step: run one tool with its arguments (sync, or awaited on the async path)."""

    tool: Tool
    args: dict[str, Any]

    def run(self) -> Any:
        return self.tool(**self.args)

    async def arun(self) -> Any:
        return await self.tool.acall(**self.args)


def _reserved(names: frozenset[str], fields: Any) -> str:
    return ", ".join(f"`{name}`" for name in sorted(names.intersection(fields)))


@experimental
class ReActV2(Module):
    """A tool-calling agent over any signature that ends by calling ``submit`` (DSPy's
    ``ReActV2``; see the module docstring). ``tools``: functions, callable objects or
    :class:`~dspex.Tool`, sync or async (an async tool needs ``acall``, as in DSPy). The
    prediction holds the output fields, ``history`` and ``termination_reason``.
    """

    _dspex_kind: ClassVar[str] = "react_v2"
    implementation: str = "native"

    def __init__(
        self, signature: Any, tools: list[Callable[..., Any] | Tool], max_iters: int = 20
    ) -> None:
        super().__init__()
        self.signature = ensure_signature(signature)
        self.max_iters = max_iters
        if clash := _reserved(_RESERVED_OUTPUTS, self.signature.output_fields):
            raise SignatureError(
                f"Output field name(s) {clash} are reserved by ReActV2 and attached to every "
                "returned Prediction. Rename these output fields on your signature."
            )
        if clash := _reserved(_RESERVED_INPUTS, self.signature.input_fields):
            raise SignatureError(
                f"Input field name(s) {clash} are reserved by ReActV2 for its internal "
                "conversation history and tool list. Rename these input fields on your signature."
            )
        converted = [t if isinstance(t, Tool) else Tool(t) for t in tools]
        self.tools: dict[str, Tool] = {str(t.name): t for t in converted}
        if "submit" in self.tools:
            raise ToolError("`submit` is reserved by ReActV2 as the final-output tool.")
        self.tools["submit"] = self._make_submit_tool()
        self.react = Predict(self._make_react_signature())

    # ------------------------------------------------------------------ construction
    def _make_submit_tool(self) -> Tool:
        output_fields = self.signature.output_fields
        names = list(output_fields)

        def submit(**kwargs: Any) -> dict[str, Any]:
            missing = [name for name in names if name not in kwargs]
            if missing:
                raise ToolError(f"Missing required final output field(s): {', '.join(missing)}")
            return {name: kwargs[name] for name in names}

        return Tool(
            submit,
            name="submit",
            desc="Submit the final outputs for the task.",
            args={n: _json_schema(f.annotation) for n, f in output_fields.items()},
            arg_types={n: f.annotation for n, f in output_fields.items()},
        )

    def _make_react_signature(self) -> Any:
        fields: dict[str, Any] = {
            name: (
                _optional(field.annotation),
                InputField(desc=field.json_schema_extra.get("desc")),
            )
            for name, field in self.signature.input_fields.items()
        }
        fields["history"] = (History, InputField())
        fields["tools"] = (list[Tool], InputField())
        fields["next_thought"] = (Reasoning, OutputField())
        fields["tool_calls"] = (ToolCalls, OutputField())
        inputs = ", ".join(f"`{name}`" for name in self.signature.input_fields)
        outputs = ", ".join(f"`{name}`" for name in self.signature.output_fields)
        tool_names = ", ".join(f"`{name}`" for name in self.tools)
        instructions = "\n".join(
            [
                self.signature.instructions,
                f"You are an Agent. Use the supplied tools to produce {outputs} from {inputs}.",
                "Call tools when more information is needed.",
                f"When the final answer is ready, call `submit` with {outputs}.",
                f"The available tools are: {tool_names}.",
            ]
        ).strip()
        return make_signature(fields, instructions)

    # ------------------------------------------------------------------ drivers
    def forward(self, **input_args: Any) -> Prediction:
        result: Prediction = drive_sync(self._episode(input_args))
        return result

    async def aforward(self, **input_args: Any) -> Prediction:
        result: Prediction = await drive_async(self._episode(input_args))
        return result

    # ------------------------------------------------------------------ the episode (no I/O)
    def _episode(self, input_args: dict[str, Any]) -> Steps[Prediction]:
        max_iters = input_args.pop("max_iters", self.max_iters)
        history = _coerce_history(input_args.pop("history", None))
        pending = {k: input_args[k] for k in self.signature.input_fields if k in input_args}
        break_reason = "max_iters"
        for turn in range(max_iters):
            try:
                pred = yield self._react_step(history, pending)
                tool_calls = _coerce_tool_calls(getattr(pred, "tool_calls", None))
            except ContextWindowExceeded:  # before ValueError: ours is a ValueError
                logger.warning("Ending ReActV2 loop after context window exceeded.")
                break_reason = "context_window_exceeded"
                break
            except ValueError as err:
                if isinstance(err, LMError):
                    raise  # an LM request error is not a ValueError in DSPy: it propagates
                logger.warning(
                    "Ending ReActV2 loop after parse failure: "
                    f"{format_error_for_lm(err, traceback_frames=5)}"
                )
                break_reason = "parse_error"
                break
            if not tool_calls.tool_calls:
                break_reason = "empty_tool_calls"
                break
            tool_calls = _ensure_tool_call_ids(tool_calls, turn)
            results, final_outputs = yield from self._run_tool_calls(tool_calls)
            _append_event(history, pending, pred, tool_calls, results, final_outputs)
            pending = {}
            if final_outputs is not None:
                return Prediction(**final_outputs, history=history, termination_reason="submit")
        return (yield from self._forced_submit(history, pending, break_reason, max_iters))

    def _react_step(
        self, history: History, pending: dict[str, Any], config: dict[str, Any] | None = None
    ) -> CallModule:
        kwargs: dict[str, Any] = {"history": history, "tools": list(self.tools.values())}
        if config is not None:
            kwargs["config"] = dict(config)
        return CallModule(self.react, {**kwargs, **pending})

    def _run_tool_calls(
        self, tool_calls: ToolCalls
    ) -> Steps[tuple[ToolCallResults, dict[str, Any] | None]]:
        """Run every call in order; a failure becomes that call's (error) result."""
        values: list[Any] = []
        is_errors: list[bool] = []
        final_outputs: dict[str, Any] | None = None
        for call in tool_calls.tool_calls:
            tool = self.tools.get(call.name)
            if tool is None:
                values.append(f"Unknown tool: {call.name}")
                is_errors.append(True)
                continue
            try:
                value = yield _CallTool(tool, dict(call.args or {}))
            except Exception as err:
                values.append(
                    f"Execution error in {call.name}: "
                    f"{format_error_for_lm(err, traceback_frames=5)}"
                )
                is_errors.append(True)
                continue
            values.append(value)
            is_errors.append(False)
            if call.name == "submit" and isinstance(value, dict):
                final_outputs = value
        results = ToolCallResults.from_tool_calls_and_values(tool_calls, values, is_errors)
        return results, final_outputs

    def _forced_submit(
        self, history: History, pending: dict[str, Any], break_reason: str, turn: int
    ) -> Steps[Prediction]:
        try:
            pred = yield self._react_step(history, pending, _FORCE_SUBMIT)
            tool_calls = _ensure_tool_call_ids(
                _coerce_tool_calls(getattr(pred, "tool_calls", None)), turn
            )
        except ValueError as err:  # a parse error or a context-window overflow: re-raised
            logger.warning(f"Forced submit failed: {format_error_for_lm(err, traceback_frames=5)}")
            raise
        submit_calls = ToolCalls(
            tool_calls=[c for c in tool_calls.tool_calls if c.name == "submit"]
        )
        if not submit_calls.tool_calls:
            raise AgentNoFinalOutputs(
                f"ReActV2 failed to produce final outputs after {break_reason}: no submit call.",
                reason=break_reason,
            )
        results, final_outputs = yield from self._run_tool_calls(submit_calls)
        _append_event(history, pending, pred, submit_calls, results, final_outputs)
        if final_outputs is not None:
            return Prediction(**final_outputs, history=history, termination_reason="forced_submit")
        errors = "\n".join(str(r.value) for r in results.tool_call_results if r.is_error)
        raise AgentNoFinalOutputs(
            f"ReActV2 failed to produce final outputs after {break_reason}: submit failed.\n{errors}",
            reason=break_reason,
        )


# ---------------------------------------------------------------------------- helpers


def _append_event(
    history: History,
    pending: dict[str, Any],
    pred: Any,
    tool_calls: ToolCalls,
    results: ToolCallResults,
    final_outputs: dict[str, Any] | None,
) -> None:
    """Record a turn: the inputs not yet in the history, the thought, the calls (with their
    results inside) and, after a successful submit, the outputs."""
    event = dict(pending)
    thought = getattr(pred, "next_thought", None)
    if thought is not None:
        event["next_thought"] = thought
    if tool_calls.tool_calls:
        if results.tool_call_results:
            tool_calls = tool_calls.model_copy(update={"tool_call_results": results})
        event["tool_calls"] = tool_calls
    if final_outputs is not None:
        event.update(final_outputs)
    if event:
        history.messages.append(event)


def _json_schema(annotation: Any) -> dict[str, Any]:
    try:
        schema: dict[str, Any] = pydantic.TypeAdapter(annotation).json_schema()
    except Exception:
        return {"type": "string"}
    return schema


def _optional(annotation: Any) -> Any:
    if type(None) in get_args(annotation):
        return annotation
    try:
        return annotation | None
    except TypeError:
        return annotation


def _coerce_history(history: Any) -> History:
    if history is None:
        return History(messages=[])
    if isinstance(history, History):
        return history
    return History.model_validate(history)


def _coerce_tool_calls(tool_calls: Any) -> ToolCalls:
    if tool_calls is None:
        return ToolCalls(tool_calls=[])
    return ToolCalls.model_validate(tool_calls)


def _ensure_tool_call_ids(tool_calls: ToolCalls, turn: int) -> ToolCalls:
    """Calls without a provider id get ``call_<turn>_<index>`` (so results can refer to them)."""
    return ToolCalls(
        tool_calls=[
            call if call.id is not None else call.model_copy(update={"id": f"call_{turn}_{i}"})
            for i, call in enumerate(tool_calls.tool_calls)
        ]
    )
