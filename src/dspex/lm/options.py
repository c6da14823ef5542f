"""An LM's default request options and DSPy's model-family rules for them, and the mapping
of a provider SDK's exceptions (LiteLLM, OpenAI) onto DSPex's typed LM errors."""

from __future__ import annotations

import re
from typing import Any

from dspex.errors import (
    ContextWindowExceeded,
    LMAuthError,
    LMBadRequestError,
    LMConfigurationError,
    LMError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
    LMUnexpectedError,
    LMUnsupportedModelError,
)

__all__ = ["initial_options", "is_openai_reasoning_model", "wrap_provider_exception"]

_REASONING = re.compile(
    r"^(?:o[1345](?:-(?:mini|nano|pro))?(?:-\d{4}-\d{2}-\d{2})?|gpt-5(?:\.\d+)*(?!-chat)(?:-.*)?)$"
)


def is_openai_reasoning_model(model: str) -> bool:
    """o1/o3/o4/o5 and every gpt-5 except the ``-chat`` variants, as DSPy 3.4.1 decides."""
    family = model.rsplit("/", 1)[-1].lower()
    return _REASONING.match(family) is not None


def _provider(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


def initial_options(
    model: str, temperature: float | None, max_tokens: int | None, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """An LM's default request options.

    OpenAI reasoning models take ``temperature`` 1.0 (or None) and ``max_tokens`` >= 16000 (or
    None), sent as ``max_completion_tokens`` (both kept, even None, as DSPy keeps them);
    other models keep only what was given. A ``rollout_id`` of None is dropped.
    """
    options = dict(kwargs)
    if is_openai_reasoning_model(model):
        if (temperature and temperature != 1.0) or (max_tokens and max_tokens < 16000):
            raise LMConfigurationError(
                "OpenAI's reasoning models require passing temperature=1.0 or None and "
                "max_tokens >= 16000 or None to `dspy.LM(...)`, e.g., "
                "dspy.LM('openai/gpt-5', temperature=1.0, max_tokens=16000)",
                model=model,
                provider=_provider(model),
            )
        completion_tokens = options.pop("max_completion_tokens", None)
        options = {
            "temperature": temperature,
            "max_completion_tokens": max_tokens if max_tokens is not None else completion_tokens,
            **options,
        }
    else:
        if temperature is not None:
            options["temperature"] = temperature
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
    if options.get("rollout_id", 0) is None:
        options.pop("rollout_id")
    return options


_BY_NAME: tuple[tuple[str, type[LMError]], ...] = (
    ("ContextWindowExceededError", ContextWindowExceeded),
    ("RateLimitError", LMRateLimitError),
    ("AuthenticationError", LMAuthError),
    ("PermissionDeniedError", LMAuthError),
    ("NotFoundError", LMUnsupportedModelError),
    ("Timeout", LMTimeoutError),
    ("APITimeoutError", LMTimeoutError),
    ("APIConnectionError", LMTransportError),
    ("BadRequestError", LMBadRequestError),
    ("UnprocessableEntityError", LMBadRequestError),
    ("InternalServerError", LMServerError),
    ("ServiceUnavailableError", LMServerError),
)


def _headers(error: BaseException) -> dict[str, str]:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or getattr(error, "headers", None) or {}
    try:
        return {str(k).lower(): str(v) for k, v in dict(headers).items()}
    except (TypeError, ValueError):
        return {}


def _status(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    if status is None:
        status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def wrap_provider_exception(error: BaseException, model: str) -> LMError:
    """The typed LM error for an exception raised by a provider SDK (matched by the class
    names of LiteLLM's and OpenAI's exceptions, so neither is imported); an LM error is
    returned as it is, anything unknown becomes :class:`~dspex.errors.LMUnexpectedError`."""
    if isinstance(error, LMError):
        return error
    names = {cls.__name__ for cls in type(error).__mro__}
    status = _status(error)
    kind: type[LMError] = LMUnexpectedError
    for name, cls in _BY_NAME:
        if name in names:
            kind = cls
            break
    else:
        if status is not None and status >= 500 and "APIError" in names:
            kind = LMServerError
    headers = _headers(error)
    retry_after: float | None = None
    try:
        retry_after = float(headers["retry-after"]) if "retry-after" in headers else None
    except ValueError:
        retry_after = None
    fields: dict[str, Any] = {
        "model": getattr(error, "model", None) or model,
        "provider": getattr(error, "llm_provider", None) or _provider(model),
        "status": status,
        "request_id": headers.get("x-request-id"),
        "retry_after": retry_after,
    }
    message = str(getattr(error, "message", None) or error)
    wrapped = kind(message, **fields)
    wrapped.__cause__ = error
    return wrapped
