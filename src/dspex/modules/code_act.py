"""Native ``CodeAct``: the LM writes Python step by step, the sandbox runs it, then the LM
extracts the outputs from the trajectory.

DSPy 3.4.1's ``CodeAct`` over DSPEx's pieces: it is a :class:`~dspex.modules.react.ReAct`
(trajectory formatting and truncation, the extractor call) and a
:class:`~dspex.modules.program_of_thought.ProgramOfThought` (code parsing and execution, the
error text fed back). The prompts are DSPy's at every step: the same instructions and tool
list, the ``trajectory``/``generated_code``/``finished`` signature, the trajectory keys
(``generated_code_<i>``, ``code_output_<i>``, ``observation_<i>``) and the extract signature.

Tools are plain functions whose *source* is run in the interpreter before the first step
(as DSPy does), so code calls them inside the sandbox, never on the host. The interpreter is
the caller's (first positional argument; the caller shuts it down) or a fresh one per call
from ``interpreter_factory``, else ``dspex.configure(interpreter_factory=...)``, else
:class:`~dspex.primitives.python_interpreter.PythonInterpreter` (the bubblewrap sandbox),
shut down after the call. The episode is one step generator driven sync or async; the async
path runs interpreter calls in a worker thread (DSPy's ``CodeAct`` has no working async path).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from dspex.adapters.types.tool import Tool
from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.predict import Predict
from dspex.modules.program_of_thought import ProgramOfThought, _Execute
from dspex.modules.react import ReAct
from dspex.modules.steps import CallModule, Steps, drive_async, drive_sync
from dspex.primitives.code_interpreter import (
    create_interpreter,
    validate_interpreter,
    validate_interpreter_factory,
)
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.primitives.python_interpreter import PythonInterpreter
from dspex.signatures import InputField, OutputField, ensure_signature, make_signature

__all__ = ["CodeAct"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Define:
    """Step: run a tool's source in the interpreter (a worker thread on the async path)."""

    interpreter: Any
    source: str

    def run(self) -> Any:
        return self.interpreter.execute(self.source)

    async def arun(self) -> Any:
        return await asyncio.to_thread(self.interpreter.execute, self.source)


def _instructions(signature: Any, tools: dict[str, Tool]) -> list[str]:
    inputs = ", ".join(f"`{k}`" for k in signature.input_fields)
    outputs = ", ".join(f"`{k}`" for k in signature.output_fields)
    lines = [f"{signature.instructions}\n"] if signature.instructions else []
    lines.append(
        f"You are an intelligent agent. For each episode, you will receive the fields {inputs} "
        "as input.\n"
        "Your goal is to generate executable Python code that collects any necessary "
        f"information for producing {outputs}.\n"
        "For each iteration, you will generate a code snippet that either solves the task or "
        "progresses towards the solution.\n"
        "Ensure any output you wish to extract from the code is printed to the console. The "
        "code should be enclosed in a fenced code block.\n"
        f"When all information for producing the outputs ({outputs}) are available to be "
        "extracted, mark `finished=True` besides the final Python code.\n"
        "You have access to the Python Standard Library and the following functions:"
    )
    lines += [f"({i + 1}) {tool}" for i, tool in enumerate(tools.values())]
    return lines


class CodeAct(ReAct, ProgramOfThought):
    """Solve a task by writing and running Python with tools (see the module docstring).

    ``tools``: plain functions (or :class:`~dspex.adapters.types.tool.Tool`s wrapping them)
    whose source can be read; callable objects are refused, as in DSPy.
    """

    _dspex_kind: ClassVar[str] = "code_act"
    implementation: str = "native"

    def __init__(
        self,
        signature: Any,
        tools: list[Callable[..., Any]],
        max_iters: int = 5,
        interpreter_factory: Callable[[], Any] | None = PythonInterpreter,
    ) -> None:
        Module.__init__(self)
        warnings.warn(
            "CodeAct is deprecated and will be removed in 3.5. RLM is the preferred replacement.",
            DeprecationWarning,
            stacklevel=2,
        )
        validate_interpreter_factory(interpreter_factory)
        self.signature = signature = ensure_signature(signature)
        self.max_iters = max_iters
        self.history: list[Any] = []
        converted = [t if isinstance(t, Tool) else Tool(t) for t in tools]
        if any(not inspect.isfunction(tool.func) for tool in converted):
            raise ValueError("CodeAct only accepts functions and not callable objects.")
        by_name: dict[str, Tool] = {str(tool.name): tool for tool in converted}
        codeact_signature = (
            make_signature({**signature.input_fields}, "\n".join(_instructions(signature, by_name)))
            .append("trajectory", InputField(), type_=str)
            .append(
                "generated_code",
                OutputField(
                    desc="Python code that when executed, produces output relevant to "
                    "answering the question"
                ),
                type_=str,
            )
            .append(
                "finished",
                OutputField(desc="a boolean flag to determine if the process is done"),
                type_=bool,
            )
        )
        extract_signature = make_signature(
            {**signature.input_fields, **signature.output_fields}, signature.instructions
        ).append("trajectory", InputField(), type_=str)
        self.tools = by_name
        self.codeact = Predict(codeact_signature)
        self.extractor = ChainOfThought(extract_signature)
        # PythonInterpreter (the default) means "unset": settings.interpreter_factory wins
        self._interpreter_factory = interpreter_factory or PythonInterpreter

    # ------------------------------------------------------------------ drivers
    def forward(self, interpreter: Any = None, /, **kwargs: Any) -> Prediction:
        result: Prediction = drive_sync(self._code_episode(interpreter, kwargs))
        return result

    async def aforward(self, interpreter: Any = None, /, **kwargs: Any) -> Prediction:
        result: Prediction = await drive_async(self._code_episode(interpreter, kwargs))
        return result

    # ------------------------------------------------------------------ the episode (no I/O)
    def _episode(self, *args: Any, **kwargs: Any) -> Steps[Any]:
        """CodeAct's episode (neither ReAct's nor ProgramOfThought's):
        ``_episode(interpreter, inputs)``."""
        return self._code_episode(*args, **kwargs)

    def _code_episode(self, interpreter: Any, kwargs: dict[str, Any]) -> Steps[Prediction]:
        if "interpreter" in kwargs and "interpreter" not in self.signature.input_fields:
            raise TypeError(
                "To use a caller-owned interpreter, pass it as the first positional argument "
                "when calling the module."
            )
        owned = interpreter is None
        if owned:
            interpreter = create_interpreter(self._interpreter_factory)
        else:
            validate_interpreter(interpreter)
        try:
            for tool in self.tools.values():
                yield _Define(interpreter, inspect.getsource(tool.func))
            trajectory: dict[str, Any] = {}
            max_iters = kwargs.pop("max_iters", self.max_iters)
            for idx in range(max_iters):
                code_data = yield CallModule(self.codeact, {"trajectory": trajectory, **kwargs})
                code, error = self._parse_code(code_data)
                if error:
                    trajectory[f"observation_{idx}"] = (
                        f"Failed to parse the generated code: {error}"
                    )
                    continue
                trajectory[f"generated_code_{idx}"] = code
                output, error = yield _Execute(self, interpreter, code)
                if not error:
                    trajectory[f"code_output_{idx}"] = output
                else:
                    trajectory[f"observation_{idx}"] = (
                        f"Failed to execute the generated code: {error}"
                    )
                if code_data.finished:
                    break
            extract = yield from self._truncating_call(self.extractor, trajectory, kwargs)
            return Prediction(trajectory=trajectory, **extract)
        finally:
            if owned:
                interpreter.shutdown()
