"""Step kinds: modules, DSPy targets, callables, and the composites (parallel, branch, map...).

A step reads the fields it names from the pipeline state and returns the fields it writes
(a dict); it never mutates the state it is given. ``execute`` raises on failure; the
runner (:mod:`dspex.pipelines.runner`) adds timeouts, retries, attribution and metrics.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast, get_args

from dspex.errors import PipelineError, PipelineSpecError, StepInputMissing, StepValidationError
from dspex.pipelines.result import StepResult
from dspex.pipelines.runner import Frame, Run, run_sequence, run_step
from dspex.primitives.example import Example

if TYPE_CHECKING:
    from dspex.pipelines.base import Pipeline

__all__ = [
    "BranchStep",
    "CallableStep",
    "DSPyStep",
    "MapStep",
    "ModuleStep",
    "ParallelStep",
    "PipelineStep",
    "ReduceStep",
    "SequenceStep",
    "Step",
    "combine_implementations",
]

State = Mapping[str, Any]
Bindings = tuple[tuple[str, str], ...]  # (parameter name, state key)


def require(ok: bool, name: str, reason: str, text: str) -> None:
    """Raise ``PipelineSpecError("step <name>: <text>")`` unless ``ok``."""
    if not ok:
        raise PipelineSpecError(f"step {name!r}: {text}", step=name, reason=reason)


class Step:
    """Base of every step: a name, and the timeout/retry options the runner applies."""

    kind: ClassVar[str] = "step"
    implementation: str = "native"

    def __init__(
        self,
        name: str,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float | None = None,
        explicit_name: bool = False,
        **unknown: Any,
    ) -> None:
        require(
            not unknown,
            name, "option",
            f"unknown option(s) {', '.join(map(repr, sorted(unknown)))} for a {self.kind} step "
            "(options every step takes: name, timeout, retries, backoff)",
        )  # fmt: skip
        require(
            timeout is None or (isinstance(timeout, int | float) and timeout > 0),
            name, "timeout", f"timeout must be a positive number of seconds, got {timeout!r}",
        )  # fmt: skip
        require(
            retries is None or (isinstance(retries, int) and retries >= 0),
            name, "retries", f"retries must be an integer >= 0, got {retries!r}",
        )  # fmt: skip
        require(
            backoff is None or (isinstance(backoff, int | float) and backoff >= 0),
            name, "backoff", f"backoff must be a number of seconds >= 0, got {backoff!r}",
        )  # fmt: skip
        self.name = name
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.explicit_name = explicit_name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} ({self.implementation})>"

    def backoff_for(self, attempt: int, default: float) -> float:
        """Seconds to wait before retry number ``attempt`` (exponential)."""
        base = self.backoff if self.backoff is not None else default
        return float(base * 2 ** (attempt - 1))

    async def execute(
        self, state: State, run: Run, frame: Frame, path: str, children: list[StepResult]
    ) -> dict[str, Any]:
        raise NotImplementedError


def combine_implementations(steps: Iterable[Step]) -> str:
    kinds = {s.implementation for s in steps}
    if len(kinds) == 1:
        return kinds.pop()
    return "mixed" if kinds else "native"


# ---------------------------------------------------------------------------- helpers


def missing_input(path: str, key: str, state: State) -> StepInputMissing:
    available = ", ".join(sorted(map(str, state))) or "nothing"
    return StepInputMissing(
        f"step {path!r} needs input {key!r}, which the pipeline state does not hold "
        f"(it holds: {available})",
        step=path,
        field=key,
    )


def list_input(state: State, field: str, path: str, verb: str) -> list[Any] | tuple[Any, ...]:
    """The list a ``map``/``reduce`` step works over (typed errors when absent or not a list)."""
    try:
        items = state[field]
    except KeyError:
        raise missing_input(path, field, state) from None
    if not isinstance(items, list | tuple):
        raise StepValidationError(
            f"step {path!r} {verb} {field!r}, which must be a list; it is a {type(items).__name__}",
            step=path,
            field=field,
            expected="list",
            value=repr(items)[:80],
        )
    return items


def _layer(top: dict[str, Any], state: State) -> ChainMap[str, Any]:
    """``top`` over ``state``: reads fall through, writes stay in ``top``."""
    return ChainMap(top, cast("MutableMapping[str, Any]", state))


def read_inputs(state: State, path: str, required: Bindings, optional: Bindings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for param, key in required:
        try:
            kwargs[param] = state[key]
        except KeyError:
            raise missing_input(path, key, state) from None
    for param, key in optional:
        if key in state:
            kwargs[param] = state[key]
    return kwargs


def collect_outputs(
    value: Any, path: str, output: str | None, renames: Mapping[str, str] | None
) -> dict[str, Any]:
    """The fields a step's return value writes into the state."""
    if output is not None:
        return {output: value}
    if value is None:
        return {}
    if isinstance(value, Example):
        items = dict(value.items())
    elif isinstance(value, Mapping):
        items = dict(value)
    else:
        raise PipelineError(
            f"step {path!r} returned a {type(value).__name__}; return a dict of fields, or "
            f"name the field to store the value in with output='...'",
            step=path,
        )
    if renames:
        items = {renames.get(k, k): v for k, v in items.items()}
    return items


