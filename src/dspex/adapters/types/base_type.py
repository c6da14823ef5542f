"""``Type``: the base of custom signature types (``Image``, ``Tool``, ``Code``...), as ``dspy.Type``.

A custom type is a pydantic model with a ``format()`` hook. When a value is rendered into a
prompt, a type whose ``format()`` returns content parts (a list of dicts, as in OpenAI's
message ``content`` array) is serialized between two reserved markers; after the adapter has
built the messages, :func:`split_message_content_for_custom_types` cuts every user message at
those markers into text parts and the type's own parts. A type whose ``format()`` returns a
string is inlined as that string.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, get_args, get_origin

import pydantic

from dspex.adapters.types.markers import (
    CUSTOM_TYPE_END_IDENTIFIER,
    CUSTOM_TYPE_START_IDENTIFIER,
    split_message_content_for_custom_types,
)

if TYPE_CHECKING:
    from dspex.lm.base import BaseLM

__all__ = [
    "CUSTOM_TYPE_END_IDENTIFIER",
    "CUSTOM_TYPE_START_IDENTIFIER",
    "Type",
    "split_message_content_for_custom_types",
]


class Type(pydantic.BaseModel):
    """Base class of custom types usable as signature field annotations.

    Subclasses implement :meth:`format`, returning either a string (inlined into the prompt)
    or a list of content-part dicts (sent as separate parts of the user message)::

        class Photo(dspex.Type):
            url: str

            def format(self) -> list[dict[str, Any]]:
                return [{"type": "image_url", "image_url": {"url": self.url}}]
    """

    def format(self) -> list[dict[str, Any]] | str:
        raise NotImplementedError(f"{type(self).__name__} must implement format()")

    @classmethod
    def description(cls) -> str:
        """A sentence the adapters add to the field's description (empty by default)."""
        return ""

    @classmethod
    def extract_custom_type_from_annotation(cls, annotation: Any) -> list[type[Type]]:
        """Every subclass of ``cls`` inside ``annotation``, at any depth (``list[dict[str, T]]``)."""
        try:
            if isinstance(annotation, type) and issubclass(annotation, cls):
                return [annotation]
        except TypeError:  # parametrized generics are not classes on every Python version
            pass
        if get_origin(annotation) is None:
            return []
        found: list[type[Type]] = []
        for arg in get_args(annotation):
            found.extend(cls.extract_custom_type_from_annotation(arg))
        return found

    @pydantic.model_serializer()
    def serialize_model(self) -> Any:
        formatted = self.format()
        if isinstance(formatted, list):
            parts = json.dumps(formatted, ensure_ascii=False)
            return f"{CUSTOM_TYPE_START_IDENTIFIER}{parts}{CUSTOM_TYPE_END_IDENTIFIER}"
        return formatted

    @classmethod
    def adapt_to_native_lm_feature(
        cls, signature: Any, field_name: str, lm: BaseLM, lm_kwargs: dict[str, Any]
    ) -> Any:
        """Rewrite ``signature``/``lm_kwargs`` to use a native LM feature (none by default)."""
        return signature

    @classmethod
    def is_streamable(cls) -> bool:
        """Whether values of this type can be built from streamed chunks."""
        return False

    @classmethod
    def parse_stream_chunk(cls, chunk: Any) -> Type | None:
        """A value built from one streamed chunk, or ``None`` if the chunk is not for this type."""
        return None

    @classmethod
    def parse_lm_response(cls, response: str | dict[str, Any]) -> Type | None:
        """A value built from a whole LM response (``None``: the adapter parses the text)."""
        return None
