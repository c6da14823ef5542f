"""``Code`` / ``Code["java"]``: source code as a field value (as ``dspy.Code``).

Rendered as the bare code string; parsed from a reply by taking the first fenced block.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pydantic

from dspex.adapters.types.base_type import Type
from dspex.errors import CustomTypeError

__all__ = ["Code"]

_FENCED = re.compile(r"```(?:[^\n]*)\n(.*?)```", re.DOTALL)
_INLINE = re.compile(r"```(.*?)```", re.DOTALL)
_BY_LANGUAGE: dict[tuple[type, str], type] = {}


def _filter_code(code: str) -> str:
    """The body of the first markdown code block in ``code`` (``code`` itself if none)."""
    for pattern in (_FENCED, _INLINE):
        found = pattern.search(code)
        if found:
            return found.group(1).strip()
    return code


class Code(Type):
    # (no docstring: pydantic would render it into the JSON schema)
    code: str
    language: ClassVar[str] = "python"

    def format(self) -> str:
        return f"{self.code}"

    @pydantic.model_serializer()
    def serialize_model(self) -> Any:
        return self.format()  # inline text, no content-part markers

    @classmethod
    def description(cls) -> str:
        return (
            "Code represented in a string, specified in the `code` field. If this is an output "
            "field, the code field should follow the markdown code block format, e.g. \n"
            f"```{cls.language.lower()}\n{{code}}\n```\nProgramming language: {cls.language}"
        )

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, str):
            return {"code": _filter_code(data)}
        if isinstance(data, dict):
            if "code" not in data:
                raise CustomTypeError("`code` field is required for `dspy.Code`")
            if not isinstance(data["code"], str):
                raise CustomTypeError(
                    f"`code` field must be a string, but received type: {type(data['code'])}"
                )
            return {"code": _filter_code(data["code"])}
        raise CustomTypeError(f"Received invalid value for `dspy.Code`: {data}")

    def __class_getitem__(cls, language: Any) -> Any:
        """``Code["java"]``: a subclass whose ``language`` is ``"java"`` (one per language)."""
        key = (cls, str(language))
        made = _BY_LANGUAGE.get(key)
        if made is None:
            made = pydantic.create_model(f"{cls.__name__}_{language}", __base__=cls)
            made.language = str(language)
            _BY_LANGUAGE[key] = made
        return made
