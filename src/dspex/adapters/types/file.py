"""``File``: a document input, sent as a ``file`` content part (as ``dspy.File``).

Holds ``file_data`` (a data URI), a provider ``file_id`` and/or a ``filename``. Built from
in-memory values only; :meth:`File.from_path` reads a file explicitly.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from typing import Any

import pydantic

from dspex.adapters.types.base_type import Type
from dspex.errors import CustomTypeError, CustomTypeUsageError

__all__ = ["File", "encode_file_to_dict"]

_KEYS = ("file_data", "file_id", "filename")
_NEEDS_ONE = "Value of `dspy.File` must contain at least one of: file_data, file_id, or filename"


class File(Type):
    """A file for the LM: ``file_data`` (data URI), ``file_id`` and/or ``filename``."""

    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None

    model_config = pydantic.ConfigDict(
        frozen=True, str_strip_whitespace=True, validate_assignment=True, extra="forbid"
    )

    def __init__(self, *args: Any, **data: Any) -> None:
        if len(args) > 1:
            raise CustomTypeUsageError(
                f"File expected at most 1 positional argument, received {len(args)}"
            )
        if args:
            normalized = encode_file_to_dict(args[0])
            overlap = sorted(set(normalized) & set(data))
            if overlap:
                raise CustomTypeUsageError(
                    f"File received {', '.join(overlap)} from both the positional source and "
                    "keyword arguments"
                )
            normalized.update(data)
            data = normalized
        pydantic.BaseModel.__init__(self, **data)

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, values: Any) -> Any:
        if isinstance(values, cls):
            return {k: getattr(values, k) for k in _KEYS}
        if isinstance(values, dict):
            if any(k in values for k in _KEYS):
                return values
            raise CustomTypeError(_NEEDS_ONE)
        return encode_file_to_dict(values)

    def format(self) -> list[dict[str, Any]]:
        part = {k: getattr(self, k) for k in _KEYS if getattr(self, k)}
        return [{"type": "file", "file": part}]

    def __str__(self) -> str:
        return str(self.serialize_model())

    def __repr__(self) -> str:
        parts = []
        if self.file_data is not None:
            if self.file_data.startswith("data:"):
                mime_type = self.file_data.split(";")[0].split(":")[1]
                body = self.file_data
                length = len(body.split("base64,")[1]) if "base64," in body else len(body)
                parts.append(f"file_data=<DATA_URI({mime_type}, {length} chars)>")
            else:
                parts.append(f"file_data=<DATA({len(self.file_data)} chars)>")
        if self.file_id is not None:
            parts.append(f"file_id='{self.file_id}'")
        if self.filename is not None:
            parts.append(f"filename='{self.filename}'")
        return f"File({', '.join(parts)})"

    @classmethod
    def from_path(
        cls, file_path: str, filename: str | None = None, mime_type: str | None = None
    ) -> File:
        """Read a local file; ``filename`` defaults to its basename, the MIME type is guessed."""
        if not os.path.isfile(file_path):
            raise CustomTypeError(f"File not found: {file_path}")
        with open(file_path, "rb") as handle:
            payload = handle.read()
        if mime_type is None:
            mime_type = mimetypes.guess_type(file_path)[0] or "application/octet-stream"
        return cls.from_bytes(
            payload, filename=filename or os.path.basename(file_path), mime_type=mime_type
        )

    @classmethod
    def from_bytes(
        cls,
        file_bytes: bytes,
        filename: str | None = None,
        mime_type: str = "application/octet-stream",
    ) -> File:
        encoded = base64.b64encode(file_bytes).decode("utf-8")
        return cls(file_data=f"data:{mime_type};base64,{encoded}", filename=filename)

    @classmethod
    def from_file_id(cls, file_id: str, filename: str | None = None) -> File:
        """A reference to a file already uploaded to the provider."""
        return cls(file_id=file_id, filename=filename)


def encode_file_to_dict(file_input: Any) -> dict[str, Any]:
    """``file_data``/``file_id``/``filename`` keys from bytes, a data URI, a dict or a File."""
    if isinstance(file_input, File):
        return {k: getattr(file_input, k) for k in _KEYS if getattr(file_input, k) is not None}
    if isinstance(file_input, dict):
        if any(k in file_input for k in _KEYS):
            return file_input
        raise CustomTypeError(_NEEDS_ONE)
    if isinstance(file_input, str):
        if file_input.startswith("data:"):
            return {"file_data": file_input}
        raise CustomTypeError(
            f"String file inputs must be data URIs, received: {file_input}. "
            "Load local files with File.from_path()."
        )
    if isinstance(file_input, bytes):
        return {"file_data": File.from_bytes(file_input).file_data}
    raise CustomTypeError(f"Unsupported file input type: {type(file_input)}")