def _bindings(
    name: str,
    params: Sequence[str],
    optional: Sequence[str],
    inputs: Mapping[str, str] | Sequence[str] | None,
) -> tuple[Bindings, Bindings]:
    """(required, optional) bindings of parameters to state keys, after ``inputs=`` renames."""
    if inputs is None:
        renames: dict[str, str] = {}
    elif isinstance(inputs, Mapping):
        renames = dict(inputs)
        unknown = [p for p in renames if p not in params and p not in optional]
        if unknown:
            raise PipelineSpecError(
                f"step {name!r}: inputs= names {unknown}, which the step does not take "
                f"(it takes: {', '.join([*params, *optional]) or 'nothing'})",
                step=name,
                reason="unknown field",
            )
    else:
        raise PipelineSpecError(
            f"step {name!r}: inputs= must map step fields to state fields, got {inputs!r}",
            step=name,
            reason="inputs",
        )
    return (
        tuple((p, renames.get(p, p)) for p in params),
        tuple((p, renames.get(p, p)) for p in optional),
    )


def _check_renames(name: str, outputs: Mapping[str, str] | None) -> Mapping[str, str] | None:
    if outputs is not None and not (
        isinstance(outputs, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in outputs.items())
    ):
        raise PipelineSpecError(
            f"step {name!r}: outputs= must map step output fields to state fields, got {outputs!r}",
            step=name,
            reason="outputs",
        )
    return outputs


def _as_map(inputs: Mapping[str, str] | Sequence[str] | None) -> Mapping[str, str] | None:
    if inputs is None or isinstance(inputs, Mapping):
        return inputs
    raise PipelineSpecError(f"inputs= must be a dict or a list of field names, got {inputs!r}")


def signature_bindings(
    name: str, signature: Any, inputs: Mapping[str, str] | None
) -> tuple[Bindings, Bindings]:
    required: list[str] = []
    optional: list[str] = []
    for field_name, info in signature.input_fields.items():
        nullable = type(None) in get_args(info.annotation) or info.annotation is type(None)
        (required if info.is_required() and not nullable else optional).append(field_name)
    return _bindings(name, required, optional, inputs)


# ---------------------------------------------------------------------------- leaf steps


class ModuleStep(Step):
    """A ``dspex.Module`` (native, or a remote one built by the caller): ``await module.acall``."""

    kind = "module"

    def __init__(
        self,
        module: Any,
        name: str,
        *,
        inputs: Mapping[str, str] | Sequence[str] | None = None,
        outputs: Mapping[str, str] | None = None,
        output: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, **options)
        require(
            callable(getattr(module, "acall", None)),
            name,
            "not_a_module",
            f"{type(module).__name__} is not a module (it has no acall): call it from a "
            "function step instead",
        )
        self.module = module
        self.implementation = str(getattr(module, "implementation", "native"))
        self.renames = _check_renames(name, outputs)
        self.output = output
        signature = _module_signature(module)
        self.required: Bindings
        self.optional: Bindings
        if isinstance(inputs, list | tuple):
            self.required, self.optional = tuple((k, k) for k in inputs), ()
        elif signature is not None:
            self.required, self.optional = signature_bindings(name, signature, _as_map(inputs))
        else:
            has_async = getattr(module, "_has_async_forward", None)
            fn = module.aforward if callable(has_async) and has_async() else module.forward
            params, optional, _ = _parameters(name, fn)
            self.required, self.optional = _bindings(name, params, optional, inputs)

    async def execute(
        self, state: State, run: Run, frame: Frame, path: str, children: list[StepResult]
    ) -> dict[str, Any]:
        kwargs = read_inputs(state, path, self.required, self.optional)
        value = await self.module.acall(**kwargs)
        return collect_outputs(value, path, self.output, self.renames)


