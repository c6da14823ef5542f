"""Step specifications -> step objects, and the public step constructors.

What a pipeline's step list may hold:

- a module instance (``dspex.ChainOfThought("q -> a")``, a remote module, a ``Pipeline``);
- a plain function (sync or async) whose parameters name the state fields it reads;
- a tuple in the seeds' shape ``(implementation, target)`` or ``(implementation, target,
  {kwargs})`` with implementation ``"auto"``, ``"native"`` or ``"dspy"`` and target a module
  class (``dspex.ChainOfThought``) or a DSPy import path (``"dspy.ChainOfThought"``);
- a step built by :func:`step`, :func:`parallel`, :func:`branch`, :func:`map`,
  :func:`reduce`, :func:`template` or :func:`validate`;
- a list of any of these (a sub-sequence).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.errors import ImplementationUnavailable, PipelineSpecError
from dspex.pipelines.steps import (
    _NO_INITIAL,
    BranchStep,
    CallableStep,
    Condition,
    DSPyStep,
    MapStep,
    ModuleStep,
    ParallelStep,
    PipelineStep,
    ReduceStep,
    SequenceStep,
    Step,
)

__all__ = [
    "branch",
    "map",
    "normalize",
    "parallel",
    "reduce",
    "step",
    "template",
    "to_step",
    "validate",
]

_IMPLEMENTATIONS = ("auto", "native", "dspy")
_STEP_OPTIONS = frozenset(
    {"name", "timeout", "retries", "backoff", "inputs", "outputs", "output", "thread"}
)


def _spec_error(
    message: str, name: str | None = None, reason: str = "bad step"
) -> PipelineSpecError:
    return PipelineSpecError(message, step=name, reason=reason)


def _default_name(target: Any) -> str:
    if isinstance(target, str):
        return target.rsplit(".", 1)[-1].rsplit(":", 1)[-1]
    if isinstance(target, type):
        return target.__name__
    pipeline_name = getattr(target, "name", None)
    if _is_pipeline(target) and isinstance(pipeline_name, str):
        return pipeline_name
    name = getattr(target, "__name__", None)
    if isinstance(name, str):
        return "step" if name == "<lambda>" else name
    return type(target).__name__


def _is_pipeline(obj: Any) -> bool:
    from dspex.pipelines.base import Pipeline

    return isinstance(obj, Pipeline)


def _is_module(obj: Any) -> bool:
    from dspex.primitives.module import Module

    return isinstance(obj, Module)


def step(
    target: Any,
    *args: Any,
    implementation: str = "auto",
    name: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    inputs: Mapping[str, str] | Sequence[str] | None = None,
    outputs: Mapping[str, str] | None = None,
    output: str | None = None,
    thread: bool = False,
    **kwargs: Any,
) -> Step:
    """One step with its options.

    ``target`` is a module instance, a module class (built here with ``*args, **kwargs``,
    its implementation chosen by the router unless ``implementation=`` forces one), a DSPy
    import path such as ``"dspy.ChainOfThought"`` (run in the DSPy pool; ``"auto"`` picks a
    native equivalent when one exists), or a function. ``inputs={"param": "state_field"}``
    and ``outputs={"field": "state_field"}`` rename; ``output="field"`` stores the whole
    return value; ``timeout``/``retries``/``backoff`` override the pipeline's defaults.
    """
    if implementation not in _IMPLEMENTATIONS:
        hint = " (the seeds' 'python' is 'dspy' here)" if implementation == "python" else ""
        raise _spec_error(
            f"implementation must be one of {_IMPLEMENTATIONS}, got {implementation!r}{hint}",
            name,
            "implementation",
        )
    explicit = name is not None
    label = name if name is not None else _default_name(target)
    if not isinstance(label, str) or not label or "/" in label:
        raise _spec_error(f"a step name must be a non-empty string without '/', got {label!r}")
    options: dict[str, Any] = {
        "timeout": timeout,
        "retries": retries,
        "backoff": backoff,
        "explicit_name": explicit,
    }
    io: dict[str, Any] = {"inputs": inputs, "outputs": outputs, "output": output}

    if isinstance(target, Step):
        if args or kwargs or inputs or outputs or output:
            raise _spec_error(f"step {label!r} is already built; it takes no arguments", label)
        if explicit:
            target.name, target.explicit_name = label, True
        for key in ("timeout", "retries", "backoff"):
            if options[key] is not None:
                setattr(target, key, options[key])
        return target

    if isinstance(target, str):
        return _dspy_target(target, args, kwargs, implementation, label, options, io)

    kind = _routed_kind(target)
    if kind is not None:
        return _routed(kind, None, args, kwargs, implementation, label, options, io)

    if isinstance(target, type):
        return _module_class(target, args, kwargs, implementation, label, options, io)

    if args or kwargs:
        raise _spec_error(
            f"step {label!r}: {target!r} is already built; constructor arguments "
            f"{sorted(kwargs) or list(args)} only apply to a class or an import path",
            label,
        )
    if _is_pipeline(target):
        if inputs or outputs or output:
            raise _spec_error(
                f"step {label!r}: a nested pipeline reads and writes the state directly; "
                f"it takes no inputs=/outputs=/output=",
                label,
            )
        return PipelineStep(target, label, **options)
    if _is_module(target):
        actual = str(getattr(target, "implementation", "native"))
        if implementation != "auto" and implementation != actual:
            raise _spec_error(
                f"step {label!r}: the module is already built with implementation "
                f"{actual!r}; pass its class (or an import path) to choose {implementation!r}",
                label,
                "implementation",
            )
        return ModuleStep(target, label, **io, **options)
    if callable(target):
        if implementation == "dspy":
            raise _spec_error(
                f"step {label!r}: a plain function runs natively; implementation='dspy' needs "
                f"a DSPy import path such as 'dspy.ChainOfThought'",
                label,
                "implementation",
            )
        return CallableStep(target, label, thread=thread, **io, **options)
    raise _spec_error(
        f"step {label!r}: cannot make a step of {target!r}; expected a module, a function, "
        f"a module class, a DSPy import path, or a tuple (implementation, target, {{kwargs}})",
        label,
    )


def _routed_kind(target: Any) -> str | None:
    """The module kind the router builds for ``target`` (``dspex.Predict``, or a native class
    registered for a kind), or ``None`` for anything else (user classes run as given)."""
    from dspex.router import REGISTRY
    from dspex.router.factories import RoutedFactory

    if isinstance(target, RoutedFactory):
        return target.kind
    if isinstance(target, type):
        return REGISTRY.kind_of(target)
    return None


def _routed(
    kind: str,
    path: str | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    implementation: str,
    label: str,
    options: dict[str, Any],
    io: dict[str, Any],
) -> Step:
    """One routing decision for the step; a DSPy choice runs in the pipeline's DSPy session."""
    from dspex.router import realize, route

    decision = route(kind, implementation, args, kwargs)
    if decision.implementation == "dspy":
        target = path or decision.entry.dspy
        assert target is not None
        return DSPyStep(target, args, kwargs, label, **io, **options)
    try:
        module = realize(decision, args, kwargs)
    except TypeError as exc:
        raise _spec_error(f"step {label!r}: cannot build {kind}: {exc}", label) from exc
    return ModuleStep(module, label, **io, **options)


