"""``Image``: an image input, sent as an ``image_url`` content part (as ``dspy.Image``).

The value is always a remote URL (http, https, gs) or a ``data:`` URI. Building one never
reads a file or the network: ``Image.from_path`` and ``Image.from_url`` do that explicitly.
Raw bytes and PIL images are encoded in memory (Pillow is needed for those).
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

__all__ = ["Image", "encode_image", "is_image", "is_url"]

_UNSET: Any = object()


def _pil() -> Any:
    try:  # optional (Pillow): only needed for bytes and PIL inputs
        return importlib.import_module("PIL.Image")
    except ImportError:
        return None


class Image(Type):
    url: str

    model_config = pydantic.ConfigDict(
        frozen=True, str_strip_whitespace=True, validate_assignment=True, extra="forbid"
    )

    def __init__(
        self, source: Any = None, /, *, download: Any = _UNSET, verify: Any = _UNSET, **data: Any
    ) -> None:
        """``Image(source)`` with a URL, data URI, bytes, PIL image or ``{"url": ...}``.

        ``download=``/``verify=`` are DSPy's deprecated shim (positional source only):
        ``Image(url, download=True)`` fetches ``url`` now; prefer :meth:`from_url`.
        """
        shim = download is not _UNSET or verify is not _UNSET
        if shim and source is None:
            # only a developer's direct call may download: validation data never can
            raise CustomTypeUsageError(
                "`download` and `verify` are only valid with a positional image source; "
                "use Image.from_url(url, verify=...) to download a remote image."
            )
        if shim:
            warnings.warn(
                "The `download` and `verify` arguments to Image() are deprecated and will be "
                "removed in 3.4. Use Image.from_url(url, verify=...) to download a remote image, "
                "or Image.from_path(path) for a local file.",
                DeprecationWarning,
                stacklevel=2,
            )
        if source is not None and "url" in data:
            raise CustomTypeUsageError(
                "Image received both `source` and `url`; provide only one image source"
            )
        if source is not None:
            legacy = isinstance(source, dict) and set(source) == {"url"}
            data["url"] = source["url"] if legacy else source
        url = data.get("url")
        if download is not _UNSET and download and isinstance(url, str) and _is_http_url(url):
            data["url"] = _encode_from_url(url, verify=True if verify is _UNSET else verify)
        elif "url" in data:
            data["url"] = encode_image(data["url"])
        pydantic.BaseModel.__init__(self, **data)

    def format(self) -> list[dict[str, Any]]:
        try:
            image_url = encode_image(self.url)
        except Exception as exc:
            raise CustomTypeError(f"Failed to format image for DSPy: {exc}") from exc
        return [{"type": "image_url", "image_url": {"url": image_url}}]

    @classmethod
    def from_url(cls, url: str, verify: bool = True, timeout: float | None = 30.0) -> Image:
        """Download an HTTP(S) image now and keep it as a data URI (no SSRF filtering)."""
        if not _is_http_url(url):
            raise CustomTypeError(f"Image.from_url requires an HTTP(S) URL, received: {url}")
        return cls(_encode_from_url(url, verify=verify, timeout=timeout))

    @classmethod
    def from_path(cls, file_path: str) -> Image:
        """Read a local image file into a data URI."""
        if not os.path.isfile(file_path):
            raise CustomTypeError(f"File not found: {file_path}")
        return cls(_encode_from_file(file_path))

    @classmethod
    def from_file(cls, file_path: str) -> Image:
        """Deprecated alias of :meth:`from_path`."""
        warnings.warn(
            "Image.from_file is deprecated and will be removed in 3.4; use Image.from_path instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls.from_path(file_path)

    @classmethod
    def from_PIL(cls, pil_image: Any) -> Image:
        """Deprecated: use ``Image(pil_image)``."""
        warnings.warn(
            "Image.from_PIL is deprecated and will be removed in 3.4; use Image(pil_image) instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls(pil_image)

    def __str__(self) -> str:
        return str(self.serialize_model())

    def __repr__(self) -> str:
        if "base64" in self.url:
            length = len(self.url.split("base64,")[1])
            image_type = self.url.split(";")[0].split("/")[-1]
            return f"Image(url=data:image/{image_type};base64,<IMAGE_BASE_64_ENCODED({length!s})>)"
        return f"Image(url='{self.url}')"


def is_url(string: str) -> bool:
    """Whether ``string`` is an http, https or gs URL with a host."""
    try:
        parsed = urlparse(string)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https", "gs") and bool(parsed.netloc)


def _is_http_url(string: str) -> bool:
    try:
        parsed = urlparse(string)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def encode_image(image: Any) -> str:
    """A data URI or remote URL for ``image`` (URL, data URI, bytes, PIL image, dict, Image)."""
    if isinstance(image, dict) and "url" in image:
        return encode_image(image["url"])
    if isinstance(image, str):
        if image.startswith("data:") or is_url(image):
            return image
        raise CustomTypeError(
            f"Unrecognized image string: {image}. Local files must be loaded with Image.from_path()."
        )
    pil = _pil()
    if pil is not None and isinstance(image, pil.Image):
        return _encode_pil(image)
    if isinstance(image, bytes):
        if pil is None:
            raise ImportError("Pillow is required to process image bytes.")
        try:
            opened = pil.open(io.BytesIO(image))
        except pil.UnidentifiedImageError as exc:
            raise CustomTypeError(f"Bytes could not be identified as an image: {exc}") from exc
        return _encode_pil(opened)
    if isinstance(image, Image):
        return image.url
    raise CustomTypeError(f"Unsupported image type: {type(image)}")


def _data_uri(mime_type: str, payload: bytes) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(payload).decode('utf-8')}"


def _encode_from_file(file_path: str) -> str:
    with open(file_path, "rb") as handle:
        payload = handle.read()
    mime_type, _ = mimetypes.guess_type(file_path)
    if mime_type is None:
        raise CustomTypeError(f"Could not determine MIME type for file: {file_path}")
    return _data_uri(mime_type, payload)


def _encode_from_url(url: str, verify: bool = True, timeout: float | None = 30.0) -> str:
    response = requests.get(url, verify=verify, timeout=timeout)
    response.raise_for_status()
    mime_type = response.headers.get("Content-Type", "")
    if not mime_type:
        mime_type, _ = mimetypes.guess_type(url)
        if mime_type is None:
            raise CustomTypeError(f"Could not determine MIME type for URL: {url}")
    return _data_uri(mime_type, response.content)


def _encode_pil(image: Any) -> str:
    buffer = io.BytesIO()
    file_format = image.format or "PNG"
    image.save(buffer, format=file_format)
    mime_type, _ = mimetypes.guess_type(f"file.{file_format.lower()}")
    if mime_type is None:
        raise CustomTypeError(f"Could not determine MIME type for image format: {file_format}")
    return _data_uri(mime_type, buffer.getvalue())


def is_image(obj: Any) -> bool:
    """Whether ``obj`` is a PIL image, a data URI or a remote URL."""
    pil = _pil()
    if pil is not None and isinstance(obj, pil.Image):
        return True
    return isinstance(obj, str) and (obj.startswith("data:") or is_url(obj))