def _module_signature(module: Any) -> Any:
    """A module's signature without a worker round trip where possible (``None``: unknown)."""
    if getattr(type(module), "implementation", None) == "dspy" and hasattr(module, "_oid"):
        recipe = module._dspy_session.recipe(module._oid)
        if recipe is not None:
            try:
                args = module._dspy_session.decoder.decode(recipe.args)
                kwargs = module._dspy_session.decoder.decode(recipe.kwargs)
                found = kwargs.get("signature", args[0] if args else None)
                if found is not None:
                    from dspex.signatures import ensure_signature

                    return ensure_signature(found)
            except Exception:
                pass
    signature = getattr(module, "signature", None)
    return signature if hasattr(signature, "input_fields") else None


def _parameters(name: str, fn: Callable[..., Any]) -> tuple[list[str], list[str], bool]:
    """(required, optional) parameter names of ``fn`` and whether it takes ``**kwargs``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise PipelineSpecError(
            f"step {name!r}: cannot read the parameters of {fn!r} ({exc}); wrap it in a "
            f"function with named parameters",
            step=name,
            reason="signature",
        ) from None
    required: list[str] = []
    optional: list[str] = []
    var_kw = False
    for param in sig.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            var_kw = True
        elif param.kind is param.VAR_POSITIONAL:
            continue
        elif param.kind is param.POSITIONAL_ONLY:
            raise PipelineSpecError(
                f"step {name!r}: parameter {param.name!r} is positional-only; pipeline steps "
                f"receive state fields by name",
                step=name,
                reason="signature",
            )
        elif param.default is param.empty:
            required.append(param.name)
        else:
            optional.append(param.name)
    return required, optional, var_kw


class CallableStep(Step):
    """A function (sync or async) whose parameters name the state fields it reads.

    It returns a dict of fields to write (or ``None``), or any value stored under
    ``output=``. A function taking ``**kwargs`` also receives every other state field. Sync
    functions run inline (they should be quick); ``thread=True`` runs a blocking one in a
    worker thread so the event loop, and the timeouts, keep running.
    """

    kind = "callable"

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        *,
        inputs: Mapping[str, str] | None = None,
        outputs: Mapping[str, str] | None = None,
        output: str | None = None,
        thread: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(name, **options)
        self.fn = fn
        self.renames = _check_renames(name, outputs)
        self.output = output
        self.thread = thread
        params, optional, self.var_kw = _parameters(name, fn)
        self.required, self.optional = _bindings(name, params, optional, inputs)
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004
        )

    async def execute(
        self, state: State, run: Run, frame: Frame, path: str, children: list[StepResult]
    ) -> dict[str, Any]:
        kwargs = read_inputs(state, path, self.required, self.optional)
        if self.var_kw:
            kwargs = {**state, **kwargs}
        if self.is_async:
            value = await self.fn(**kwargs)
        elif self.thread:
            value = await asyncio.to_thread(self.fn, **kwargs)
        else:
            value = self.fn(**kwargs)
            if inspect.isawaitable(value):
                value = await value
        return collect_outputs(value, path, self.output, self.renames)


class DSPyStep(Step):
    """A DSPy class by import path (``"dspy.ChainOfThought"``), run in the DSPy worker pool.

    With the pipeline's ``session="run"`` (the default) the module is built in the run's
    ``DSPySession``, so every DSPy step of one run shares one worker (and its state); with
    ``session="step"`` it is built once, in its own session, and reused across runs.
    """

    kind = "dspy"
    implementation = "dspy"

    def __init__(
        self,
        target: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str,
        *,
        inputs: Mapping[str, str] | Sequence[str] | None = None,
        outputs: Mapping[str, str] | None = None,
        output: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, **options)
        self.target = target
        self.args = args
        self.kwargs = kwargs
        self.renames = _check_renames(name, outputs)
        self.output = output
        self._shared: Any = None
        found = kwargs.get("signature", args[0] if args else None)
        self.required: Bindings
        self.optional: Bindings
        if isinstance(inputs, list | tuple):
            self.required, self.optional = tuple((k, k) for k in inputs), ()
        elif found is not None:
            from dspex.signatures import ensure_signature

            self.required, self.optional = signature_bindings(
                name, ensure_signature(found), _as_map(inputs)
            )
        else:
            raise PipelineSpecError(
                f"step {name!r}: {target} has no signature to read its inputs from; pass "
                f"signature='in -> out' or inputs=['field', ...]",
                step=name,
                reason="signature",
            )

    def _build(self, session: Any) -> Any:
        from dspex.bridge.remote import RemoteModule

        return RemoteModule(self.target, *self.args, session=session, **self.kwargs)

    def module(self, run: Run) -> Any:
        if run.session_mode == "run":
            return run.module_for(id(self), lambda: self._build(run.dspy_session()))
        if self._shared is None:
            self._shared = self._build(None)
        return self._shared

    async def execute(
        self, state: State, run: Run, frame: Frame, path: str, children: list[StepResult]
    ) -> dict[str, Any]:
        kwargs = read_inputs(state, path, self.required, self.optional)
        value = await self.module(run).acall(**kwargs)
        return collect_outputs(value, path, self.output, self.renames)


# ---------------------------------------------------------------------------- composites


class SequenceStep(Step):
    """Steps one after another on a private layer over the state; returns what they wrote."""

    kind = "sequence"

    def __init__(self, steps: Sequence[Step], name: str, **options: Any) -> None:
        super().__init__(name, **options)
        self.steps = list(steps)
        self.implementation = combine_implementations(self.steps)

    def frame(self, outer: Frame) -> Frame:
        return outer

    async def execute(
        self, state: State, run: Run, frame: Frame, path: str, children: list[StepResult]
    ) -> dict[str, Any]:
        layer: dict[str, Any] = {}
        await run_sequence(
            self.steps, _layer(layer, state), run, self.frame(frame), path + "/", children
        )
        return layer


class PipelineStep(SequenceStep):
    """A nested pipeline: its own options (timeouts, retries, ``continue_on_error``)."""

    kind = "pipeline"

    def __init__(self, pipeline: Pipeline, name: str, **options: Any) -> None:
        options.setdefault("timeout", pipeline.timeout)
        super().__init__(pipeline.steps, name, **options)
        self.pipeline = pipeline

    def frame(self, outer: Frame) -> Frame:
        return self.pipeline.frame


class ParallelStep(Step):
    """Sub-steps run concurrently on the same state; outputs merged in declaration order.

    A failing sub-step cancels the others and its (attributed) error is raised, unless
    ``continue_on_error``: then every sub-step finishes, each error is recorded under its
    own step name, and the successful ones' outputs are merged.
    """

    kind = "parallel"

    def __init__(self, steps: Sequence[Step], name: str, **options: Any) -> None:
        super().__init__(name, **options)
        if not steps:
            raise PipelineSpecError(
                f"step {name!r}: parallel() needs at least one step", step=name, reason="empty"
            )
        self.steps = list(steps)
        self.implementation = combine_implementations(self.steps)

    async def execute(
        self, state: State, run: Run, frame: Frame, path: str, children: list[StepResult]
    ) -> dict[str, Any]:
        prefix = path + "/"
        tasks = [
            asyncio.ensure_future(run_step(s, state, run, frame, prefix + s.name))
            for s in self.steps
        ]
        try:
            if frame.continue_on_error:
                await asyncio.wait(tasks)
            else:
                pending: set[asyncio.Future[StepResult]] = set(tasks)
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in tasks:  # the first failure in declaration order
                        if task in done and task.result().error is not None:
                            children.extend(t.result() for t in tasks if t.done())
                            raise task.result().error  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        merged: dict[str, Any] = {}
        for task in tasks:
            result = task.result()
            children.append(result)
            if result.error is not None:
                run.errors.append(result.error)
            else:
                merged.update(result.outputs)
        return merged


Condition = Callable[[State], Any] | str


class BranchStep(Step):
    """``then`` if the condition holds for the state, else ``otherwise`` (or nothing)."""

    kind = "branch"

    def __init__(
        self,
        condition: Condition,
        then: Step,
        otherwise: Step | None,
        name: str,
        **options: Any,
    ) -> None:
        super().__init__(name, **options)
        if not (isinstance(condition, str) or callable(condition)):
            raise PipelineSpecError(
                f"step {name!r}: branch condition must be a state field name or a function "
                f"of the state, got {condition!r}",
                step=name,
                reason="condition",
            )
        self.condition = condition
        self.then = then
        self.otherwise = otherwise
        self.implementation = combine_implementations(
            [then] if otherwise is None else [then, otherwise]
        )

    async def holds(self, state: State, path: str) -> bool:
        if isinstance(self.condition, str):
            try:
                return bool(state[self.condition])
            except KeyError:
                raise missing_input(path, self.condition, state) from None
        value = self.condition(state)
        if inspect.isawaitable(value):
            value = await value
        return bool(value)

    async def execute(
        self, state: State, run: Run, frame: Frame, path: str, children: list[StepResult]
    ) -> dict[str, Any]:
        chosen = self.then if await self.holds(state, path) else self.otherwise
        if chosen is None:
            return {}
        result = await run_step(chosen, state, run, frame, f"{path}/{chosen.name}")
        children.append(result)
        if result.error is not None:
            raise result.error
        return result.outputs


class MapStep(Step):
    """Run a step once per item of a list field, at most ``concurrency`` at a time.

    Each item is bound to ``as_`` (default ``"item"``; a dict item with ``as_=None`` is
    merged into the state instead). Every output field ``f`` of the step becomes a list
    ``f`` in the state, one entry per item in order (``None`` for a failed item under
    ``continue_on_error``); with ``into="name"`` the per-item output dicts go to one list.
    """

    kind = "map"

    def __init__(
        self,
        step: Step,
        over: str,
        name: str,
        *,
        as_: str | None = "item",
        into: str | None = None,
        concurrency: int = 8,
        **options: Any,
    ) -> None:
        super().__init__(name, **options)
        require(
            isinstance(over, str) and bool(over),
            name, "over", f"map(over=...) must name a list field of the state, got {over!r}",
        )  # fmt: skip
        require(
            isinstance(concurrency, int) and concurrency >= 1,
            name, "concurrency", f"concurrency must be an integer >= 1, got {concurrency!r}",
        )  # fmt: skip
        self.step = step
        self.over = over
        self.as_ = as_
        self.into = into
        self.concurrency = concurrency
        self.implementation = step.implementation

    async def execute(
        self, state: State, run: Run, frame: Frame, path: str, children: list[StepResult]
    ) -> dict[str, Any]:
        items = list_input(state, self.over, path, "maps over")
        gate = asyncio.Semaphore(self.concurrency)

        async def one(index: int, item: Any) -> StepResult:
            if self.as_ is None and isinstance(item, Mapping):
                scope: State = _layer(dict(item), state)
            else:
                scope = _layer({self.as_ or "item": item}, state)
            async with gate:
                return await run_step(self.step, scope, run, frame, f"{path}[{index}]")

        tasks = [asyncio.ensure_future(one(i, item)) for i, item in enumerate(items)]
        try:
            if frame.continue_on_error:
                if tasks:
                    await asyncio.wait(tasks)
            else:
                for task in tasks:  # in order: the first failing item is the one reported
                    result = await task
                    if result.error is not None:
                        children.extend(t.result() for t in tasks if t.done() and not t.cancelled())
                        raise result.error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        per_item: list[dict[str, Any] | None] = []
        for task in tasks:
            result = task.result()
            children.append(result)
            if result.error is not None:
                run.errors.append(result.error)
                per_item.append(None)
            else:
                per_item.append(result.outputs)
        if self.into is not None:
            return {self.into: per_item}
        keys: dict[str, None] = {}
        for outputs in per_item:
            keys.update(dict.fromkeys(outputs or ()))
        return {k: [None if o is None else o.get(k) for o in per_item] for k in keys}


_NO_INITIAL: Any = object()


class ReduceStep(Step):
    """Fold a list field into one value: ``fn(accumulator, item)`` (sync or async)."""

    kind = "reduce"

    def __init__(
        self,
        fn: Callable[[Any, Any], Any],
        over: str,
        into: str,
        name: str,
        *,
        initial: Any = _NO_INITIAL,
        **options: Any,
    ) -> None:
        super().__init__(name, **options)
        require(
            callable(fn),
            name, "reduce", f"reduce() needs a function (accumulator, item) -> value, got {fn!r}",
        )  # fmt: skip
        for label, value in (("over", over), ("into", into)):
            require(
                isinstance(value, str) and bool(value),
                name, label, f"reduce({label}=...) must name a state field, got {value!r}",
            )  # fmt: skip
        self.fn = fn
        self.over = over
        self.into = into
        self.initial = initial

    async def execute(
        self, state: State, run: Run, frame: Frame, path: str, children: list[StepResult]
    ) -> dict[str, Any]:
        items = list_input(state, self.over, path, "reduces")
        rest = list(items)
        if self.initial is _NO_INITIAL:
            if not rest:
                raise PipelineError(
                    f"step {path!r} reduces an empty {self.over!r} and has no initial= value",
                    step=path,
                )
            acc = rest.pop(0)
        else:
            acc = self.initial
        for item in rest:
            acc = self.fn(acc, item)
            if inspect.isawaitable(acc):
                acc = await acc
        return {self.into: acc}
