"""The programs a server serves, by name, and how a request loads a new one.

A load request is JSON, one of two shapes::

    {"name": "qa2", "class": "dspex:Predict", "args": {"signature": "question -> answer"},
     "state": {...DSPy-format state, as program.save() writes...}}
    {"name": "pipe", "pipeline": [["native", "dspy.Predict", {"signature": "q -> a"}],
                                  {"template": "{{ a }}!", "output": "shout"}],
     "options": {"timeout": 30}}

A class path goes through the same allow-list as the DSPy workers' imports: its top-level
package must be ``dspex`` or one of ``dspy_import_roots`` (plus the server's own
``import_roots``), and the class must be a ``dspex.Module``. Pipeline steps name modules by
DSPy path (``"dspy.ChainOfThought"``), which the router builds natively or in a DSPy worker.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dspex import settings
from dspex.errors import PipelineSpecError, ProgramNotFound, SecurityError, StateError, UserError
from dspex.server.schema import ProgramSchema, describe

__all__ = ["ProgramEntry", "ProgramTable", "build_from_spec", "implementations"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ProgramEntry:
    """A served program with its derived schema; ``origin`` is ``"startup"`` or ``"loaded"``."""

    name: str
    program: Any
    schema: ProgramSchema
    origin: str = "startup"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": type(self.program).__name__,
            "implementation": getattr(self.program, "implementation", "native"),
            "modules": implementations(self.program),
            "origin": self.origin,
            "streaming": callable(getattr(self.program, "astream", None)),
            **self.schema.as_dict(),
        }


def implementations(program: Any) -> list[dict[str, str]]:
    """Each module inside ``program`` with its class and implementation (native or dspy)."""
    walk = getattr(program, "named_sub_modules", None)
    if walk is None:
        return [_row("self", program)]
    return [_row(name, module) for name, module in walk()]


def _row(name: str, module: Any) -> dict[str, str]:
    return {
        "path": name,
        "type": type(module).__name__,
        "implementation": str(getattr(module, "implementation", "native")),
    }


def _is_factory(obj: Any) -> bool:
    """A class or a routed factory (``dspex.Predict``) rather than a program instance."""
    from dspex.router.factories import RoutedFactory

    return isinstance(obj, type | RoutedFactory)


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(
            f"a program name is 1-64 letters, digits, '_', '-' or '.', got {name!r}",
            field="name",
        )
    return name


class ProgramTable:
    """Name -> program; adds and removes are atomic (one dict assignment)."""

    def __init__(self) -> None:
        self._entries: dict[str, ProgramEntry] = {}

    def add(
        self, name: str, program: Any, *, origin: str = "startup", replace: bool = False
    ) -> ProgramEntry:
        check_name(name)
        if _is_factory(program) or not callable(getattr(program, "acall", None)):
            raise UserError(
                f"{name!r} is not a program instance (a dspex.Module with acall), got {program!r}"
            )
        if name in self._entries and not replace:
            raise UserError(
                f'a program named {name!r} is already served (pass "replace": true)',
                field="name",
            )
        entry = ProgramEntry(name, program, describe(program), origin)
        self._entries = {**self._entries, name: entry}
        return entry

    def remove(self, name: str) -> ProgramEntry:
        entry = self.get(name)
        self._entries = {k: v for k, v in self._entries.items() if k != name}
        return entry

    def get(self, name: str) -> ProgramEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise ProgramNotFound(f"no program named {name!r} is served", program=name) from None

    def __iter__(self) -> Any:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)


# ---------------------------------------------------------------------------- loading


def _allowed_roots(extra: Iterable[str]) -> frozenset[str]:
    return frozenset({"dspex", *settings.current().dspy_import_roots, *extra})


def load_class(path: Any, import_roots: Iterable[str] = ()) -> Callable[..., Any]:
    """The ``dspex.Module`` subclass (or routed factory such as ``dspex.Predict``) named by
    ``path``, if the allow-list lets it be imported."""
    from dspex.bridge.convert import import_path, import_root
    from dspex.primitives.module import Module

    if not isinstance(path, str) or not path:
        raise UserError(f"'class' must be an import path like 'pkg.mod:Class', got {path!r}")
    allowed = _allowed_roots(import_roots)
    root = import_root(path)
    if root not in allowed:
        raise SecurityError(
            f"{path!r} is outside the import allow-list ({', '.join(sorted(allowed))}); "
            f"add {root!r} with dspex.configure(dspy_import_roots=[...]) or "
            f"`dspex serve --import-root {root}`",
            path=path,
        )
    from dspex.bridge.allowlist import Policy, split_path
    from dspex.router.factories import RoutedFactory

    module_name, parts = split_path(path)  # well formed, no private names
    if module_name == "dspex" and len(parts) == 1:  # dspex.Predict & co.: routed factories
        try:
            factory = import_path(path)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"cannot import {path!r}: {exc}", path=path) from None
        if isinstance(factory, RoutedFactory):
            return factory
    # the worker's rules: a class defined in an allowed package, reached through classes
    # only (never through re-exported modules), nothing denied or code-running unasked
    cls = Policy(allowed).resolve(path)
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise SecurityError(f"{path!r} is not a dspex.Module subclass", path=path)
    return cls


def build_from_spec(spec: Mapping[str, Any], import_roots: Iterable[str] = ()) -> Any:
    """The program a load request describes (see the module docstring)."""
    if "pipeline" in spec:
        return _pipeline(spec)
    cls = load_class(spec.get("class"), import_roots)
    args = spec.get("args") or {}
    if not isinstance(args, Mapping):
        raise UserError("'args' must be an object of constructor keyword arguments")
    program = cls(**args)
    state = spec.get("state")
    if state is not None:
        if not isinstance(state, dict):
            raise StateError("'state' must be a JSON object (as program.save() writes)")
        state = {k: v for k, v in state.items() if k != "metadata"}
        program.load_state(state)
    return program


_STEP_KINDS = ("template", "validate", "parallel", "map")
_IMPLEMENTATIONS = ("auto", "native", "dspy")


def _pipeline(spec: Mapping[str, Any]) -> Any:
    from dspex.pipelines import pipeline

    steps = spec["pipeline"]
    if not isinstance(steps, list) or not steps:
        raise PipelineSpecError("'pipeline' must be a non-empty list of steps", reason="steps")
    options = spec.get("options") or {}
    if not isinstance(options, Mapping):
        raise PipelineSpecError("'options' must be an object", reason="options")
    return pipeline([_step(s) for s in steps], name=str(spec.get("name", "pipeline")), **options)


def _step(spec: Any) -> Any:
    """A JSON step: ``[impl, "dspy.X", {kwargs}]`` or ``{"template"|"validate"|...: ...}``."""
    from dspex.pipelines import pipeline as pl

    if isinstance(spec, list):
        if len(spec) in (2, 3) and spec[0] in _IMPLEMENTATIONS and isinstance(spec[1], str):
            if not spec[1].startswith("dspy."):
                raise SecurityError(
                    f"a loaded pipeline names modules by DSPy path ('dspy.Predict'), got {spec[1]!r}"
                )
            return tuple(spec)
        raise PipelineSpecError(
            f"a list step is [implementation, 'dspy.Module', {{kwargs}}], got {spec!r}",
            reason="step",
        )
    if isinstance(spec, dict):
        kinds = [k for k in _STEP_KINDS if k in spec]
        if len(kinds) == 1:
            kind, options = kinds[0], {k: v for k, v in spec.items() if k != kinds[0]}
            if kind == "template":
                return pl.template(spec["template"], **options)
            if kind == "validate":
                return pl.validate(spec["validate"], **options)
            if kind == "parallel":
                return pl.parallel([_step(s) for s in spec["parallel"]], **options)
            if "as" in options:
                options["as_"] = options.pop("as")
            return pl.map(_step(spec["map"]), **options)
    raise PipelineSpecError(
        f"unknown pipeline step {spec!r}: use [impl, 'dspy.X', {{...}}] or an object with "
        f"one of {', '.join(_STEP_KINDS)}",
        reason="step",
    )
