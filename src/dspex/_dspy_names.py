"""Every public name of DSPy 3.4.1 on ``dspex``: where it comes from, native or routed.

``import dspex as dspy`` must resolve each name ``dir(dspy)`` lists. A name is

- **native**: DSPex's own object (``NATIVE``);
- **native when built, else routed** (``PREFER_NATIVE``): the first DSPex module that defines
  it (the adapters and the module library add these as they are ported), otherwise routed;
- **routed**: DSPy's object run in a DSPy worker (``ROUTED``). Module kinds in the router's
  registry are built by the router (native as soon as a native class is registered); any other
  name is built with ``dspex.dspy("dspy.<Name>", ...)`` in a worker;
- a **submodule** (``SUBMODULES``): a DSPex package in DSPy's layout.

``docs/compatibility.md`` is the table of this file; ``tests/runtime/test_public_names.py``
checks that both agree with ``dir(dspy)``.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

__all__ = [
    "NATIVE",
    "PREFER_NATIVE",
    "ROUTED",
    "SUBMODULES",
    "RoutedName",
    "documented_status",
    "markdown_rows",
    "resolve",
    "status",
]

NATIVE: dict[str, str] = {
    # code interpreters: DSPy's protocol over DSPex's sandbox
    "CodeExecutionError": "dspex.errors:CodeExecutionError",
    "CodeInterpreter": "dspex.primitives.code_interpreter:CodeInterpreter",
    "CodeInterpreterError": "dspex.errors:CodeInterpreterError",
    "FinalOutput": "dspex.primitives.code_interpreter:FinalOutput",
    "PythonInterpreter": "dspex.primitives.python_interpreter:PythonInterpreter",
    "resolve_interpreter_factory": "dspex.primitives.code_interpreter:resolve_interpreter_factory",
    "KNN": "dspex.modules.knn:KNN",
    "Embedder": "dspex.clients.embedding:Embedder",
    # errors: DSPy's names in DSPex's one tree
    "AdapterParseError": "dspex.errors:AdapterParseError",
    "ContextWindowExceededError": "dspex.errors:ContextWindowExceededError",
    "DSPyError": "dspex.errors:DSPyError",
    "LMAuthError": "dspex.errors:LMAuthError",
    "LMBillingError": "dspex.errors:LMBillingError",
    "LMCollectionLimitError": "dspex.errors:LMCollectionLimitError",
    "LMConfigurationError": "dspex.errors:LMConfigurationError",
    "LMError": "dspex.errors:LMError",
    "LMInvalidRequestError": "dspex.errors:LMInvalidRequestError",
    "LMLockTimeoutError": "dspex.errors:LMLockTimeoutError",
    "LMNotConfiguredError": "dspex.errors:LMNotConfiguredError",
    "LMProviderError": "dspex.errors:LMProviderError",
    "LMRateLimitError": "dspex.errors:LMRateLimitError",
    "LMServerError": "dspex.errors:LMServerError",
    "LMStreamAssemblyError": "dspex.errors:LMStreamAssemblyError",
    "LMTimeoutError": "dspex.errors:LMTimeoutError",
    "LMTransportError": "dspex.errors:LMTransportError",
    "LMUnexpectedError": "dspex.errors:LMUnexpectedError",
    "LMUnsupportedFeatureError": "dspex.errors:LMUnsupportedFeatureError",
    "LMUnsupportedModelError": "dspex.errors:LMUnsupportedModelError",
    "is_retryable_lm_error": "dspex.errors:is_retryable_lm_error",
    # program layer
    "Adapter": "dspex.adapters:Adapter",
    "BaseLM": "dspex.lm:BaseLM",
    "BaseModule": "dspex.primitives.module:Module",
    "ChatAdapter": "dspex.adapters:ChatAdapter",
    "Completions": "dspex.primitives:Completions",
    "Example": "dspex.primitives:Example",
    "History": "dspex.adapters:History",
    "InputField": "dspex.signatures:InputField",
    "JSONAdapter": "dspex.adapters:JSONAdapter",
    "LM": "dspex.lm:LM",
    "Module": "dspex.primitives:Module",
    "OutputField": "dspex.signatures:OutputField",
    "Prediction": "dspex.primitives:Prediction",
    "Signature": "dspex.signatures:Signature",
    "SignatureMeta": "dspex.signatures:SignatureMeta",
    "ensure_signature": "dspex.signatures:ensure_signature",
    "infer_prefix": "dspex.signatures:infer_prefix",
    "make_signature": "dspex.signatures:make_signature",
    # settings, history, usage, helpers
    "configure": "dspex.settings:configure",
    "context": "dspex.settings:context",
    "load_settings": "dspex.settings:load",
    "configure_cache": "dspex.utils.logs:configure_cache",
    "configure_dspy_loggers": "dspex.utils.logs:configure_dspy_loggers",
    "disable_litellm_logging": "dspex.utils.logs:disable_litellm_logging",
    "disable_logging": "dspex.utils.logs:disable_logging",
    "enable_litellm_logging": "dspex.utils.logs:enable_litellm_logging",
    "enable_logging": "dspex.utils.logs:enable_logging",
    "inspect_history": "dspex.utils.inspect_history:inspect_history",
    "track_usage": "dspex.lm.usage:track_usage",
    "asyncify": "dspex.utils.asyncify:asyncify",
    "syncify": "dspex.utils.syncify:syncify",
    "streamify": "dspex.streaming:streamify",
    "load": "dspex.utils.saving:load",
    # optimizers (the others are module kinds in the router's registry)
    "BootstrapRS": "dspex.teleprompt:BootstrapRS",
    "Ensemble": "dspex.teleprompt:Ensemble",
    "bootstrap_trace_data": "dspex.teleprompt.bootstrap_trace:bootstrap_trace_data",
    # fine-tuning: the LM's training/launch provider interface
    "Provider": "dspex.clients.provider:Provider",
    "TrainingJob": "dspex.clients.provider:TrainingJob",
}

PREFER_NATIVE: dict[str, tuple[str, ...]] = {
    # types and tools: native once dspex.adapters defines them
    "Audio": ("dspex.adapters",),
    "Code": ("dspex.adapters",),
    "File": ("dspex.adapters",),
    "Image": ("dspex.adapters",),
    "Reasoning": ("dspex.adapters",),
    "Tool": ("dspex.adapters",),
    "ToolCallResults": ("dspex.adapters",),
    "ToolCalls": ("dspex.adapters",),
    "Type": ("dspex.adapters",),
    "TwoStepAdapter": ("dspex.adapters",),
    "XMLAdapter": ("dspex.adapters",),
    "majority": ("dspex.modules",),
}

ROUTED: dict[str, str] = {
    # module kinds: built by the router (native once registered) — see router/kinds.py
    **{
        n: f"dspy.{n}"
        for n in (
            "BestOfN",
            "BootstrapFewShot",
            "ChainOfThought",
            "CodeAct",
            "Predict",
            "BetterTogether",
            "BootstrapFewShotWithRandomSearch",
            "BootstrapFinetune",
            "COPRO",
            "ColBERTv2",
            "Embeddings",
            "Evaluate",
            "Flex",
            "GEPA",
            "KNNFewShot",
            "LabeledFewShot",
            "MIPROv2",
            "MultiChainComparison",
            "Parallel",
            "ProgramOfThought",
            "ReAct",
            "ReActV2",
            "Refine",
            "Retrieve",
            "SIMBA",
        )
    },
    # DSPy only for now: built in a DSPy worker with dspex.dspy("dspy.<Name>", ...)
    **{
        n: f"dspy.{n}"
        for n in (
            "AvatarOptimizer",
            "BootstrapFewShotWithOptuna",
            "EmbeddingsWithScores",
            "InferRules",
            "LocalInterpreter",
            "OldField",
            "OldInputField",
            "OldOutputField",
            "RLM",
            "SandboxSerializable",
        )
    },
}

SUBMODULES: dict[str, str] = {
    "adapters": "dspex.adapters",
    "clients": "dspex.clients",
    "dsp": "dspex.dsp",
    "evaluate": "dspex.evaluate",
    "experimental": "dspex.experimental",
    "lm15": "dspex.clients",
    "predict": "dspex.predict",
    "primitives": "dspex.primitives",
    "propose": "dspex.propose",
    "retrievers": "dspex.retrievers",
    "settings": "dspex.settings",
    "signatures": "dspex.signatures",
    "streaming": "dspex.streaming",
    "teleprompt": "dspex.teleprompt",
    "threading": "threading",
    "utils": "dspex.utils",
}


class RoutedName:
    """A DSPy name without a DSPex implementation: calling it builds DSPy's object in a DSPy
    worker (``dspex.dspy("dspy.<Name>", ...)``); module kinds go through the router instead."""

    def __init__(self, name: str, target: str) -> None:
        self.__name__ = self.__qualname__ = name
        self.target = target
        self.__doc__ = f"DSPy's ``{target}``, routed: built in a DSPy worker."

    def __repr__(self) -> str:
        return f"<routed dspex.{self.__name__} ({self.target} in a DSPy worker)>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from dspex.router import dspy

        return dspy(self.target, *args, **kwargs)

    def __instancecheck__(self, instance: object) -> bool:
        return getattr(instance, "_type", None) == self.target


def _import(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _missing_package(name: str, exc: ModuleNotFoundError) -> bool:
    return exc.name is not None and (name == exc.name or name.startswith(exc.name + "."))


def _routed_package(name: str, path: str) -> types.ModuleType:
    """A stand-in for a DSPEx package not built yet: its DSPy names, routed."""
    module = types.ModuleType(path, f"DSPy's dspy.{name}: routed names (no native package yet).")

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        value = resolve(attr)
        if value is None:
            return RoutedName(attr, f"dspy.{name}.{attr}")
        return value

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    return module


def resolve(name: str) -> Any:
    """The object ``dspex.<name>`` stands for (``None`` if DSPy has no such public name)."""
    if name in NATIVE:
        return _import(NATIVE[name])
    if name in SUBMODULES:
        path = SUBMODULES[name]
        try:
            return importlib.import_module(path)
        except ModuleNotFoundError as exc:
            if not _missing_package(path, exc):
                raise
            return _routed_package(name, path)
    if name in PREFER_NATIVE:
        for module in PREFER_NATIVE[name]:
            try:
                return getattr(importlib.import_module(module), name)
            except (AttributeError, ModuleNotFoundError):
                continue
        return RoutedName(name, f"dspy.{name}")
    if name in ROUTED:
        from dspex.router.kinds import _REGISTRY

        if _REGISTRY.by_name(name) is not None:
            from dspex.router.factories import factory

            return factory(name)
        return RoutedName(name, ROUTED[name])
    return None


def status(name: str) -> str:
    """``native``, ``routed`` or ``module`` for a DSPy public name (``unknown`` otherwise)."""
    if name in NATIVE:
        return "native"
    if name in SUBMODULES:
        return "module"
    if name in PREFER_NATIVE:
        value = resolve(name)
        return "routed" if isinstance(value, RoutedName) else "native"
    if name in ROUTED:
        from dspex.router.kinds import _REGISTRY

        entry = _REGISTRY.by_name(name)
        return "native" if entry is not None and entry.native is not None else "routed"
    return "unknown"


def documented_status(name: str) -> str:
    """The status ``docs/compatibility.md`` gives ``name``: ``native``, ``routed``, ``module``,
    or ``native-when-built`` (routed until DSPex has a native implementation)."""
    if name in PREFER_NATIVE:
        return "native-when-built"
    if name in ROUTED:
        from dspex.router.kinds import _REGISTRY

        entry = _REGISTRY.by_name(name)
        if entry is not None:
            return "native" if name in ("Predict", "ChainOfThought") else "native-when-built"
    return status(name)


def markdown_rows(names: list[str]) -> list[str]:
    """The rows of the table in ``docs/compatibility.md`` for ``names``."""
    rows = []
    for name in names:
        if name in NATIVE:
            where = f"`{NATIVE[name].split(':')[0]}`"
        elif name in SUBMODULES:
            where = f"`{SUBMODULES[name]}`"
        elif name in PREFER_NATIVE:
            where = f"`{'`, `'.join(PREFER_NATIVE[name])}` when it defines it; DSPy's in a worker until then"
        elif name in ROUTED and documented_status(name) != "routed":
            where = "router kind: native implementation if registered, else DSPy in a worker"
        else:
            where = f'`dspex.dspy("{ROUTED.get(name, name)}", ...)` in a DSPy worker'
        rows.append(f"| `{name}` | {documented_status(name)} | {where} |")
    return rows
