"""Bounds on what a template may compute: time, loop iterations, sizes (issue 11, item 3).

A template's source may come from an untrusted pipeline spec, so "it renders" is not
enough: ``{% for i in range(100000) %}{% for j in range(100000) %}``, ``9**(9**9)`` and
``'a' * 10**10`` are one line each. :class:`BoundedEnvironment` is Jinja2's
``ImmutableSandboxedEnvironment`` plus:

- every ``for`` loop is wrapped (the template's syntax tree is rewritten before compiling)
  so each iteration spends one step of a per-render budget (:data:`MAX_STEPS`) and notices
  a cancellation (the step's ``timeout``/the pipeline's ``timeout``) within
  :data:`CHECK_EVERY` steps; calls and arithmetic spend steps too;
- ``*``, ``**``, ``+`` and ``%`` are intercepted (which also stops Jinja folding them at
  compile time) and refuse results over :data:`MAX_CHARS` characters/items or
  :data:`MAX_INT_BITS` bits *before* computing them; so do the filters that take a width
  (``center``, ``indent``, ``wordwrap``, ``truncate``, ``format``, ``batch``, ``replace``)
  and ``str.format``/``lipsum``;
- the rendered text is streamed and refused past :data:`MAX_CHARS`.

A refusal is a :class:`~dspex.errors.SecurityError` with ``reason="template_budget"``.
"""

from __future__ import annotations

import contextvars
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from dspex.errors import SecurityError

__all__ = ["CHECK_EVERY", "MAX_CHARS", "MAX_INT_BITS", "MAX_STEPS", "Budget", "environment"]

MAX_CHARS = 10_000_000
"""Longest string, list or rendered text a template may build."""
MAX_INT_BITS = 100_000
"""Largest integer (in bits) a template may compute."""
MAX_STEPS = 1_000_000
"""Loop iterations + calls + intercepted operations per render."""
CHECK_EVERY = 256
"""Steps between two looks at the cancellation flag."""

_WIDE_FORMAT = re.compile(r"\d{7,}|%[^a-zA-Z%]*\*")
_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "dspex_template_budget", default=None
)


class Budget:
    """The steps left to one render and the flag that cancels it."""

    def __init__(self, name: str, cancelled: threading.Event | None = None) -> None:
        self.name = name
        self.cancelled = cancelled or threading.Event()
        self.steps = 0

    def spend(self, steps: int = 1) -> None:
        before = self.steps
        self.steps += steps
        if self.steps // CHECK_EVERY != before // CHECK_EVERY or steps > 1:
            if self.cancelled.is_set():
                raise _refusal(self.name, "was cancelled (its timeout passed)", "cancelled")
            if self.steps > MAX_STEPS:
                raise _refusal(self.name, f"exceeded its budget of {MAX_STEPS} steps", "steps")

    def __enter__(self) -> Budget:
        self._token = _BUDGET.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _BUDGET.reset(self._token)


def _refusal(name: str, what: str, limit: str) -> SecurityError:
    return SecurityError(
        f"template step {name!r} {what}", step=name, reason="template_budget", limit=limit
    )


def _spend(steps: int = 1) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.spend(steps)


def _too_big(what: str) -> SecurityError:
    budget = _BUDGET.get()
    return _refusal(budget.name if budget else "template", f"would build {what}", "size")


def _check_size(n: Any, what: str = "a value") -> None:
    if isinstance(n, int) and n > MAX_CHARS:
        raise _too_big(f"{what} of {n} characters/items (limit {MAX_CHARS})")


def _check_format(fmt: Any) -> None:
    if isinstance(fmt, str) and _WIDE_FORMAT.search(fmt):
        raise _too_big("a format with a huge or '*' width")


def _check_binop(op: str, left: Any, right: Any) -> None:
    sized = (str, bytes, list, tuple)
    if op == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        if max(1, abs(left).bit_length()) * right > MAX_INT_BITS:
            raise _too_big(f"an integer of about {abs(left).bit_length() * right} bits")
    elif op == "*":
        if isinstance(left, int) and isinstance(right, sized):
            left, right = right, left
        if isinstance(left, sized) and isinstance(right, int):
            _check_size(len(left) * right, "a repeated sequence")
        elif (
            isinstance(left, int)
            and isinstance(right, int)
            and left.bit_length() + right.bit_length() > MAX_INT_BITS
        ):
            raise _too_big("an integer product over the bit limit")
    elif op == "+" and isinstance(left, sized) and isinstance(right, sized):
        _check_size(len(left) + len(right), "a concatenation")
    elif op == "%" and isinstance(left, str):
        _check_format(left)


