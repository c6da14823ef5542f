"""Model ids -> provider endpoints, and each provider's request/response shapes.

``openai/<model>`` and the OpenAI-compatible aliases share one wire format; ``anthropic/<model>``
speaks the Messages API. Nothing here does I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson

from dspex.errors import ConfigurationError
from dspex.lm.outputs import anthropic_outputs, anthropic_tools, openai_outputs, openai_tools

__all__ = [
    "PROVIDERS",
    "Endpoint",
    "ParsedResponse",
    "StreamDecoder",
    "redact_url",
    "resolve",
    "scrub",
]


@dataclass(frozen=True)
class Provider:
    name: str
    wire: str  # "openai" | "anthropic"
    default_base: str
    key_env: tuple[str, ...]
    base_env: tuple[str, ...]
    needs_key: bool = True


PROVIDERS: dict[str, Provider] = {
    "openai": Provider("openai", "openai", "https://api.openai.com/v1", ("OPENAI_API_KEY",), ("OPENAI_API_BASE", "OPENAI_BASE_URL")),
    "anthropic": Provider("anthropic", "anthropic", "https://api.anthropic.com/v1", ("ANTHROPIC_API_KEY",), ("ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL")),
    "ollama_chat": Provider("ollama_chat", "openai", "http://localhost:11434/v1", ("OLLAMA_API_KEY",), ("OLLAMA_API_BASE",), needs_key=False),
    "ollama": Provider("ollama", "openai", "http://localhost:11434/v1", ("OLLAMA_API_KEY",), ("OLLAMA_API_BASE",), needs_key=False),
    "hosted_vllm": Provider("hosted_vllm", "openai", "http://localhost:8000/v1", ("HOSTED_VLLM_API_KEY",), ("HOSTED_VLLM_API_BASE",), needs_key=False),
    "lm_studio": Provider("lm_studio", "openai", "http://localhost:1234/v1", ("LM_STUDIO_API_KEY",), ("LM_STUDIO_API_BASE",), needs_key=False),
    "openai_compatible": Provider("openai_compatible", "openai", "", ("OPENAI_API_KEY",), ("OPENAI_API_BASE",), needs_key=False),
    "litellm_proxy": Provider("litellm_proxy", "openai", "http://localhost:4000", ("LITELLM_PROXY_API_KEY",), ("LITELLM_PROXY_API_BASE",), needs_key=False),
}  # fmt: skip


@dataclass(frozen=True)
class Endpoint:
    provider: str
    wire: str
    model: str
    api_base: str
    api_key: str | None = field(repr=False)
    problem: str | None = None
    """Why no request can be sent here (an unknown provider), or ``None``: LiteLLM-style
    model strings are accepted when an LM is built and refused at its first request."""

    def __repr__(self) -> str:
        return (
            f"Endpoint(provider={self.provider!r}, model={self.model!r}, "
            f"api_base={self.display_base!r})"
        )

    @cached_property
    def display_base(self) -> str:
        """``api_base`` with any ``user:password@`` password masked (for reprs and errors)."""
        return redact_url(self.api_base)

    @cached_property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in an error, repr, log line or event."""
        found: list[str] = []
        if self.api_key:
            found.append(self.api_key)
        try:
            password = urlsplit(self.api_base).password
        except ValueError:
            password = None
        if password:
            found += [password, unquote(password)]
        return tuple(sorted({s for s in found if len(s) >= 4}, key=len, reverse=True))

    @property
    def url(self) -> str:
        path = "/messages" if self.wire == "anthropic" else "/chat/completions"
        return self.api_base.rstrip("/") + path

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.wire == "anthropic":
            headers["anthropic-version"] = "2023-06-01"
            if self.api_key:
                headers["x-api-key"] = self.api_key
        elif self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers


def resolve(model: str, api_base: str | None, api_key: str | None) -> Endpoint:
    """``"openai/gpt-4o-mini"`` -> where to send it and how (keys from args or env).

    A model string no provider here speaks (``"dummy"``, ``"azure/gpt-5-chat"``) still gives
    an :class:`Endpoint`, whose ``problem`` says so: as with DSPy, such an LM can be built,
    copied and saved, and fails at its first request. Not a model string at all (not a
    non-empty string, or ``"openai/"`` with no model after the provider) is refused now.
    """
    if not isinstance(model, str) or not model:
        raise ConfigurationError(f"model must be a non-empty string, got {model!r}")
    name, slash, model_name = model.partition("/")
    if slash and not model_name:
        raise ConfigurationError(f"model {model!r} has a provider prefix but no model id after it")
    provider = PROVIDERS.get(name) if slash else None
    if provider is None:
        problem = (
            f"unknown LM provider {name!r} in {model!r}; supported: {', '.join(PROVIDERS)} "
            "(any OpenAI-compatible server works as 'openai/<model>' with api_base=...)"
            if slash
            else f"model must look like 'provider/model' (e.g. 'openai/gpt-4o-mini'), got "
            f"{model!r}; providers: {', '.join(PROVIDERS)}"
        )
        return Endpoint(name if slash else "", "openai", model_name or model, api_base or "",
                        api_key, problem)  # fmt: skip
    base = api_base or next((os.environ[e] for e in provider.base_env if os.environ.get(e)), None)
    base = base or provider.default_base
    if not base:
        raise ConfigurationError(
            f"{name}/ models need api_base=... (the server's OpenAI-compatible /v1 URL)"
        )
    key = api_key or next((os.environ[e] for e in provider.key_env if os.environ.get(e)), None)
    return Endpoint(name, provider.wire, model_name, base, key)


