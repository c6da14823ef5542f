"""DSPy/litellm exceptions -> DSPex errors, as a wire payload that crosses the pool.

A worker never lets an exception escape a bridge call: :func:`error_payload` turns it into a
dict (DSPex class name, message, structured fields, the original type and traceback) and the
parent re-raises it with :func:`raise_payload`, so callers catch ``dspex.errors`` classes
whatever DSPy raised. Secrets (the API key) are scrubbed from messages and tracebacks.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from typing import Any, NoReturn

from dspex import errors

__all__ = ["error_payload", "raise_payload", "scrub"]

# DSPy 3.4.1's typed errors (dspy.utils.exceptions) by class name -> ours
_DSPY_MAP: dict[str, type[errors.DSPexError]] = {
    "LMAuthError": errors.LMAuthError,
    "LMBillingError": errors.LMAuthError,
    "LMRateLimitError": errors.LMRateLimitError,
    "ContextWindowExceededError": errors.ContextWindowExceeded,
    "LMInvalidRequestError": errors.LMBadRequestError,
    "LMUnsupportedModelError": errors.LMBadRequestError,
    "LMUnsupportedFeatureError": errors.LMBadRequestError,
    "LMTimeoutError": errors.LMTimeoutError,
    "LMServerError": errors.LMServerError,
    "LMTransportError": errors.LMTransportError,
    "LMNotConfiguredError": errors.ConfigurationError,
    "LMConfigurationError": errors.ConfigurationError,
    "LMProviderError": errors.LMError,
    "LMUnexpectedError": errors.LMError,
    "LMError": errors.LMError,
    "AdapterParseError": errors.AdapterParseError,
}
_SIMPLE = (str, int, float, bool, type(None))


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def _qualname(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def _target(exc: BaseException) -> type[errors.DSPexError]:
    if isinstance(exc, errors.DSPexError):
        return type(exc)
    for cls in type(exc).__mro__:
        if cls.__module__.startswith("dspy.") and cls.__name__ in _DSPY_MAP:
            return _DSPY_MAP[cls.__name__]
    text = str(exc)
    if "No LM is loaded" in text or "LM is not configured" in text:
        return errors.ConfigurationError
    return errors.RemoteError


def error_payload(exc: BaseException, secrets: Iterable[str | None] = ()) -> dict[str, Any]:
    """The wire form of ``exc`` as the DSPex error the parent should raise."""
    secrets = list(secrets)
    cls = _target(exc)
    message = scrub(str(exc) or type(exc).__name__, secrets)
    fields: dict[str, Any] = {}
    if isinstance(exc, errors.DSPexError):
        fields = {k: v for k, v in exc.fields.items() if isinstance(v, (*_SIMPLE, list, dict))}
        message = scrub(exc.message, secrets)
    else:
        for name in ("status", "provider", "model", "retry_after", "code"):
            value = getattr(exc, name, None)
            if isinstance(value, _SIMPLE) and value is not None:
                fields[name] = value
        if cls is errors.AdapterParseError:
            fields["adapter"] = getattr(exc, "adapter_name", None)
            raw = getattr(exc, "lm_response", None)
            fields["raw"] = raw if isinstance(raw, str) else None
            parsed = getattr(exc, "parsed_result", None)
            fields["parsed"] = parsed if isinstance(parsed, dict) else None
            message = scrub(f"{type(exc).__name__}: {exc}", secrets)
        elif cls is errors.RemoteError:
            message = f"{type(exc).__name__}: {message}"
        fields["remote_type"] = _qualname(exc)
    fields.setdefault("remote_type", _qualname(exc))
    fields["remote_traceback"] = scrub("".join(traceback.format_exception(exc)), secrets)
    return {"type": cls.__name__, "message": message, "fields": _jsonable(fields)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, _SIMPLE):
        return value
    return repr(value)


def raise_payload(payload: dict[str, Any]) -> NoReturn:
    """Raise the DSPex error a worker described with :func:`error_payload`."""
    name = payload.get("type")
    cls = getattr(errors, name, None) if name in errors.__all__ else None
    if not (isinstance(cls, type) and issubclass(cls, errors.DSPexError)):
        cls = errors.RemoteError
    raise cls(str(payload.get("message", "")), **dict(payload.get("fields") or {}))