def _dspy_target(
    target: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    implementation: str,
    label: str,
    options: dict[str, Any],
    io: dict[str, Any],
) -> Step:
    if "." not in target and ":" not in target:
        raise _spec_error(
            f"step {label!r}: {target!r} is not an import path such as 'dspy.ChainOfThought'",
            label,
            "target",
        )
    from dspex.router import REGISTRY

    entry = REGISTRY.by_dspy(target)
    if entry is not None:  # a module kind: the router decides, as for dspex.Predict(...)
        return _routed(entry.kind, target, args, kwargs, implementation, label, options, io)
    if implementation == "native":
        entries = [REGISTRY.entry(kind) for kind in REGISTRY.kinds()]
        natives = [e.dspy for e in entries if e.native and e.dspy]
        raise ImplementationUnavailable(
            f"step {label!r}: {target} has no native implementation; use "
            f"implementation='dspy' or 'auto' (native ones: {', '.join(natives)})",
            kind=target,
            requested="native",
        )
    return DSPyStep(target, args, kwargs, label, **io, **options)


def _module_class(
    cls: type,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    implementation: str,
    label: str,
    options: dict[str, Any],
    io: dict[str, Any],
) -> Step:
    if implementation == "dspy":
        raise _spec_error(
            f"step {label!r}: {cls.__name__} has no DSPy implementation; name a DSPy class "
            f"by import path instead ('dspy.X')",
            label,
            "implementation",
        )
    try:
        module = cls(*args, **kwargs)
    except TypeError as exc:
        raise _spec_error(f"step {label!r}: cannot build {cls.__name__}: {exc}", label) from exc
    if not _is_module(module) and not callable(module):
        raise _spec_error(f"step {label!r}: {cls.__name__}() is not a module", label)
    if _is_module(module):
        return ModuleStep(module, label, **io, **options)
    return CallableStep(module, label, **io, **options)


def to_step(spec: Any) -> Step:
    """One step specification (see the module docstring) as a step object."""
    if isinstance(spec, Step):
        return spec
    if isinstance(spec, list):
        return SequenceStep(normalize(spec), "sequence")
    if isinstance(spec, tuple):
        if len(spec) not in (2, 3) or not isinstance(spec[0], str):
            raise _spec_error(
                f"a tuple step must be (implementation, target) or (implementation, target, "
                f"{{kwargs}}), got {spec!r}"
            )
        kwargs = spec[2] if len(spec) == 3 else {}
        if not isinstance(kwargs, Mapping):
            raise _spec_error(
                f"the third item of a tuple step must be a dict of arguments, got {kwargs!r}"
            )
        bad = [k for k in kwargs if not isinstance(k, str) or not k.isidentifier()]
        bad += [k for k in kwargs if k in ("implementation", "target")]
        if bad:
            raise _spec_error(
                f"a tuple step's arguments must be keyword names (and not 'implementation' "
                f"or 'target', given by the tuple itself), got {bad[0]!r}",
                reason="option",
            )
        return step(spec[1], implementation=spec[0], **dict(kwargs))
    if isinstance(spec, str):
        raise _spec_error(
            f"a bare string is not a step: {spec!r}; for a DSPy class write "
            f"('dspy', {spec!r}, {{'signature': '...'}}), for text use template({spec!r})"
        )
    return step(spec)


