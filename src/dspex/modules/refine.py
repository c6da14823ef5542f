"""Native ``Refine``: ``BestOfN`` plus an LM feedback step between attempts.

After an attempt below ``threshold`` (and not the last), an ``OfferFeedback`` predictor reads
the program's source, its predictors' definitions, the attempt's trajectory (each predictor
call's inputs and outputs), the reward function's source and value, and returns advice per
predictor. The next attempt gives each predictor its advice as an extra ``hint_`` input. The
feedback signature, the JSON rendering of its inputs and the hint field are DSPy 3.4.1's, so
the feedback prompts match DSPy's byte for byte when the program is the same user class.

The trajectory is recorded by an adapter wrapper around the configured adapter (the same
place DSPy injects the hint), so it works for any user ``Module`` whose predictors are
native ``Predict``s.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from dspex import settings
from dspex.adapters.base import Adapter, LMRequest
from dspex.adapters.values import get_field_description_string
from dspex.modules.best_of_n import BestOfN
from dspex.modules.predict import Predict
from dspex.modules.steps import CallModule, Steps
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.signatures import InputField, OutputField, Signature

__all__ = ["OfferFeedback", "Refine", "inspect_modules", "recursive_mask"]

_HINT_DESC = "A hint to the module from an earlier run"


class OfferFeedback(Signature):
    """
    In the discussion, assign blame to each module that contributed to the final reward being below the threshold, if
    any. Then, prescribe concrete advice of how the module should act on its future input when we retry the process, if
    it were to receive the same or similar inputs. If a module is not to blame, the advice should be N/A.
    The module will not see its own history, so it needs to rely on entirely concrete and actionable advice from you
    to avoid the same mistake on the same or similar inputs.
    """

    program_code: str = InputField(desc="The code of the program that we are analyzing")
    modules_defn: str = InputField(
        desc="The definition of each module in the program, including its I/O"
    )
    program_inputs: str = InputField(desc="The inputs to the program that we are analyzing")
    program_trajectory: str = InputField(
        desc="The trajectory of the program's execution, showing each module's I/O"
    )
    program_outputs: str = InputField(desc="The outputs of the program that we are analyzing")
    reward_code: str = InputField(desc="The code of the reward function that we are analyzing")
    target_threshold: float = InputField(desc="The target threshold for the reward function")
    reward_value: float = InputField(desc="The reward value assigned to the program's outputs")
    module_names: list[str] = InputField(
        desc="The names of the modules in the program, for which we seek advice"
    )
    discussion: str = OutputField(
        desc="Discussing blame of where each module went wrong, if it did"
    )
    advice: dict[str, str] = OutputField(
        desc="For each module, describe very concretely, in this order: the specific scenarios "
        "in which it has made mistakes in the past and what each mistake was, followed by what "
        "it should do differently in that kind ofscenario in the future. If the module is not "
        "to blame, write N/A."
    )


def inspect_modules(program: Module) -> str:
    """Each predictor's name, input/output fields and instructions, as DSPy lists them."""
    separator = "-" * 80
    out = [separator]
    for name, predictor in program.named_predictors():
        signature = predictor.signature
        instructions = textwrap.dedent(signature.instructions)
        instructions = ("\n" + "\t" * 2).join(["", *instructions.splitlines()])
        inputs = get_field_description_string(signature.input_fields).splitlines()
        outputs = get_field_description_string(signature.output_fields).splitlines()
        out.append(f"Module {name}")
        out.append("\n\tInput Fields:")
        out.append(("\n" + "\t" * 2).join(["", *inputs]))
        out.append("\tOutput Fields:")
        out.append(("\n" + "\t" * 2).join(["", *outputs]))
        out.append(f"\tOriginal Instructions: {instructions}")
        out.append(separator)
    return "\n".join(o.strip("\n") for o in out)


def recursive_mask(o: Any) -> Any:
    """``o`` with anything orjson cannot dump replaced by ``<non-serializable: Type>``."""
    try:
        orjson.dumps(o)
        return o
    except TypeError:
        pass
    if isinstance(o, dict):
        return {k: recursive_mask(v) for k, v in o.items()}
    if isinstance(o, list):
        return [recursive_mask(v) for v in o]
    if isinstance(o, tuple):
        return tuple(recursive_mask(v) for v in o)
    return f"<non-serializable: {type(o).__name__}>"


