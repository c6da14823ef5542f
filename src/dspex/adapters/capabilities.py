"""What a model supports natively: tool calls, structured outputs, JSON mode, reasoning.

DSPy 3.4.1 asks litellm's model table; the adapters' decisions (send ``tools``? which
``response_format``?) depend on it, so the same table decides here. An LM object that
carries the answers itself (DSPy's ``BaseLM`` properties ``supports_function_calling``,
``supports_response_schema``, ``supported_params``, ``supports_reasoning``) is asked first;
otherwise the model name is looked up in the table below, which holds litellm's answers for
the common hosted model families. Unknown models (any ``openai/<local-name>`` served by an
OpenAI-compatible server, ``ollama_chat/...``) support none of them, as in DSPy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Capabilities", "capabilities"]


class Capabilities(NamedTuple):
    function_calling: bool
    response_schema: bool
    response_format: bool  # ``response_format`` is an accepted request parameter
    reasoning: bool


_NONE = Capabilities(False, False, False, False)
_FULL = Capabilities(True, True, True, False)
_FULL_REASONING = Capabilities(True, True, True, True)
_TOOLS_JSON = Capabilities(True, False, True, False)
_JSON_ONLY = Capabilities(False, False, True, False)

# (provider, model-name prefix) -> capabilities; the longest matching prefix wins
_TABLE: dict[tuple[str, str], Capabilities] = {
    ("openai", "gpt-4o"): _FULL,
    ("openai", "gpt-4.1"): _FULL,
    ("openai", "gpt-5"): _FULL_REASONING,
    ("openai", "o1"): _FULL_REASONING,
    ("openai", "o3"): _FULL_REASONING,
    ("openai", "o4"): _FULL_REASONING,
    ("openai", "gpt-4-turbo"): _TOOLS_JSON,
    ("openai", "gpt-4"): _TOOLS_JSON,
    ("openai", "gpt-3.5-turbo"): _TOOLS_JSON,
    ("anthropic", "claude-sonnet-4"): _FULL_REASONING,
    ("anthropic", "claude-opus-4"): _FULL_REASONING,
    ("gemini", "gemini-2.5"): _FULL_REASONING,
    ("gemini", "gemini-2.0-flash"): _JSON_ONLY,
}


def _from_table(model: str) -> Capabilities:
    provider, _, name = model.partition("/")
    if not name:  # a bare OpenAI model name, as litellm reads it
        provider, name = "openai", model
    best: Capabilities = _NONE
    best_len = -1
    for (p, prefix), caps in _TABLE.items():
        if p == provider and name.startswith(prefix) and len(prefix) > best_len:
            best, best_len = caps, len(prefix)
    return best


def capabilities(lm: Any) -> Capabilities:
    """The native features ``lm`` supports (all False for ``None``)."""
    if lm is None:
        return _NONE
    table = _from_table(str(getattr(lm, "model", "")))

    def ask(name: str, fallback: Any) -> Any:
        try:  # a property may delegate to an object that lacks it (AttributeError)
            return getattr(lm, name)
        except AttributeError:
            return fallback

    params = ask("supported_params", None)
    return Capabilities(
        bool(ask("supports_function_calling", table.function_calling)),
        bool(ask("supports_response_schema", table.response_schema)),
        table.response_format if params is None else "response_format" in params,
        bool(ask("supports_reasoning", table.reasoning)),
    )
