"""Native ``BestOfN``: run a module up to N times (rollout ids, temperature 1.0), keep the best.

DSPy 3.4.1's behaviour: attempt ``i`` runs a deep copy of the module on
``lm.copy(rollout_id=start + i, temperature=1.0)``; the first attempt whose reward reaches
``threshold`` wins, else the best reward seen; a failing attempt prints
``BestOfN: Attempt i failed ...`` and the run re-raises once failures exceed ``fail_count``
(which, as in DSPy, is decremented on the instance). The module may be any user ``Module``;
it runs in this process. ``Refine`` extends the same loop with its feedback step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from dspex import settings
from dspex.errors import ConfigurationError
from dspex.modules.steps import CallModule, Steps, drive_async, drive_sync
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction

__all__ = ["BestOfN"]


class BestOfN(Module):
    """The highest-reward prediction of up to ``N`` attempts (see the module docstring).

    ``reward_fn(kwargs, prediction) -> float``; ``threshold``: stop at the first attempt whose
    reward is at least this; ``fail_count``: failures allowed (default ``N``).
    """

    _dspex_kind: ClassVar[str] = "best_of_n"
    implementation: str = "native"
    _label: ClassVar[str] = "BestOfN"

    def __init__(
        self,
        module: Module,
        N: int,
        reward_fn: Callable[[dict[str, Any], Prediction], float],
        threshold: float,
        fail_count: int | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.reward_fn: Callable[..., float] = lambda *args: reward_fn(*args)  # never a sub-module
        self.threshold = threshold
        self.N = N
        self.fail_count = fail_count or N

    def forward(self, **kwargs: Any) -> Prediction | None:
        return drive_sync(self._attempts(kwargs))

    async def aforward(self, **kwargs: Any) -> Prediction | None:
        return await drive_async(self._attempts(kwargs))

    # ------------------------------------------------------------------ the loop (no I/O)
    def _base_lm(self) -> Any:
        get_lm = getattr(self.module, "get_lm", None)
        lm = (get_lm() if get_lm is not None else None) or settings.current().lm
        if lm is None:
            raise ConfigurationError(
                f"{self._label} needs an LM: configure one with dspex.configure(lm=...) or set "
                "it on the module."
            )
        return lm

    def _attempts(self, kwargs: dict[str, Any]) -> Steps[Prediction | None]:
        lm = self._base_lm()
        start = lm.kwargs.get("rollout_id", 0)
        best_pred: Prediction | None = None
        best_reward = -float("inf")
        state = self._new_state()
        for idx in range(self.N):
            rid = start + idx
            mod = self.module.deepcopy()
            mod.set_lm(lm.copy(rollout_id=rid, temperature=1.0))
            try:
                pred = yield self._attempt_step(mod, kwargs, state)
                reward = self.reward_fn(kwargs, pred)
                if reward > best_reward:
                    best_reward, best_pred = reward, pred
                if self.threshold is not None and reward >= self.threshold:
                    break
                yield from self._after_attempt(idx, mod, kwargs, pred, reward, state)
            except Exception as err:
                print(f"{self._label}: {self._failure_text(idx, rid)}: {err}")
                if idx > self.fail_count:
                    raise
                self.fail_count -= 1
        return best_pred

    # hooks for Refine --------------------------------------------------------
    def _new_state(self) -> Any:
        return None

    def _attempt_step(self, mod: Module, kwargs: dict[str, Any], state: Any) -> CallModule:
        return CallModule(mod, dict(kwargs))

    def _after_attempt(
        self,
        idx: int,
        mod: Module,
        kwargs: dict[str, Any],
        pred: Any,
        reward: float,
        state: Any,
    ) -> Steps[None]:
        return
        yield  # a generator with no steps

    def _failure_text(self, idx: int, rid: int) -> str:
        return f"Attempt {idx + 1} failed with rollout id {rid}"
