"""``Flex``: a module whose implementation is optimizable code (DSPy 3.4.1's ``dspy.Flex``).

A Flex holds one source string, ``module_src``: a single ``dspy.Module`` subclass. It starts on
a baseline that delegates to one ``dspy.Predict`` over the signature (``dspy.RLM`` when tools
are given); GEPA rewrites it into decomposed predictors plus plain Python. The source never runs
in the host process: each forward runs it in a fresh interpreter (DSPEx's sandbox by default,
``interpreter_factory`` or ``settings.interpreter_factory`` otherwise) whose ``dspy`` is a facade
building the predictors natively on the host (:mod:`dspex.modules.flex.bridge`).

To its parent a Flex is one :class:`~dspex.primitives.module.Parameter` leaf: its state is
``{"module_src", "lm"}``, ``named_predictors()`` is empty (its update unit is the source),
``reset`` clears the LM and keeps the source, and ``set_lm``/``get_lm`` read and write one LM
applied to every call its code makes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dspex import settings
from dspex.errors import FlexInputError
from dspex.primitives.code_interpreter import validate_interpreter_factory
from dspex.primitives.module import TRUSTED_LM_STATE, Module, Parameter
from dspex.primitives.prediction import Prediction
from dspex.primitives.python_interpreter import PythonInterpreter
from dspex.signatures import ensure_signature

from .bridge import FlexBridge
from .context import FlexContext

__all__ = ["Flex"]


class Flex(Module, Parameter):
    """A module whose implementation is code GEPA can rewrite (see the module docstring).

    Args:
        signature: a signature class or string.
        tools: ``Tool`` objects or named callables, callable by name from the code.
        interpreter_factory: zero-argument callable returning a fresh interpreter for each
            forward (default: DSPEx's sandbox; ``configure(interpreter_factory=...)`` too).
        max_predictor_calls: predictor calls allowed per forward (``None``: no limit).
    """

    def __init__(
        self,
        signature: Any,
        *,
        tools: list[Any] | None = None,
        interpreter_factory: Callable[[], Any] = PythonInterpreter,
        max_predictor_calls: int | None = 100,
    ) -> None:
        super().__init__()
        validate_interpreter_factory(interpreter_factory)
        if max_predictor_calls is not None and (
            not isinstance(max_predictor_calls, int) or max_predictor_calls < 0
        ):
            raise ValueError(
                f"max_predictor_calls must be a non-negative int or None, got {max_predictor_calls!r}"
            )
        self._signature_cls = ensure_signature(signature)
        self._name = getattr(self._signature_cls, "__name__", None) or "Flex"
        self._flex_ctx = FlexContext(signature_cls=self._signature_cls, tools=list(tools or []))
        self._module_src: str | None = None
        self.lm: Any = None
        self._interpreter_factory = interpreter_factory
        self._max_predictor_calls = max_predictor_calls
        self._rebuild_bridge()
        self._bind_code(self._baseline_src())

    # ------------------------------------------------------------------ pickling
    def _rebuild_bridge(self) -> None:
        self._bridge = FlexBridge(self, self._interpreter_factory, self._max_predictor_calls)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_bridge", None)  # rebuilt from the source on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._rebuild_bridge()
        if self._module_src is not None:
            self._bridge.bind(self._module_src)

    # ------------------------------------------------------------------ surface
    @property
    def signature(self) -> Any:
        return self._signature_cls

    @property
    def module_src(self) -> str | None:
        """The bound source: one ``dspy.Module`` subclass (``__init__`` and ``forward``)."""
        return self._module_src

    def named_predictors(self) -> list[tuple[str, Any]]:
        """Empty: a Flex's update unit is its ``module_src``, not predictors."""
        return []

    def set_lm(self, lm: Any) -> None:
        self.lm = lm

    def get_lm(self) -> Any:
        return self.lm

    def reset(self) -> None:
        """Clear the LM; the (possibly optimized) ``module_src`` is kept."""
        self.lm = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name})"

    # ------------------------------------------------------------------ state
    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        lm = (
            self.lm.dump_state() if self.lm is not None and hasattr(self.lm, "dump_state") else None
        )
        return {"module_src": self._module_src, "lm": lm}

    def load_state(
        self, state: dict[str, Any], *, allow_unsafe_lm_state: bool | None = None
    ) -> Flex:
        """Bind the saved source (if any) and the saved LM (none clears it), as DSPy does."""
        from dspex.errors import StateError
        from dspex.modules.predict import _lm_from_state

        if not isinstance(state, dict):
            raise StateError(f"Flex state must be an object, got {type(state).__name__}")
        module_src = state.get("module_src")
        if module_src:
            self._bind_code(module_src)
        lm_state = state.get("lm")
        if allow_unsafe_lm_state is None:  # Module.load(..., allow_unsafe_lm_state=...)
            allow_unsafe_lm_state = TRUSTED_LM_STATE.get()
        self.lm = _lm_from_state(lm_state, allow_unsafe_lm_state) if lm_state else None
        return self

    # ------------------------------------------------------------------ code
    def _baseline_src(self) -> str:
        """One predictor over the whole signature in a ``dspy.Module`` (``dspy.RLM`` over the
        tools when there are tools, else ``dspy.Predict``)."""
        sig = self._signature_cls
        text = self._flex_ctx.render_signature_string()
        instructions = (getattr(sig, "instructions", "") or "").strip()
        sig_arg = f"dspy.Signature({text!r}, {instructions!r})" if instructions else repr(text)
        tool_names = list(self._flex_ctx.context_names())
        if tool_names:
            attr, ctor = "rlm", f"dspy.RLM({sig_arg}, tools=[{', '.join(tool_names)}])"
        else:
            attr, ctor = "predict", f"dspy.Predict({sig_arg})"
        outputs = ", ".join(f"{name}=result.{name}" for name in sig.output_fields)
        return "\n".join(
            [
                f"class {self._class_name()}(dspy.Module):",
                "    def __init__(self):",
                "        super().__init__()",
                f"        self.{attr} = {ctor}",
                "",
                "    def forward(self, **inputs):",
                f"        result = self.{attr}(**inputs)",
                f"        return dspy.Prediction({outputs})",
            ]
        )

    def _class_name(self) -> str:
        base = self._name if self._name and self._name.isidentifier() else "Flex"
        return f"{base}Module"

    def _bind_code(self, module_src: str) -> None:
        """Use ``module_src`` from the next forward (checked by parsing; nothing runs)."""
        self._bridge.bind(module_src)
        self._module_src = module_src

    def forward(self, *args: Any, **kwargs: Any) -> Prediction:
        """Run the bound ``forward`` in a fresh interpreter on these keyword inputs."""
        if args:
            raise FlexInputError("dspy.Flex accepts keyword inputs only")
        if self.lm is not None:
            with settings.context(lm=self.lm):
                return self._bridge.forward(kwargs)
        return self._bridge.forward(kwargs)