def normalize(specs: Any) -> list[Step]:
    """Step specifications as step objects with names unique at this level."""
    if not isinstance(specs, list | tuple) or isinstance(specs, str):
        raise _spec_error(f"a pipeline takes a list of steps, got {type(specs).__name__}")
    if isinstance(specs, tuple) and specs and isinstance(specs[0], str):
        specs = [specs]  # a single tuple step
    steps = []
    for index, spec in enumerate(specs):
        try:
            steps.append(to_step(spec))
        except PipelineSpecError as exc:
            raise _at_position(exc, index) from None
    seen: dict[str, int] = {}
    for s in steps:
        if s.name in seen:
            if s.explicit_name:
                raise _spec_error(
                    f"two steps are named {s.name!r}; step names must be unique in a pipeline",
                    s.name,
                    "duplicate name",
                )
            seen[s.name] += 1
            s.name = f"{s.name}_{seen[s.name]}"
        seen.setdefault(s.name, 1)
    return steps


def _at_position(exc: PipelineSpecError, index: int) -> PipelineSpecError:
    """``exc`` again, its ``position`` (indices from the outermost step list) one level up."""
    position = [index, *exc.fields.get("position", [])]
    detail = exc.fields.get("detail", exc.message)
    where = "".join(f"[{i}]" for i in position)
    fields = {**exc.fields, "position": position, "detail": detail}
    return PipelineSpecError(f"steps{where}: {detail}", **fields)


def _named(name: str | None, default: str, options: dict[str, Any]) -> str:
    """The step name (``options`` learns whether the user chose it)."""
    options["explicit_name"] = name is not None
    if name is None:
        return default
    if not isinstance(name, str) or not name or "/" in name:
        raise _spec_error(f"a step name must be a non-empty string without '/', got {name!r}")
    return name


def parallel(steps: Sequence[Any], *, name: str | None = None, **options: Any) -> Step:
    """Run ``steps`` concurrently on the same state; merge their outputs in this order."""
    if not isinstance(steps, list | tuple):
        raise _spec_error(f"parallel() takes a list of steps, got {type(steps).__name__}", name)
    return ParallelStep(
        normalize(builtins.list(steps)), _named(name, "parallel", options), **options
    )


def branch(
    condition: Condition,
    then: Any,
    otherwise: Any = None,
    *,
    name: str | None = None,
    **options: Any,
) -> Step:
    """``then`` when ``condition`` (a state field name, or a function of the state) holds.

    ``otherwise`` (optional) runs when it does not. Either may be a step or a list of steps.
    """
    return BranchStep(
        condition,
        to_step(then),
        None if otherwise is None else to_step(otherwise),
        _named(name, "branch", options),
        **options,
    )


def map(
    step_spec: Any,
    *,
    over: str,
    as_: str | None = "item",
    into: str | None = None,
    concurrency: int = 8,
    name: str | None = None,
    **options: Any,
) -> Step:
    """Run a step once per item of the list field ``over``, ``concurrency`` at a time."""
    return MapStep(
        to_step(step_spec),
        over,
        _named(name, "map", options),
        as_=as_,
        into=into,
        concurrency=concurrency,
        **options,
    )


def reduce(
    fn: Callable[[Any, Any], Any],
    *,
    over: str,
    into: str,
    initial: Any = _NO_INITIAL,
    name: str | None = None,
    **options: Any,
) -> Step:
    """Fold the list field ``over`` with ``fn(accumulator, item)`` into the field ``into``."""
    return ReduceStep(fn, over, into, _named(name, "reduce", options), initial=initial, **options)


def template(source: str, *, output: str = "text", name: str | None = None, **options: Any) -> Step:
    """Render a Jinja2 template (sandboxed) with the state fields it names into ``output``."""
    from dspex.pipelines.templates import TemplateStep

    return TemplateStep(source, _named(name, "template", options), output=output, **options)


def validate(signature: Any, *, name: str | None = None, **options: Any) -> Step:
    """Check and convert the state fields a signature names against their types."""
    from dspex.pipelines.validation import ValidateStep

    label = _named(name, "validate", options)
    if not isinstance(signature, str) and not isinstance(signature, type):
        raise _spec_error(
            f"step {label!r}: validate() takes a signature ('a: int -> b') or a Signature "
            f"class, got {type(signature).__name__}",
            label,
            "signature",
        )
    return ValidateStep(signature, label, **options)