def _bounded_iter(value: Any) -> Iterator[Any]:
    """What every ``for`` loop of a template iterates: the value, one budget step each."""
    for item in value:
        _spend()
        yield item


def _width_filter(fn: Callable[..., Any], *positions: int) -> Callable[..., Any]:
    """Wrap a Jinja filter so its width-like arguments are checked before it runs."""

    def bounded(*args: Any, **kwargs: Any) -> Any:
        for i in positions:
            if i < len(args):
                _check_size(args[i], f"{fn.__name__}()")
        for value in kwargs.values():
            _check_size(value, f"{fn.__name__}()")
        return fn(*args, **kwargs)

    bounded.__name__ = fn.__name__
    for marker in ("jinja_pass_arg",):
        if hasattr(fn, marker):
            setattr(bounded, marker, getattr(fn, marker))
    return bounded


def _bounded_replace(fn: Callable[..., Any]) -> Callable[..., Any]:
    def replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> Any:
        if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
            _check_size(len(s) + (len(s) + 1) * len(new), "replace()")
        return fn(eval_ctx, s, old, new, count)

    replace.jinja_pass_arg = fn.jinja_pass_arg  # type: ignore[attr-defined]
    return replace


def _bounded_format(fn: Callable[..., Any]) -> Callable[..., Any]:
    def format_(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_format(value)
        return fn(value, *args, **kwargs)

    return format_


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    from jinja2.utils import generate_lorem_ipsum

    _check_size(n * max * 10, "lipsum()")
    return str(generate_lorem_ipsum(n, html, min, max))


def _namespace_class() -> Any:
    """Jinja's ``namespace()`` whose assignments are size-checked (``ns.s = ns.s ~ ns.s``
    in a loop would otherwise double a string past any bound without a checked operator)."""
    from jinja2.utils import Namespace

    class BoundedNamespace(Namespace):
        def __setitem__(self, name: str, value: Any) -> None:
            _spend()
            if isinstance(value, str | bytes | list | tuple | dict):
                _check_size(len(value), "a namespace value")
            super().__setitem__(name, value)

    return BoundedNamespace


def environment() -> Any:
    """A new bounded sandboxed environment (Jinja2 imported here, on first use)."""
    from jinja2 import StrictUndefined, nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "+", "%"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _spend()
            _check_binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            _spend()
            target = getattr(__obj, "__wrapped__", __obj)
            if getattr(target, "__name__", "") in ("format", "format_map"):
                _check_format(getattr(target, "__self__", None))
            for arg in (*args, *kwargs.values()):
                if isinstance(arg, str | list | tuple | bytes):
                    _check_size(len(arg), "an argument")
            return super().call(__context, __obj, *args, **kwargs)

        def bound(self, ast: Any) -> Any:
            """``ast`` with every for-loop's iterable wrapped in the budgeted iterator."""
            for loop in ast.find_all(nodes.For):
                loop.iter = nodes.Filter(
                    loop.iter, "dspex_bounded", [], [], None, None, lineno=loop.lineno
                )
            return ast

    env = BoundedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    env.filters["dspex_bounded"] = _bounded_iter
    for name, positions in {
        "center": (1,),
        "indent": (1,),
        "wordwrap": (2,),
        "truncate": (1, 4),
        "batch": (1,),
        "slice": (1,),
    }.items():
        env.filters[name] = _width_filter(env.filters[name], *positions)
    env.filters["replace"] = _bounded_replace(env.filters["replace"])
    env.filters["format"] = _bounded_format(env.filters["format"])
    env.globals["lipsum"] = _lipsum
    env.globals["namespace"] = _namespace_class()
    return env


def render(template: Any, context: dict[str, Any], budget: Budget) -> str:
    """Render ``template`` under ``budget``, streaming and capping the text."""
    parts: list[str] = []
    size = 0
    with budget:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_CHARS:
                raise _refusal(budget.name, f"rendered more than {MAX_CHARS} characters", "size")
            parts.append(chunk)
            budget.spend()
    return "".join(parts)
