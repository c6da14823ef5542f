"""``Teleprompter``: the base of every optimizer (DSPy's name and ``compile`` contract)."""

from __future__ import annotations

from typing import Any

__all__ = ["Teleprompter"]


class Teleprompter:
    """An optimizer: ``compile(student, trainset=...)`` returns an improved copy of ``student``.

    Subclasses keep DSPy 3.4.1's constructor arguments and defaults, so a DSPy script that
    builds one with ``import dspex as dspy`` behaves the same.
    """

    implementation: str = "native"
    """Where the optimizer runs (``"dspy"`` on a routed one), as on modules."""

    def __init__(self) -> None:
        pass

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A ``compile`` defined in a subclass's body fires the compile callbacks, once per
        call (an override calling ``super().compile`` reports one compile, as DSPy does)."""
        super().__init_subclass__(**kwargs)
        compile_fn = cls.__dict__.get("compile")
        if compile_fn is not None and callable(compile_fn):
            from dspex.utils.callback import with_compile_callbacks

            cls.compile = with_compile_callbacks(compile_fn)  # type: ignore[method-assign]

    def compile(self, student: Any, *, trainset: list[Any], **kwargs: Any) -> Any:
        """Optimize ``student`` on ``trainset``; the result is a new program."""
        raise NotImplementedError(f"{type(self).__name__} does not define compile()")

    def get_params(self) -> dict[str, Any]:
        """The optimizer's settings and working state (DSPy returns ``__dict__``)."""
        return self.__dict__
