"""``Audio``: an audio input, sent as an ``input_audio`` content part (as ``dspy.Audio``).

Built from in-memory values only (data URI, bytes with ``audio_format=``, a numpy-like array,
a ``{"data", "audio_format"}`` dict, another ``Audio``); ``from_path``/``from_url`` read
files or the network explicitly.
"""

from __future__ import annotations

import base64
import importlib
import io
import mimetypes
import os
import warnings
from typing import Any
from urllib.parse import urlparse

import pydantic

from dspex.adapters.types import _fetch as requests
from dspex.adapters.types.base_type import Type
from dspex.errors import CustomTypeError, CustomTypeUsageError

__all__ = ["Audio", "encode_audio"]


def _normalize_audio_format(audio_format: str) -> str:
    return audio_format.removeprefix("x-")


def _soundfile() -> Any:
    try:  # optional: only needed for array inputs
        return importlib.import_module("soundfile")
    except ImportError:
        return None


class Audio(Type):
    """Audio as base64 ``data`` plus its ``audio_format`` (``wav``, ``mpeg``...)."""

    data: str
    audio_format: str

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    def __init__(self, *args: Any, **data: Any) -> None:
        if len(args) > 1:
            raise CustomTypeUsageError(
                f"Audio expected at most 1 positional argument, received {len(args)}"
            )
        if args:
            if "data" in data:
                raise CustomTypeUsageError(
                    "Audio received data as both a positional and keyword argument"
                )
            value = args[0]
            sampling_rate = data.pop("sampling_rate", None)
            audio_format = data.pop("audio_format", None)
            if audio_format is not None and _carries_own_format(value):
                raise CustomTypeUsageError(
                    "Audio received audio_format alongside an input that already carries its "
                    "format; provide only one"
                )
            if sampling_rate is not None and not hasattr(value, "shape"):
                raise CustomTypeUsageError(
                    "Audio received sampling_rate for a non-array input; it only applies to array data"
                )
            normalized = encode_audio(
                value, sampling_rate=sampling_rate or 16000, format=audio_format or "wav"
            )
            normalized.update(data)
            data = normalized
        pydantic.BaseModel.__init__(self, **data)

    def format(self) -> list[dict[str, Any]]:
        return [
            {"type": "input_audio", "input_audio": {"data": self.data, "format": self.audio_format}}
        ]

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, values: Any) -> Any:
        if isinstance(values, cls):
            return {"data": values.data, "audio_format": values.audio_format}
        return encode_audio(values)

    @classmethod
    def from_url(cls, url: str, verify: bool = True, timeout: float | None = 30.0) -> Audio:
        """Download HTTP(S) audio now (no SSRF filtering: validate untrusted hosts yourself)."""
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CustomTypeError(f"Audio.from_url requires an HTTP(S) URL, received: {url}")
        response = requests.get(url, verify=verify, timeout=timeout)
        response.raise_for_status()
        mime_type = response.headers.get("Content-Type", "audio/wav")
        if not mime_type.startswith("audio/"):
            raise CustomTypeError(f"Unsupported MIME type for audio: {mime_type}")
        encoded = base64.b64encode(response.content).decode("utf-8")
        return cls(data=encoded, audio_format=_normalize_audio_format(mime_type.split("/")[1]))

    @classmethod
    def from_path(cls, file_path: str) -> Audio:
        """Read a local audio file."""
        if not os.path.isfile(file_path):
            raise CustomTypeError(f"File not found: {file_path}")
        mime_type, _ = mimetypes.guess_type(file_path)
        if not mime_type or not mime_type.startswith("audio/"):
            raise CustomTypeError(f"Unsupported MIME type for audio: {mime_type}")
        with open(file_path, "rb") as handle:
            payload = handle.read()
        encoded = base64.b64encode(payload).decode("utf-8")
        return cls(data=encoded, audio_format=_normalize_audio_format(mime_type.split("/")[1]))

    @classmethod
    def from_file(cls, file_path: str) -> Audio:
        """Deprecated alias of :meth:`from_path`."""
        warnings.warn(
            "Audio.from_file is deprecated and will be removed in 3.4; use Audio.from_path instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls.from_path(file_path)

    @classmethod
    def from_array(cls, array: Any, sampling_rate: int, format: str = "wav") -> Audio:
        """Encode a numpy-like array (needs the ``soundfile`` package)."""
        soundfile = _soundfile()
        if soundfile is None:
            raise ImportError("soundfile is required to process audio arrays.")
        buffer = io.BytesIO()
        soundfile.write(buffer, array, sampling_rate, format=format.upper(), subtype="PCM_16")
        return cls(data=base64.b64encode(buffer.getvalue()).decode("utf-8"), audio_format=format)

    def __str__(self) -> str:
        return str(self.serialize_model())

    def __repr__(self) -> str:
        return (
            f"Audio(data=<AUDIO_BASE_64_ENCODED({len(self.data)})>, "
            f"audio_format='{self.audio_format}')"
        )


def _carries_own_format(value: Any) -> bool:
    if isinstance(value, Audio):
        return True
    if isinstance(value, dict) and "audio_format" in value:
        return True
    return isinstance(value, str) and value.startswith("data:audio/")


def encode_audio(audio: Any, sampling_rate: int = 16000, format: str = "wav") -> dict[str, Any]:
    """``{"data", "audio_format"}`` for an in-memory audio value."""
    if isinstance(audio, dict) and "data" in audio and "audio_format" in audio:
        return audio
    if isinstance(audio, Audio):
        return {"data": audio.data, "audio_format": audio.audio_format}
    if isinstance(audio, str) and audio.startswith("data:audio/"):
        header, separator, b64data = audio.partition(",")
        mime = header.removeprefix("data:").split(";", 1)[0]
        _, has_format, audio_format = mime.partition("/")
        if not separator or not has_format or not audio_format:
            raise CustomTypeError("Malformed audio data URI")
        return {"data": b64data, "audio_format": _normalize_audio_format(audio_format)}
    if isinstance(audio, str):
        raise CustomTypeError(
            "String audio inputs must be data URIs. "
            "Load local files with Audio.from_path() and remote resources with Audio.from_url()."
        )
    if _soundfile() is not None and hasattr(audio, "shape"):
        array = Audio.from_array(audio, sampling_rate=sampling_rate, format=format)
        return {"data": array.data, "audio_format": array.audio_format}
    if isinstance(audio, bytes):
        return {"data": base64.b64encode(audio).decode("utf-8"), "audio_format": format}
    raise CustomTypeError(f"Unsupported type for encode_audio: {type(audio)}")
