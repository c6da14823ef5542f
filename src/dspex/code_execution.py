"""Which code-running DSPy modules the user opted in to: the ``allow_code_execution`` setting.

The names live here, below both the settings and the bridge, so that validating the setting
never imports the bridge; ``dspex.bridge.allowlist`` enforces them at the worker boundary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dspex.errors import ConfigurationError

__all__ = ["CODE_RUNNING", "parse_code_opt_in"]

CODE_RUNNING: Mapping[str, str] = {
    "dspy.predict.program_of_thought:ProgramOfThought": "ProgramOfThought",
    "dspy.predict.code_act:CodeAct": "CodeAct",
    "dspy.predict.rlm:RLM": "RLM",
    "dspy.predict.flex.flex:Flex": "Flex",
}
"""DSPy modules that execute LM-generated code (by defining path -> opt-in name)."""


def parse_code_opt_in(value: Any) -> tuple[str, ...]:
    """The ``allow_code_execution`` setting as names: ``True`` -> ``("*",)`` (every module)."""
    if value is True:
        return ("*",)
    if value is False or value is None:
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    names = tuple(value)
    known = {*CODE_RUNNING.values(), "*"}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigurationError(
            f"allow_code_execution names unknown module(s) {unknown}; "
            f"known: {sorted(CODE_RUNNING.values())} (or True for all)",
            field="allow_code_execution",
        )
    return names
