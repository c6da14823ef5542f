"""``TwoStepAdapter``: a free-form prompt for the main LM, then a ChatAdapter extraction call.

Step one asks the main LM (often a reasoning model) in plain prose; step two sends its reply
as ``text`` to ``extraction_model`` with a ``text -> <output fields>`` signature through a
:class:`ChatAdapter`. Both steps are requests of one flow (the second names its LM), so sync
and async calls share every decision. Prompts are byte-identical to DSPy 3.4.1's.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import Any

from dspex.adapters.base import Adapter, Demo, LMRequest, drive_sync
from dspex.adapters.chat import ChatAdapter
from dspex.adapters.native import plan_native_features, provider_tool_call, tool_fields
from dspex.adapters.values import get_field_description_string
from dspex.errors import AdapterParseError, UserError

__all__ = ["TwoStepAdapter"]

Flow = Generator[LMRequest, list[Any], dict[str, Any]]


def _is_lm(value: Any) -> bool:
    from dspex.lm.base import BaseLM

    if isinstance(value, BaseLM):
        return True
    dspy_base = getattr(__import__("sys").modules.get("dspy"), "BaseLM", None)
    return isinstance(dspy_base, type) and isinstance(value, dspy_base)


class TwoStepAdapter(Adapter):
    """``TwoStepAdapter(extraction_model)``: prose from the main LM, fields extracted by another."""

    def __init__(self, extraction_model: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not _is_lm(extraction_model):
            raise UserError("extraction_model must be an instance of dspy.BaseLM")
        self.extraction_model = extraction_model

    # ------------------------------------------------------------------ step one
    def format(
        self, signature: Any, demos: Sequence[Demo], inputs: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": self.format_task_description(signature)}
        ]
        messages.extend(self.format_demos(signature, demos))
        messages.append(
            {"role": "user", "content": self.format_user_message_content(signature, inputs)}
        )
        return messages

    def format_field_description(self, signature: Any) -> str:
        return ""  # step one has no field structure: the task description says it all

    def format_field_structure(self, signature: Any) -> str:
        return ""

    def format_task_description(self, signature: Any) -> str:
        parts = [
            "You are a helpful assistant that can solve tasks based on user input.",
            "As input, you will be provided with:\n"
            + get_field_description_string(signature._input_fields),
            "Your outputs must contain:\n" + get_field_description_string(signature._output_fields),
            "You should lay out your outputs in detail so that your answer can be understood by another agent",
        ]
        if signature.instructions:
            parts.append(f"Specific instructions: {signature.instructions}")
        return "\n".join(parts)

    def format_user_message_content(
        self,
        signature: Any,
        inputs: Mapping[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        parts = [prefix]
        parts.extend(f"{n}: {inputs.get(n, '')}" for n in signature._input_fields if n in inputs)
        parts.append(suffix)
        return "\n\n".join(parts).strip()

    def format_assistant_message_content(
        self, signature: Any, outputs: Mapping[str, Any], missing_field_message: str | None = None
    ) -> str:
        parts = [
            f"{n}: {outputs.get(n, missing_field_message)}"
            for n in signature._output_fields
            if n in outputs
        ]
        return "\n\n".join(parts).strip()

    # ------------------------------------------------------------------ step two
    def extractor_signature(self, signature: Any) -> Any:
        """``text -> <the original output fields>`` with DSPy's extraction instructions."""
        from dspex.signatures import InputField, make_signature

        fields: dict[str, Any] = {"text": (str, InputField())}
        fields.update({n: (f.annotation, f) for n, f in signature._output_fields.items()})
        names = ", ".join(f"`{n}`" for n in signature._output_fields)
        instructions = (
            "The input is a text that should contain all the necessary information to produce "
            f"the fields {names}.             Your job is to extract the fields from the text "
            "verbatim. Extract precisely the appropriate value (content) for each field."
        )
        return make_signature(fields, instructions)

    def _extract(self, signature: Any, text: Any, raw: str) -> Flow:
        inner = ChatAdapter().flow({}, self.extractor_signature(signature), [], {"text": text})
        try:
            request = next(inner)
            while True:
                outputs = yield request._replace(lm=self.extraction_model)
                request = inner.send(outputs)
        except StopIteration as done:
            values: list[dict[str, Any]] = done.value
            return values[0]
        except AdapterParseError as exc:
            raise AdapterParseError(
                f"TwoStepAdapter: Failed to parse response from the original completion: {exc}",
                adapter="TwoStepAdapter",
                raw=raw,
                parsed={},
                missing=list(signature._output_fields),
            ) from exc

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        """Extract the fields from ``completion`` with one call to the extraction model."""
        return drive_sync(self._extract(signature, completion, completion), self.extraction_model)

    # ------------------------------------------------------------------ the call
    def flow(
        self,
        lm_kwargs: dict[str, Any],
        signature: Any,
        demos: Sequence[Demo],
        inputs: Mapping[str, Any],
        lm: Any = None,
    ) -> Generator[LMRequest, list[Any], list[dict[str, Any]]]:
        options = dict(lm_kwargs)
        rendered = plan_native_features(self, lm, options, signature, inputs)
        outputs = yield LMRequest(self.format(rendered, demos, inputs), options)
        tool_output = tool_fields(signature)[1]
        values = []
        for output in outputs:
            text, logprobs, tool_calls = output, None, None
            if isinstance(output, dict):
                text = output.get("text")
                logprobs = output.get("logprobs")
                tool_calls = output.get("tool_calls")
            value = yield from self._extract(signature, text, str(output))
            if tool_calls and tool_output:
                from dspex.adapters.types.tool import ToolCalls

                calls = [provider_tool_call(call) for call in tool_calls]
                value[tool_output] = ToolCalls.from_dict_list(calls)
            if logprobs is not None:
                value["logprobs"] = logprobs
            values.append(value)
        return values
