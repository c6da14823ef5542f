"""The ``gepa`` engine's run state that its own ``run_dir`` checkpoint leaves out.

``gepa`` 0.1.4 saves its ``GEPAState`` (candidates, scores, Pareto fronts, budget spent) before
every iteration, but not the generator ``gepa.api.optimize`` creates (``random.Random(seed)``,
shared by the candidate selector, the minibatch sampler and the merge proposer), the sampler's
epoch (its shuffled order) or the merge proposer's schedule. A run resumed from the library's
state alone therefore draws other parents and minibatches than the uninterrupted run.

:class:`EngineState` fills that gap through the library's own hooks: the engine stores the
adapter's ``get_adapter_state()`` in the saved ``GEPAState`` before every iteration and hands
it back to ``set_adapter_state()`` when a run starts (fresh or resumed). ``optimize`` builds
the engine itself, so the adapter finds it when the engine calls ``set_adapter_state`` (the
engine is the caller; checked, never guessed), and from then on captures and restores:

- the state of every distinct ``random.Random`` of the selector, sampler and merge proposer;
- the sampler's attributes (``EpochShuffledBatchSampler``: shuffled ids, epoch, frequencies);
- the merge proposer's schedule (merges due and tested, merges performed, and whether the last
  iteration found a program: the engine clears that flag when its loop starts, so it is set
  again by :meth:`EngineState.__call__`, a stop condition the engine checks at the top of
  every iteration, which never stops the run).
"""

from __future__ import annotations

import copy
import random
import sys
from types import FrameType
from typing import Any

__all__ = ["EngineState"]

_MERGE_FIELDS = ("merges_due", "total_merges_tested", "merges_performed")
_FLAG = "last_iter_found_new_program"


def _engine_calling(adapter: Any, depth: int = 4) -> Any:
    """The ``GEPAEngine`` (driving ``adapter``) among the callers of the calling function."""
    from gepa.core.engine import GEPAEngine

    frame: FrameType | None = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, GEPAEngine) and owner.adapter is adapter:
            return owner
        frame = frame.f_back
    return None


class EngineState:
    """Captures and restores the engine's unsaved run state (see the module docstring)."""

    def __init__(self) -> None:
        self.engine: Any = None
        self._flag: bool | None = None

    def bind(self, adapter: Any) -> bool:
        """Find the engine that is calling ``adapter``'s ``set_adapter_state``."""
        self.engine = _engine_calling(adapter)
        return self.engine is not None

    def _parts(self) -> tuple[Any, Any, Any]:
        proposer = self.engine.reflective_proposer
        return proposer.candidate_selector, proposer.batch_sampler, self.engine.merge_proposer

    def _generators(self) -> list[random.Random]:
        unique: list[random.Random] = []
        for part in self._parts():
            rng = getattr(part, "rng", None)
            if isinstance(rng, random.Random) and all(rng is not seen for seen in unique):
                unique.append(rng)
        return unique

    def capture(self) -> dict[str, Any]:
        if self.engine is None:
            return {}
        _, sampler, merge = self._parts()
        saved: dict[str, Any] = {
            "rngs": [rng.getstate() for rng in self._generators()],
            "sampler": copy.deepcopy({k: v for k, v in vars(sampler).items() if k != "rng"}),
        }
        if merge is not None:
            fields = {name: getattr(merge, name) for name in (*_MERGE_FIELDS, _FLAG)}
            saved["merge"] = copy.deepcopy(fields)
        return saved

    def restore(self, saved: dict[str, Any]) -> None:
        if self.engine is None or not saved:
            return
        _, sampler, merge = self._parts()
        generators = self._generators()
        if len(generators) != len(saved["rngs"]):
            raise ValueError("the saved GEPA run used a different set of random generators")
        for rng, state in zip(generators, saved["rngs"], strict=True):
            rng.setstate(state)
        for name, value in copy.deepcopy(saved["sampler"]).items():
            setattr(sampler, name, value)
        if merge is not None and "merge" in saved:
            for name in _MERGE_FIELDS:
                setattr(merge, name, copy.deepcopy(saved["merge"][name]))
            self._flag = bool(saved["merge"][_FLAG])

    def __call__(self, _state: Any) -> bool:
        """A stop condition that never stops: after the engine has cleared the merge flag at
        the start of its loop, the first check sets the resumed run's value again."""
        if self._flag is not None and self.engine is not None:
            merge = self.engine.merge_proposer
            if merge is not None:
                setattr(merge, _FLAG, self._flag)
            self._flag = None
        return False
