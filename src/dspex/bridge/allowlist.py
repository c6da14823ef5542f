"""What the DSPy worker may import, create and call on behalf of the parent.

The parent's Python is trusted; what reaches a worker through the pool protocol is not (a
pipeline spec loaded from a file or an HTTP request names classes and functions by import
path, and LM output flows into arguments). The rules, in the order they are checked:

1. An import path is ``"package.module:Qualname"`` (or ``"package.module.Name"``) whose
   every part is a public identifier: no ``_private`` module, class or attribute.
2. Its top-level package is an *allowed root* (``dspy``, ``dspex`` and the parent's
   ``dspy_import_roots``) — or, only where a type annotation is expected, a side-effect-free
   standard package (``datetime``, ``pydantic``...), and then only a class.
3. The path is walked through classes only, never through a module attribute of a module:
   ``dspex.bridge.host:os.system`` names ``os`` as an attribute of ``host`` and is refused.
4. The object found must be a class or a plain Python function *defined in* an allowed
   package (its ``__module__``): a re-export of ``subprocess.run`` or ``builtins.exec`` from
   an allowed module is refused, and so is any instance, bound method or builtin.
5. A deny-list holds even inside allowed packages: interpreters and pickle loaders
   (:data:`DENIED_MODULES`), and anything defined in :data:`DENIED_ROOTS` (``os``,
   ``subprocess``, ``builtins``, ``importlib``...), whatever the configuration says.
6. Code-running DSPy modules (:data:`CODE_RUNNING`, and their subclasses) are refused unless
   the parent opted in by name (``dspex.configure(allow_code_execution=["ProgramOfThought"])``);
   opted-in modules run their code in :class:`dspex.sandbox.PythonSandbox`, never in the worker.

The same module answers the parent's question "may this callable cross by path?"
(:func:`exportable`), so the parent never sends a path the worker would refuse.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import types
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from dspex.code_execution import CODE_RUNNING, parse_code_opt_in
from dspex.errors import SecurityError, UserError

__all__ = [
    "ALWAYS_ALLOWED",
    "CODE_RUNNING",
    "DENIED_MODULES",
    "DENIED_ROOTS",
    "TYPE_ONLY_ROOTS",
    "Policy",
    "exportable",
    "parse_code_opt_in",
    "split_path",
]

ALWAYS_ALLOWED = ("dspy", "dspex")
TYPE_ONLY_ROOTS = frozenset(
    {"datetime", "decimal", "uuid", "typing", "pydantic", "enum", "pathlib", "collections"}
)
"""Standard packages whose *classes* may be named where a type annotation is expected."""

DENIED_ROOTS = frozenset(
    {
        "builtins", "os", "posix", "nt", "sys", "subprocess", "importlib", "runpy", "code",
        "codeop", "ctypes", "cffi", "pickle", "_pickle", "marshal", "shelve", "shutil", "pty",
        "socket", "multiprocessing", "concurrent", "threading", "signal", "cloudpickle",
        "dill", "pydoc", "webbrowser", "inspect", "gc", "io", "tempfile", "zipimport", "pkgutil",
        "site", "sysconfig", "asyncio", "selectors", "mmap", "resource", "fcntl", "http",
        "urllib", "ftplib", "smtplib", "telnetlib", "xmlrpc", "dspex_sandbox_runner",
    }
)  # fmt: skip
"""Packages nothing may be imported from through the protocol, even if configured."""

DENIED_MODULES = frozenset(
    {
        "dspy.primitives.python_interpreter",  # Deno/Pyodide: DSPEx routes code to its sandbox
        "dspy.primitives.local_interpreter",  # runs code in the worker itself
        "dspy.primitives.local_interpreter_worker",
        "dspy.primitives.facade",
        "dspy.clients.lm_local",  # launches servers with subprocess
        "dspy.clients.cache",  # cloudpickle.load of a path
        "dspy.utils.saving",  # dspy.load: cloudpickle.load of a path
        "dspy.utils.pickle_by_value",
        "dspy.dsp.utils.settings",  # Settings.load: cloudpickle.load of a path
        "dspex.sandbox",  # the sandbox is driven by the worker, never by the protocol
        "dspex.pool",  # worker runtimes: a pool's target is imported unchecked
        "dspex.bridge",  # nested DSPy sessions and pools from inside a worker
        "dspex.settings",  # configure(pools=..., dspy_import_roots=...) would widen the rules
        "dspex.router",
        "dspex.pipelines",
        "dspex.cli",
        "dspex.demo",
    }
)
"""Modules (and their submodules) inside allowed packages that are never reachable."""


_DENIED_KWARGS = ("allow_pickle", "allow_unsafe_lm_state", "allow_custom_lm_class")
_DENIED_METHODS = frozenset({"save", "load"})  # files in the worker: state crosses by value
_TYPING_MODULES = frozenset({"typing", "types", "typing_extensions"})
Purpose = Literal["type", "object"]


def split_path(path: Any) -> tuple[str, list[str]]:
    """``(module, [qualname parts])`` of an import path; every part public and well formed."""
    if not isinstance(path, str):
        raise SecurityError(f"import path must be a string, got {type(path).__name__}")
    if ":" in path:
        module, _, qualname = path.partition(":")
    else:
        module, _, qualname = path.rpartition(".")
    parts = qualname.split(".")
    modparts = module.split(".")
    if not module or not qualname or not all(p.isidentifier() for p in (*modparts, *parts)):
        raise SecurityError(f"{path!r} is not an import path ('package.module:Name')", path=path)
    private = [p for p in (*modparts, *parts) if p.startswith("_")]
    if private:
        raise SecurityError(
            f"import of {path!r} refused: {private[0]!r} is a private name", path=path
        )
    return module, parts


def _root(module: str) -> str:
    return module.split(".")[0]


def _in(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _defined_in(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    return module if isinstance(module, str) else ""


@functools.lru_cache(maxsize=4096)
def _denied(module: str) -> bool:
    """Whether anything defined in ``module`` is unreachable (cached: a pure function of the
    name, asked on every call)."""
    return _root(module) in DENIED_ROOTS or _in(module, DENIED_MODULES)


def exportable(path: str, roots: Iterable[str]) -> bool:
    """Whether the parent may send the importable callable at ``path`` by path.

    Syntactic and deny-list checks only (the parent already imported the object): a path
    that fails here crosses as a callback into the parent instead.
    """
    try:
        module, _ = split_path(path)
    except SecurityError:
        return False
    allowed = frozenset((*ALWAYS_ALLOWED, *roots))
    return _root(module) in allowed and not _denied(module) and path not in CODE_RUNNING


class Policy:
    """The worker's allow-list: ``roots`` it may import from, code modules opted in."""

    def __init__(self, roots: Iterable[str] = (), code_opt_in: Iterable[str] = ()) -> None:
        self.roots = frozenset(r for r in (*ALWAYS_ALLOWED, *roots) if r not in DENIED_ROOTS)
        self.code_opt_in = frozenset(code_opt_in)
        # classes whose instances passed check_target (a pure function of the class)
        self._allowed_classes: set[type] = set()

    # ------------------------------------------------------------------ import paths
    def resolve(self, path: Any, purpose: Purpose = "object") -> Any:
        """The class or function ``path`` names, if every rule allows it (see module doc).

        ``purpose="type"`` is for annotations (classes from :data:`TYPE_ONLY_ROOTS` and
        typing aliases are accepted too); ``"object"`` for anything to be called or created.
        """
        module_name, parts = split_path(path)
        root = _root(module_name)
        type_only = purpose == "type" and root in TYPE_ONLY_ROOTS
        if root not in self.roots and not type_only:
            raise SecurityError(
                f"import of {path!r} refused: {root!r} is not an allowed import root "
                f"(allowed: {', '.join(sorted(self.roots))}); allow it in the parent with "
                f"dspex.configure(dspy_import_roots=[{root!r}])",
                path=path,
            )
        if _denied(module_name):
            raise SecurityError(f"import of {path!r} refused: {module_name} is denied", path=path)
        try:
            obj: Any = importlib.import_module(module_name)
            for i, part in enumerate(parts):
                # module attributes may be lazy (module __getattr__); class attributes are
                # read statically so no descriptor or property runs
                obj = getattr(obj, part) if i == 0 else inspect.getattr_static(obj, part)
                if i < len(parts) - 1 and not inspect.isclass(obj):
                    raise SecurityError(
                        f"import of {path!r} refused: {part!r} is not a class "
                        "(paths walk through classes only, never re-exported modules)",
                        path=path,
                    )
        except (ImportError, AttributeError) as exc:
            raise UserError(f"cannot import {path!r} in the DSPy worker: {exc}") from exc
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        self._check_object(path, obj, type_only=type_only, purpose=purpose)
        return obj

    def _check_object(self, path: str, obj: Any, *, type_only: bool, purpose: Purpose) -> None:
        typing_alias = purpose == "type" and type(obj).__module__ in _TYPING_MODULES
        if typing_alias and not inspect.isclass(obj):
            return  # List[int], Optional[...]: a typing construct, nothing to call
        if type_only and not inspect.isclass(obj):
            raise SecurityError(
                f"{path!r} may only be named as a type, not used as a callable", path=path
            )
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            raise SecurityError(
                f"import of {path!r} refused: only classes and functions can be named "
                f"(found a {type(obj).__name__})",
                path=path,
            )
        defined = _defined_in(obj)
        allowed = self.roots | (TYPE_ONLY_ROOTS if type_only else frozenset())
        if _root(defined) not in allowed or _denied(defined):
            raise SecurityError(
                f"import of {path!r} refused: it is defined in {defined or 'an unknown module'!r}, "
                "which is not an allowed package",
                path=path,
                defined_in=defined,
            )
        if inspect.isclass(obj):
            self.check_code_running(obj, path)

    def check_code_running(self, cls: type, path: str) -> None:
        """Refuse a code-running DSPy class (or subclass) the parent did not opt in to."""
        name = code_running_name(cls)
        if name is None or "*" in self.code_opt_in or name in self.code_opt_in:
            return
        raise SecurityError(
            f"{path!r} runs LM-generated code ({name}); opt in from trusted code with "
            f"dspex.configure(allow_code_execution=[{name!r}]) before the DSPy pool starts "
            "(its code then runs in dspex.sandbox, never in the worker)",
            path=path,
            reason="code_execution",
        )

    # ------------------------------------------------------------------ held objects
    def check_target(self, obj: Any, what: str) -> None:
        """Methods and attributes may only be used on objects of allowed classes."""
        cls = type(obj)
        if cls in self._allowed_classes:  # an instance of a class that passed before
            return
        if inspect.ismodule(obj):
            raise SecurityError(f"{what}: modules cannot be reached", attribute=what)
        instance = False
        if inspect.ismethod(obj):  # a bound method handed out earlier (optimizer.compile)
            if obj.__name__.startswith("_"):
                raise SecurityError(f"{what}: {obj.__name__!r} is private", attribute=what)
            owner = obj.__self__
            obj = owner if inspect.isclass(owner) else type(owner)
        elif inspect.isfunction(obj):
            defined = _defined_in(obj)
            if _root(defined) not in self.roots or _denied(defined) or obj.__name__[:1] == "_":
                raise SecurityError(f"{what} refused: function from {defined!r}", attribute=what)
            return
        elif not inspect.isclass(obj):
            obj, instance = cls, True
        defined = _defined_in(obj)
        if _root(defined) not in self.roots or _denied(defined):
            raise SecurityError(
                f"{what} refused: objects of {obj.__qualname__} (from {defined!r}) "
                "are not on the allow-list",
                attribute=what,
            )
        if instance:  # the verdict on a plain instance depends on its class alone
            self._allowed_classes.add(cls)

    def check_call(self, fn: Any, method: str, kwargs: Mapping[str, Any]) -> None:
        """A method about to be called on a held object: not a denied or builtin callable."""
        if method in _DENIED_METHODS:
            raise SecurityError(
                f"{method}() is refused through the DSPy bridge (it reads or writes files in "
                "the worker); use dump_state()/load_state() and save in the parent",
                method=method,
            )
        self.check_kwargs(kwargs, method)
        if inspect.ismodule(fn) or inspect.isclass(fn):
            raise SecurityError(f"{method!r} is not a method", method=method)
        func = getattr(fn, "__func__", fn)
        if isinstance(func, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            owner = getattr(func, "__self__", None)
            if owner is None or inspect.ismodule(owner):
                raise SecurityError(f"{method!r} is a builtin function", method=method)
            return  # a builtin method of an allowed object (list.append...)
        defined = _defined_in(func)
        if defined and _denied(defined):
            raise SecurityError(f"{method!r} is defined in denied {defined!r}", method=method)

    def check_kwargs(self, kwargs: Mapping[str, Any], what: str) -> None:
        """Refuse the keyword arguments that make DSPy unpickle or import by path."""
        for name in _DENIED_KWARGS:
            if kwargs.get(name):
                raise SecurityError(f"{what}({name}=True) is refused", argument=name)

    def adapter(self, dspy: Any, name: Any) -> Any:
        """The DSPy adapter class named ``name`` (a ``dspy.Adapter`` subclass, nothing else)."""
        cls = getattr(dspy, name, None) if isinstance(name, str) and name.isidentifier() else None
        if not (inspect.isclass(cls) and issubclass(cls, dspy.Adapter)):
            raise SecurityError(f"{name!r} is not a DSPy adapter", adapter=str(name))
        return cls


def code_running_name(cls: type) -> str | None:
    """The opt-in name of a code-running DSPy class ``cls`` derives from, if any."""
    for base in inspect.getmro(cls):
        key = f"{getattr(base, '__module__', '')}:{getattr(base, '__qualname__', '')}"
        if key in CODE_RUNNING:
            return CODE_RUNNING[key]
    return None
