"""Native ``ReAct``: think, pick a tool, observe, repeat; then extract the outputs.

The prompts are DSPy 3.4.1's at every step (the same instructions, tool list, trajectory
formatting and extract signature), so a program moves between ``dspy.ReAct`` and this class
with the same request bytes. The episode is one generator of steps that does no I/O
(:meth:`ReAct._episode`); ``forward`` and ``aforward`` only drive it, calling the LM modules
and the tools synchronously or asynchronously.

Behaviour kept from DSPy: a tool error becomes the observation
``"Execution error in <tool>: <traceback>"``; a ``ContextWindowExceeded`` drops the oldest tool
call from the trajectory and retries (3 attempts), and ends the loop if it persists; the
``finish`` tool ends the loop; ``max_iters`` can be given per call.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from dspex import settings
from dspex.adapters.types.tool import Tool
from dspex.adapters.values import AdapterFormatted
from dspex.errors import AdapterParseError, ContextWindowExceeded, LMError
from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.lm_feedback import format_error_for_lm
from dspex.modules.predict import Predict
from dspex.modules.steps import CallModule, Steps, drive_async, drive_sync
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.signatures import InputField, OutputField, ensure_signature, make_signature

__all__ = ["ReAct"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _CallTool:
    """Step: call the tool named ``name`` with ``args`` (a lookup failure is a tool error)."""

    tools: dict[str, Tool]
    name: Any
    args: Any

    def run(self) -> Any:
        return self.tools[self.name](**self.args)

    async def arun(self) -> Any:
        return await self.tools[self.name].acall(**self.args)


def _instructions(signature: Any, tools: dict[str, Tool]) -> str:
    inputs = ", ".join(f"`{k}`" for k in signature.input_fields)
    outputs = ", ".join(f"`{k}`" for k in signature.output_fields)
    lines = [f"{signature.instructions}\n"] if signature.instructions else []
    lines += [
        f"You are an Agent. In each episode, you will be given the fields {inputs} as input. "
        "And you can see your past trajectory so far.",
        "Your goal is to use one or more of the supplied tools to collect any necessary "
        f"information for producing {outputs}.\n",
        "To do this, you will interleave next_thought, next_tool_name, and next_tool_args in "
        "each turn, and also when finishing the task.",
        "After each tool call, you receive a resulting observation, which gets appended to "
        "your trajectory.\n",
        "When writing next_thought, you may reason about the current situation and plan for "
        "future steps.",
        "When selecting the next_tool_name and its next_tool_args, the tool must be one of:\n",
    ]
    lines += [f"({i + 1}) {tool}" for i, tool in enumerate(tools.values())]
    lines.append(
        "When providing `next_tool_args`, the value inside the field must be in JSON format"
    )
    return "\n".join(lines)


@functools.lru_cache(maxsize=512)
def _trajectory_signature(keys: tuple[str, ...]) -> Any:
    """``"thought_0, tool_name_0, ... -> x"``: the signature DSPy formats a trajectory with
    (built once per distinct key list; signatures are immutable)."""
    return make_signature(f"{', '.join(keys)} -> x")


def _finish_tool(outputs: str) -> Tool:
    return Tool(
        func=lambda: "Completed.",
        name="finish",
        desc="Marks the task as complete. That is, signals that all information for producing "
        f"the outputs, i.e. {outputs}, are now available to be extracted.",
        args={},
    )


class ReAct(Module):
    """A tool-using agent over any signature (DSPy's ``ReAct``; see the module docstring).

    ``tools``: functions, callable objects or :class:`~dspex.adapters.types.tool.Tool`s, sync or
    async (an async tool needs the async path, ``acall``, as in DSPy).
    """

    _dspex_kind: ClassVar[str] = "react"
    implementation: str = "native"

    def __init__(
        self, signature: Any, tools: list[Callable[..., Any]], max_iters: int = 20
    ) -> None:
        super().__init__()
        self.signature = signature = ensure_signature(signature)
        self.max_iters = max_iters
        converted = [t if isinstance(t, Tool) else Tool(t) for t in tools]
        by_name: dict[str, Tool] = {str(t.name): t for t in converted}
        outputs = ", ".join(f"`{k}`" for k in signature.output_fields)
        by_name["finish"] = _finish_tool(outputs)
        react_signature = (
            make_signature({**signature.input_fields}, _instructions(signature, by_name))
            .append("trajectory", InputField(), type_=str)
            .append("next_thought", OutputField(), type_=str)
            .append("next_tool_name", OutputField(), type_=Literal[tuple(by_name)])
            .append("next_tool_args", OutputField(), type_=dict[str, Any])
        )
        extract_signature = make_signature(
            {**signature.input_fields, **signature.output_fields}, signature.instructions
        ).append("trajectory", InputField(), type_=str)
        self.tools = by_name
        self.react = Predict(react_signature)
        self.extract = ChainOfThought(extract_signature)

    # ------------------------------------------------------------------ drivers
    def forward(self, **input_args: Any) -> Prediction:
        result: Prediction = drive_sync(self._episode(input_args))
        return result

    async def aforward(self, **input_args: Any) -> Prediction:
        result: Prediction = await drive_async(self._episode(input_args))
        return result

    # ------------------------------------------------------------------ the episode (no I/O)
    def _episode(self, input_args: dict[str, Any]) -> Steps[Any]:
        trajectory: dict[str, Any] = {}
        max_iters = input_args.pop("max_iters", self.max_iters)
        for idx in range(max_iters):
            try:
                pred = yield from self._truncating_call(self.react, trajectory, input_args)
            except ContextWindowExceeded as err:
                logger.warning(
                    f"Ending the trajectory: {format_error_for_lm(err, traceback_frames=5)}"
                )
                break
            except ValueError as err:
                if isinstance(err, AdapterParseError | LMError):
                    raise  # not ValueErrors in DSPy: they propagate there
                logger.warning(
                    "Ending the trajectory: Agent failed to select a valid tool: "
                    f"{format_error_for_lm(err, traceback_frames=5)}"
                )
                break
            trajectory[f"thought_{idx}"] = pred.next_thought
            trajectory[f"tool_name_{idx}"] = pred.next_tool_name
            trajectory[f"tool_args_{idx}"] = pred.next_tool_args
            try:
                trajectory[f"observation_{idx}"] = yield _CallTool(
                    self.tools, pred.next_tool_name, pred.next_tool_args
                )
            except Exception as err:
                trajectory[f"observation_{idx}"] = (
                    f"Execution error in {pred.next_tool_name}: "
                    f"{format_error_for_lm(err, traceback_frames=5)}"
                )
            if pred.next_tool_name == "finish":
                break
        extract = yield from self._truncating_call(self.extract, trajectory, input_args)
        return Prediction(trajectory=trajectory, **extract)

    def _truncating_call(
        self, module: Any, trajectory: dict[str, Any], input_args: dict[str, Any]
    ) -> Steps[Any]:
        last_error: BaseException | None = None
        for _ in range(3):
            try:
                kwargs = {**input_args, "trajectory": self._format_trajectory(trajectory)}
                return (yield CallModule(module, kwargs))
            except ContextWindowExceeded as err:
                logger.warning(
                    "Trajectory exceeded the context window, truncating the oldest tool call "
                    "information."
                )
                last_error = err
                trajectory = self.truncate_trajectory(trajectory)
        raise ContextWindowExceeded(
            "The context window was exceeded even after 3 attempts to truncate the trajectory."
        ) from last_error

    # ------------------------------------------------------------------ DSPy's helpers
    def _call_with_potential_trajectory_truncation(
        self, module: Any, trajectory: dict[str, Any], **input_args: Any
    ) -> Any:
        return drive_sync(self._truncating_call(module, trajectory, input_args))

    async def _async_call_with_potential_trajectory_truncation(
        self, module: Any, trajectory: dict[str, Any], **input_args: Any
    ) -> Any:
        return await drive_async(self._truncating_call(module, trajectory, input_args))

    def _format_trajectory(self, trajectory: dict[str, Any]) -> str:
        from dspex.adapters import ChatAdapter

        adapter = settings.current().adapter or ChatAdapter()
        trajectory_signature = _trajectory_signature(tuple(trajectory))
        text = adapter.format_user_message_content(trajectory_signature, trajectory)
        # the adapter's own markers are structure (observations inside were neutralized)
        return AdapterFormatted(text)

    def truncate_trajectory(self, trajectory: dict[str, Any]) -> dict[str, Any]:
        """Drop the oldest tool call (its 4 keys) so the prompt fits; override to customize."""
        keys = list(trajectory)
        if len(keys) <= 4:
            raise ContextWindowExceeded(
                "The trajectory is too long so your prompt exceeded the context window, but the "
                "trajectory cannot be truncated because it only has one tool call."
            )
        for key in keys[:4]:
            trajectory.pop(key)
        return trajectory
