"""Native ``MultiChainComparison``: compare M reasoning attempts, then answer once more.

The signature gains ``reasoning_attempt_1..M`` inputs and a leading ``rationale`` output, as
DSPy 3.4.1 builds it, so the prompt is DSPy's. (DSPy also passes ``prefix=`` texts, which have
no effect in 3.4.1 and only raise its deprecation warning; they are left out here.)
"""

from __future__ import annotations

from typing import Any, ClassVar

from dspex.modules.predict import Predict
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.signatures import InputField, OutputField, ensure_signature

__all__ = ["MultiChainComparison"]


class MultiChainComparison(Module):
    """Given ``completions`` (M earlier attempts, each with ``rationale``/``reasoning`` and
    the last output field), produce a corrected rationale and the final outputs."""

    _dspex_kind: ClassVar[str] = "multi_chain_comparison"
    implementation: str = "native"

    def __init__(self, signature: Any, M: int = 3, temperature: float = 0.7, **config: Any) -> None:
        super().__init__()
        self.M = M
        signature = ensure_signature(signature)
        *_, self.last_key = signature.output_fields.keys()
        for idx in range(M):
            signature = signature.append(
                f"reasoning_attempt_{idx + 1}",
                InputField(desc="${reasoning attempt}"),
            )
        signature = signature.prepend(
            "rationale",
            OutputField(desc="${corrected reasoning}"),
        )
        self.predict = Predict(signature, temperature=temperature, **config)

    def _inputs(self, completions: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        attempts = []
        for c in completions:
            rationale = c.get("rationale", c.get("reasoning")).strip().split("\n")[0].strip()
            answer = str(c[self.last_key]).strip().split("\n")[0].strip()
            attempts.append(
                f"«I'm trying to {rationale} I'm not sure but my prediction is {answer}»"
            )
        if len(attempts) != self.M:
            raise ValueError(
                f"The number of attempts ({len(attempts)}) doesn't match the expected number M "
                f"({self.M}). Please set the correct value for M when initializing "
                "MultiChainComparison."
            )
        return {**{f"reasoning_attempt_{i + 1}": a for i, a in enumerate(attempts)}, **kwargs}

    def forward(self, completions: Any, **kwargs: Any) -> Prediction:
        return self.predict(**self._inputs(completions, kwargs))

    async def aforward(self, completions: Any, **kwargs: Any) -> Prediction:
        return await self.predict.acall(**self._inputs(completions, kwargs))
