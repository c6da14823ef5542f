"""``KNNFewShot``: at call time, bootstrap demos from the k training examples nearest the inputs."""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any

from dspex.modules.knn import KNN
from dspex.teleprompt.bootstrap import BootstrapFewShot
from dspex.teleprompt.teleprompt import Teleprompter

__all__ = ["KNNFewShot"]


class KNNFewShot(Teleprompter):
    """DSPy's ``KNNFewShot``: ``vectorizer`` is any embedder callable (``list[str]`` -> vectors).

    ``compile`` returns a copy of the student whose every call finds the ``k`` nearest training
    examples (native :class:`~dspex.modules.knn.KNN`, DSPy's neighbours for the same
    embedder), compiles the student on them with ``BootstrapFewShot(**few_shot_bootstrap_args)``
    and runs the result. The bootstrap's DSPex-only arguments (``max_lm_calls``, ``max_cost``,
    ``num_threads``) go in ``few_shot_bootstrap_args`` too and bound each call's bootstrap; its
    progress bar is off unless ``display_progress=True`` is given there.
    """

    def __init__(
        self,
        k: int,
        trainset: Sequence[Any],
        vectorizer: Callable[[list[str]], Any],
        **few_shot_bootstrap_args: Any,
    ) -> None:
        self.KNN = KNN(k, trainset, vectorizer=vectorizer)
        self.few_shot_bootstrap_args = few_shot_bootstrap_args

    def compile(self, student: Any, *, teacher: Any = None) -> Any:  # type: ignore[override]
        student_copy = student.reset_copy()
        knn, args = self.KNN, {"display_progress": False, **self.few_shot_bootstrap_args}

        def forward_pass(_self: Any, **kwargs: Any) -> Any:
            optimizer = BootstrapFewShot(**args)
            compiled = optimizer.compile(student, teacher=teacher, trainset=knn(**kwargs))
            return compiled(**kwargs)

        student_copy.forward = types.MethodType(forward_pass, student_copy)
        return student_copy