@dataclass
class ParsedResponse:
    texts: list[Any]
    """One output per choice: its text, or a dict (see :mod:`dspex.lm.outputs`)."""
    usage: dict[str, int]


def build_body(
    endpoint: Endpoint, messages: list[dict[str, Any]], options: dict[str, Any]
) -> dict[str, Any]:
    options = {k: v for k, v in options.items() if v is not None}  # unset, as LiteLLM drops
    if endpoint.wire == "openai":
        messages, options = openai_tools(messages, options)
        return {"model": endpoint.model, "messages": messages, **options}
    system = "\n\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    rest = [m for m in messages if m.get("role") != "system"]
    rest, options = anthropic_tools(rest, options)
    body: dict[str, Any] = {"model": endpoint.model, "messages": rest}
    if system:
        body["system"] = system
    options.pop("n", None)  # the Messages API has one choice per request
    options.pop("response_format", None)
    if "stop" in options:
        stop = options.pop("stop")
        options["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    body["max_tokens"] = options.pop("max_tokens", None) or 4096
    body.update(options)
    return body


def parse_response(endpoint: Endpoint, data: Any, logprobs: bool = False) -> ParsedResponse:
    if endpoint.wire == "openai":
        texts = openai_outputs(data["choices"], logprobs)
        usage = data.get("usage") or {}
        return ParsedResponse(texts, {
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
            "total_tokens": int(usage.get("total_tokens") or 0),
        })  # fmt: skip
    outputs = anthropic_outputs(data.get("content", []))
    usage = data.get("usage") or {}
    prompt, completion = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    return ParsedResponse(
        outputs,
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    )


def error_message(data: Any, fallback: str) -> str:
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return fallback


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{name}:***@{host}"))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret (longest first) replaced by ``***``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class StreamDecoder:
    """Text deltas and token usage from a server-sent-events body (OpenAI or Anthropic shapes).

    :meth:`feed` takes raw body chunks and returns the text deltas they complete; ``done``
    turns true at OpenAI's ``[DONE]``; ``usage`` holds the counts the events reported
    (OpenAI's final ``usage`` chunk; Anthropic's ``message_start`` and ``message_delta``).
    """

    def __init__(self, wire: str) -> None:
        self.wire = wire
        self.done = False
        self._pending = b""
        self._prompt = 0
        self._completion = 0

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self._prompt,
            "completion_tokens": self._completion,
            "total_tokens": self._prompt + self._completion,
        }

    def feed(self, chunk: bytes, final: bool = False) -> list[str]:
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        if final:
            lines.append(self._pending)
            self._pending = b""
        texts = []
        for line in lines:
            if self.done:
                break
            text = self._line(line)
            if text:
                texts.append(text)
        return texts

    def _line(self, raw: bytes) -> str:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if not line.startswith("data:"):
            return ""
        payload = line[5:].strip()
        if payload == "[DONE]":
            self.done = True
            return ""
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return ""
        if not isinstance(event, dict):
            return ""
        return self._openai(event) if self.wire == "openai" else self._anthropic(event)

    def _openai(self, event: dict[str, Any]) -> str:
        usage = event.get("usage")
        if isinstance(usage, dict):
            self._prompt = int(usage.get("prompt_tokens") or 0)
            self._completion = int(usage.get("completion_tokens") or 0)
        return "".join(
            str((choice.get("delta") or {}).get("content") or "")
            for choice in event.get("choices") or []
            if choice.get("index", 0) == 0
        )

    def _anthropic(self, event: dict[str, Any]) -> str:
        kind = event.get("type")
        if kind == "content_block_delta":
            return str((event.get("delta") or {}).get("text") or "")
        usage = (event.get("message") or {}).get("usage") if kind == "message_start" else None
        if kind == "message_delta":
            usage = event.get("usage")
        if isinstance(usage, dict):
            self._prompt = int(usage.get("input_tokens") or self._prompt)
            self._completion = int(usage.get("output_tokens") or self._completion)
        return ""
