"""``Reasoning``: the LM's reasoning as a str-like value (as ``dspy.Reasoning``).

Adapters treat it as a string. With a reasoning-capable LM it switches to the provider's
native reasoning (``reasoning_effort``) and is read back from ``reasoning_content``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pydantic

from dspex.adapters.types.base_type import Type
from dspex.errors import CustomTypeError

__all__ = ["Reasoning"]


class Reasoning(Type):
    # The docstring is wire text: pydantic renders it as the schema's description, and
    # JSONAdapter's response_format for a Reasoning output field (ReActV2's next_thought)
    # carries DSPy 3.4.1's, so it must stay this text.
    """Reasoning type in DSPy.

    This type is useful when you want the DSPy output to include the reasoning of the LM. We build this type so that
    DSPy can support the reasoning model and non-reasoning model with the same code.

    This is a str-like type, you can convert a string directly to a Reasoning object, and from DSPy adapters'
    perspective, `Reasoning` is treated as a string.
    """

    content: str

    def format(self) -> str:
        return f"{self.content}"

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, str):
            return {"content": data}
        if isinstance(data, dict):
            if "content" not in data:
                raise CustomTypeError("`content` field is required for `dspy.Reasoning`")
            if not isinstance(data["content"], str):
                raise CustomTypeError(
                    f"`content` field must be a string, but received type: {type(data['content'])}"
                )
            return {"content": data["content"]}
        raise CustomTypeError(f"Received invalid value for `dspy.Reasoning`: {data}")

    @classmethod
    def adapt_to_native_lm_feature(
        cls, signature: Any, field_name: str, lm: Any, lm_kwargs: dict[str, Any]
    ) -> Any:
        lm_defaults = getattr(lm, "kwargs", None) or {}
        if "reasoning_effort" in lm_kwargs:
            effort = lm_kwargs["reasoning_effort"]
        elif "reasoning_effort" in lm_defaults:
            effort = lm_defaults["reasoning_effort"]
        else:
            effort = "low"
        from dspex.adapters.capabilities import capabilities

        if effort is None or not capabilities(lm).reasoning:
            return signature
        model = str(getattr(lm, "model", ""))
        if "gpt-5" in model and getattr(lm, "model_type", "chat") == "chat":
            return signature  # chat completions drop GPT-5 reasoning content
        lm_kwargs["reasoning_effort"] = effort
        return signature.delete(field_name)

    @classmethod
    def parse_lm_response(cls, response: str | dict[str, Any]) -> Reasoning | None:
        if isinstance(response, dict) and "reasoning_content" in response:
            return Reasoning(content=response["reasoning_content"])
        return None

    @classmethod
    def parse_stream_chunk(cls, chunk: Any) -> Any:
        try:
            choices = getattr(chunk, "choices", None)
            if choices:
                return getattr(choices[0].delta, "reasoning_content", None)
        except Exception:
            return None
        return None

    @classmethod
    def is_streamable(cls) -> bool:
        return True

    def __repr__(self) -> str:
        return f"{self.content!r}"

    def __str__(self) -> str:
        return self.content

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Reasoning):
            return self.content == other.content
        if isinstance(other, str):
            return self.content == other
        return False

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.content)

    def __getitem__(self, key: Any) -> str:
        return self.content[key]

    def __contains__(self, item: str) -> bool:
        return item in self.content

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        return iter(self.content)

    def __add__(self, other: Any) -> Any:
        if isinstance(other, Reasoning):
            return Reasoning(content=self.content + other.content)
        if isinstance(other, str):
            return self.content + other
        return NotImplemented

    def __radd__(self, other: Any) -> Any:
        if isinstance(other, str):
            return other + self.content
        if isinstance(other, Reasoning):
            return Reasoning(content=other.content + self.content)
        return NotImplemented

    def __getattr__(self, name: str) -> Any:
        if hasattr(str, name):  # str-like: strip(), lower(), split()...
            return getattr(self.content, name)
        raise AttributeError(
            f"`{type(self).__name__}` object has no attribute '{name}'. "
            "If you are using `dspy.ChainOfThought`, note that the 'reasoning' field in "
            "ChainOfThought is now a `dspy.Reasoning` object (not a plain string). "
            "You can convert it to a string with str(reasoning) or access the content with "
            "reasoning.content."
        )