@dataclass
class _Attempt:
    """What one attempt needs: the advice so far and the trajectory being recorded."""

    advice: Mapping[str, str] | None = None
    trace: list[tuple[str, dict[str, Any], dict[str, Any]]] = field(default_factory=list)


def _tracing_adapter(base: Adapter, names: dict[Any, str], attempt: _Attempt) -> Adapter:
    """``base`` plus: the hint for each predictor (once there is advice), and a record of each
    predictor call's inputs and first-choice outputs."""

    class _Tracing(type(base)):  # type: ignore[misc]
        def flow(
            self,
            lm_kwargs: dict[str, Any],
            signature: Any,
            demos: Sequence[Any],
            inputs: Mapping[str, Any],
            lm: Any = None,
        ) -> Generator[LMRequest, list[Any], list[dict[str, Any]]]:
            name = names.get(signature)
            inputs = dict(inputs)
            if attempt.advice:
                inputs["hint_"] = attempt.advice.get(name, "N/A")  # type: ignore[arg-type]
                signature = signature.append("hint_", InputField(desc=_HINT_DESC))
            completions = yield from base.flow(lm_kwargs, signature, demos, inputs, lm)
            if name is not None and completions:
                attempt.trace.append((name, inputs, dict(completions[0])))
            return completions

    wrapper: Adapter = _Tracing.__new__(_Tracing)
    wrapper.__dict__.update(getattr(base, "__dict__", {}))
    return wrapper


class Refine(BestOfN):
    """``BestOfN`` with LM-written advice between attempts (see the module docstring)."""

    _dspex_kind: ClassVar[str] = "refine"
    _label: ClassVar[str] = "Refine"

    def __init__(
        self,
        module: Module,
        N: int,
        reward_fn: Callable[[dict[str, Any], Prediction], float],
        threshold: float,
        fail_count: int | None = None,
    ) -> None:
        super().__init__(module, N, reward_fn, threshold, fail_count)
        self.module_code = inspect.getsource(type(module))
        try:
            self.reward_fn_code = inspect.getsource(reward_fn)
        except TypeError:
            self.reward_fn_code = inspect.getsource(type(reward_fn))

    def _new_state(self) -> Any:
        return _Attempt()

    def _attempt_step(self, mod: Module, kwargs: dict[str, Any], state: Any) -> CallModule:
        from dspex.adapters import ChatAdapter

        state.trace = []
        names = {p.signature: n for n, p in mod.named_predictors()}
        adapter = _tracing_adapter(settings.current().adapter or ChatAdapter(), names, state)
        return CallModule(mod, dict(kwargs), around=lambda: settings.context(adapter=adapter))

    def _after_attempt(
        self,
        idx: int,
        mod: Module,
        kwargs: dict[str, Any],
        pred: Any,
        reward: float,
        state: Any,
    ) -> Steps[None]:
        if idx == self.N - 1:
            return
        trajectory = [
            {"module_name": name, "inputs": inputs, "outputs": outputs}
            for name, inputs, outputs in state.trace
        ]
        feedback_inputs: dict[str, Any] = {
            "program_code": self.module_code,
            "modules_defn": inspect_modules(mod),
            "program_inputs": kwargs,
            "program_trajectory": trajectory,
            "program_outputs": dict(pred),
            "reward_code": self.reward_fn_code,
            "target_threshold": self.threshold,
            "reward_value": reward,
            "module_names": [name for name, _ in mod.named_predictors()],
        }
        rendered = {
            k: v
            if isinstance(v, str)
            else orjson.dumps(recursive_mask(v), option=orjson.OPT_INDENT_2).decode()
            for k, v in feedback_inputs.items()
        }
        feedback = yield CallModule(Predict(OfferFeedback), rendered)
        state.advice = feedback.advice

    def _failure_text(self, idx: int, rid: int) -> str:
        return f"Attempt failed with rollout id {rid}"
