"""Native ``ProgramOfThought``: the LM writes Python, the sandbox runs it, the LM answers.

Generated code runs only in an isolated :class:`~dspex.sandbox.PythonSandbox` (bubblewrap,
rlimits; one fresh sandbox per call, shut down after it) or in an interpreter the caller
passes positionally (``pot(interpreter, question=...)``, the caller shuts it down) or builds
with ``interpreter_factory``. The three signatures (generate, regenerate, answer), their
instructions, the code parsing and the retry loop (``max_iters`` hops, the error text fed
back to ``code_regenerate``) are DSPy 3.4.1's, so the prompts are DSPy's for the same
interpreter output. The episode is one step generator driven sync or async (sandbox calls run
in a worker thread on the async path).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from dspex.errors import SandboxCodeError
from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.lm_feedback import format_error_for_lm
from dspex.modules.steps import CallModule, Steps, drive_async, drive_sync
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.signatures import InputField, OutputField, ensure_signature, make_signature

__all__ = ["ProgramOfThought"]

logger = logging.getLogger(__name__)

_CODE_DESC = "python code that answers the question"


def _default_factory() -> Any:
    from dspex.sandbox import PythonSandbox

    return PythonSandbox()


def _is_code_error(exc: BaseException) -> bool:
    """The code itself failed (retry with the error), as opposed to the sandbox failing."""
    return (
        isinstance(exc, SandboxCodeError | SyntaxError)
        or type(exc).__name__ == "CodeExecutionError"
    )


@dataclass(frozen=True, slots=True)
class _Execute:
    """Step: ``pot._execute_code(code, interpreter)`` (in a worker thread on the async path)."""

    pot: ProgramOfThought
    interpreter: Any
    code: str

    def run(self) -> Any:
        return self.pot._execute_code(self.code, self.interpreter)

    async def arun(self) -> Any:
        return await asyncio.to_thread(self.pot._execute_code, self.code, self.interpreter)


class ProgramOfThought(Module):
    """Solve a task by generating and running Python (see the module docstring)."""

    _dspex_kind: ClassVar[str] = "program_of_thought"
    implementation: str = "native"

    def __init__(
        self,
        signature: Any,
        max_iters: int = 3,
        interpreter_factory: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__()
        warnings.warn(
            "ProgramOfThought is deprecated and will be removed in 3.5. RLM is the preferred "
            "replacement.",
            DeprecationWarning,
            stacklevel=2,
        )
        if interpreter_factory is not None and not callable(interpreter_factory):
            raise TypeError(
                "interpreter_factory must be a zero-argument callable that creates an "
                f"interpreter, not {type(interpreter_factory).__name__}."
            )
        self.signature = signature = ensure_signature(signature)
        self.max_iters = max_iters
        self.input_fields = signature.input_fields
        self.output_fields = signature.output_fields
        self.code_generate = self._module("generate")
        self.code_regenerate = self._module("regenerate")
        self.generate_output = self._module("answer")
        self._interpreter_factory = interpreter_factory or _default_factory

    # ------------------------------------------------------------------ DSPy's signatures
    def _generate_signature(self, mode: str) -> Any:
        fields: dict[str, Any] = dict(self.input_fields)
        if mode == "generate":
            fields["generated_code"] = OutputField(desc=_CODE_DESC)
        elif mode == "regenerate":
            fields["previous_code"] = InputField(
                desc="previously-generated python code that errored"
            )
            fields["error"] = InputField(desc="error message from previously-generated python code")
            fields["generated_code"] = OutputField(desc=_CODE_DESC)
        else:
            fields["final_generated_code"] = InputField(desc=_CODE_DESC)
            fields["code_output"] = InputField(desc="output of previously-generated python code")
            fields.update(self.signature.output_fields)
        return make_signature(fields)

    def _generate_instruction(self, mode: str) -> str:
        signature = self._generate_signature(mode)
        mode_inputs = ", ".join(f"`{name}`" for name in signature.input_fields)
        mode_outputs = ", ".join(f"`{name}`" for name in signature.output_fields)
        final_outputs = ", ".join(f"`{name}`" for name in self.output_fields)
        if mode == "generate":
            lines = [
                f"You will be given {mode_inputs} and you will respond with {mode_outputs}.",
                "Generating executable Python code that programmatically computes the correct "
                f"{mode_outputs}.",
                "After you're done with the computation and think you have the final output, "
                "make sure to submit your output by calling the preloaded function `SUBMIT()`.",
                'You must structure your output in a dict, like {"field_a": value_a, ...}, with '
                f"the correct value mapping for the field(s): {final_outputs}.",
            ]
        elif mode == "regenerate":
            lines = [
                f"You are given {mode_inputs} due to an error in previous code.",
                "Your task is to correct the error and provide the new `generated_code`.",
            ]
        else:
            lines = [f"Given the final code {mode_inputs}, provide the final {mode_outputs}."]
        return "\n".join(lines)

    def _module(self, mode: str) -> ChainOfThought:
        fields = self._generate_signature(mode).fields
        return ChainOfThought(make_signature(fields, self._generate_instruction(mode)))

    # ------------------------------------------------------------------ code handling
    def _parse_code(self, code_data: Any) -> tuple[str, str | None]:
        code = code_data.get("generated_code", "").split("---", 1)[0].split("\n\n\n", 1)[0]
        match = re.search(r"```python[ \n](.*?)[ \n]```?", code, re.DOTALL)
        block = match.group(1) if match else code
        if not block:
            return code, "Error: Empty code after parsing."
        if "\n" not in block and block.count("=") > 1:
            return code, "Error: Code format is not correct."
        last = re.match(r"^(\w+)\s*=", block.split("\n")[-1].strip())
        if last:
            block += "\n" + last.group(1)
        return block, None

    def _execute_code(self, code: str, interpreter: Any) -> tuple[str | None, str | None]:
        """Run ``code``: ``(json output, None)``, or ``(None, error text)`` when the code
        itself failed; a failing sandbox (timeout, memory...) raises."""
        if not code:
            return None, "Error: Empty code before execution."
        try:
            result = interpreter.execute(code)
        except Exception as exc:
            if not _is_code_error(exc):
                raise
            return None, format_error_for_lm(exc)
        if type(result).__name__ == "FinalOutput" and hasattr(result, "output"):
            result = result.output
        return json.dumps(result), None

    # ------------------------------------------------------------------ the episode
    def forward(self, interpreter: Any = None, /, **kwargs: Any) -> Prediction:
        result: Prediction = drive_sync(self._episode(interpreter, kwargs))
        return result

    async def aforward(self, interpreter: Any = None, /, **kwargs: Any) -> Prediction:
        result: Prediction = await drive_async(self._episode(interpreter, kwargs))
        return result

    def _episode(self, interpreter: Any, kwargs: dict[str, Any]) -> Steps[Prediction]:
        if "interpreter" in kwargs and "interpreter" not in self.input_fields:
            raise TypeError(
                "To use a caller-owned interpreter, pass it as the first positional argument "
                "when calling the module."
            )
        owned = interpreter is None
        if owned:
            interpreter = self._interpreter_factory()
        elif not callable(getattr(interpreter, "execute", None)):
            raise TypeError(
                f"interpreter must have an execute(code) method, not {type(interpreter).__name__}."
            )
        try:
            inputs = {name: kwargs[name] for name in self.input_fields}
            code_data = yield CallModule(self.code_generate, dict(inputs))
            output: str | None = None
            code, error = self._parse_code(code_data)
            if not error:
                output, error = yield _Execute(self, interpreter, code)
            hop = 1
            while error is not None:
                logger.error(f"Error in code execution: {error}")
                if hop == self.max_iters:
                    raise RuntimeError(f"Max hops reached. Failed to run ProgramOfThought: {error}")
                inputs.update({"previous_code": code, "error": error})
                code_data = yield CallModule(self.code_regenerate, dict(inputs))
                code, error = self._parse_code(code_data)
                if not error:
                    output, error = yield _Execute(self, interpreter, code)
                hop += 1
            inputs.update({"final_generated_code": code, "code_output": output})
            answer: Prediction = yield CallModule(self.generate_output, dict(inputs))
            return answer
        finally:
            if owned:
                interpreter.shutdown()
