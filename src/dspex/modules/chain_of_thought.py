"""Native ``ChainOfThought``: Predict with a ``reasoning`` output field prepended."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from dspex.modules.predict import Predict
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.primitives.streaming import StreamChunk

__all__ = ["ChainOfThought"]


class ChainOfThought(Module):
    """Reason step by step, then answer: the signature gains ``reasoning`` as first output."""

    implementation: str = "native"

    def __init__(
        self,
        signature: Any,
        rationale_field: Any = None,
        rationale_field_type: Any = str,
        **config: Any,
    ) -> None:
        from dspex.signatures import OutputField, ensure_signature

        super().__init__()
        signature = ensure_signature(signature)
        field_type = rationale_field.annotation if rationale_field else rationale_field_type
        field = rationale_field if rationale_field else OutputField(desc="${reasoning}")
        self.predict = Predict(
            signature.prepend(name="reasoning", field=field, type_=field_type), **config
        )

    def forward(self, **kwargs: Any) -> Prediction:
        return self.predict(**kwargs)

    async def aforward(self, **kwargs: Any) -> Prediction:
        return await self.predict.acall(**kwargs)

    async def astream(self, **kwargs: Any) -> AsyncIterator[StreamChunk | Prediction]:
        """Field-level chunks (``reasoning`` first), then the ``Prediction``."""
        async for item in self.predict.astream(**kwargs):
            # named as DSPy names the inner predictor
            yield replace(item, predictor="predict") if isinstance(item, StreamChunk) else item

    @property
    def signature(self) -> Any:
        return self.predict.signature

    @property
    def demos(self) -> list[Any]:
        return self.predict.demos

    @demos.setter
    def demos(self, value: list[Any]) -> None:
        self.predict.demos = value
