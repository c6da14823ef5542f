"""The implementation registry: for each module kind, its native class and its DSPy class.

``dspex.registry()`` lists every kind with the implementation the router would pick now and
why. Users and plugins add native implementations at runtime::

    dspex.register_native("react", "myplugin.react:FastReAct")   # or the class itself
    agent = dspex.module("react", "question -> answer", tools=[search])   # now native

Native implementations are named by import path and imported only when used, so the
registry costs nothing at ``import dspex``.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from dataclasses import dataclass
from typing import Any

from dspex.errors import ConfigurationError, UserError

__all__ = ["Entry", "Registry", "Row", "register_native", "registry"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One module kind: where its implementations live."""

    kind: str
    native: str | None
    """``"module:Class"`` of the native implementation (``None``: DSPy only)."""
    dspy: str | None
    """Dotted path of the DSPy class (``None``: native only)."""
    name: str | None = None
    """The DSPy-compatible public name (``dspex.ReAct``) that builds this kind."""
    note: str = ""
    state_compatible: bool = False
    """Native and DSPy objects of this kind read each other's ``dump_state()``: a DSPy one can
    become native (``to_native``, call-time fallback) and a native one can be sent to DSPy."""
    added_outputs: tuple[str, ...] = ()
    """Output fields the module adds to the user's signature (ChainOfThought's ``reasoning``):
    removed before a signature read from one implementation builds the other."""
    dspy_attributes: tuple[tuple[str, str], ...] = ()
    """Attributes the native class has on itself but DSPy keeps deeper (``demos`` ->
    ``predict.demos``): how a remote handle reaches them."""

    @property
    def dspy_class_name(self) -> str | None:
        """The DSPy class's own name (``"ChainOfThought"``), however its module is spelled."""
        return self.dspy.rpartition(".")[2] if self.dspy else None


@dataclass(frozen=True, slots=True)
class Row:
    """What ``dspex.registry()`` reports for a kind."""

    kind: str
    native: str | None
    dspy: str | None
    default: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "native": self.native,
            "dspy": self.dspy,
            "default": self.default,
            "reason": self.reason,
        }


_BUILTIN: tuple[Entry, ...] = (
    Entry("signature", "dspex.signatures:Signature", "dspy.Signature", note="string/class/dict forms"),
    Entry("template", "dspex.pipelines.spec:template", None, note="sandboxed Jinja2 pipeline step"),
    Entry("validator", "dspex.pipelines.spec:validate", None, note="pipeline step checking values against a signature"),
    Entry("metrics", None, "dspy.evaluate.answer_exact_match", note="any DSPy metric by path"),
    Entry("predict", "dspex.modules.predict:Predict", "dspy.Predict", "Predict", state_compatible=True),
    Entry(
        "chain_of_thought", "dspex.modules.chain_of_thought:ChainOfThought", "dspy.ChainOfThought", "ChainOfThought",
        state_compatible=True, added_outputs=("reasoning",),
        dspy_attributes=(("demos", "predict.demos"), ("signature", "predict.signature")),
    ),
    Entry("react", "dspex.modules.react:ReAct", "dspy.ReAct", "ReAct"),
    Entry("react_v2", "dspex.modules.react_v2:ReActV2", "dspy.ReActV2", "ReActV2", "tool-calling agent ending in submit"),
    Entry("program_of_thought", "dspex.modules.program_of_thought:ProgramOfThought", "dspy.ProgramOfThought", "ProgramOfThought", "generated code runs in dspex.sandbox"),
    Entry("code_act", "dspex.modules.code_act:CodeAct", "dspy.CodeAct", "CodeAct", "generated code runs in dspex.sandbox"),
    Entry("flex", "dspex.modules.flex.flex:Flex", "dspy.Flex", "Flex", "optimizable module code runs in dspex.sandbox"),
    Entry("multi_chain_comparison", "dspex.modules.multi_chain_comparison:MultiChainComparison", "dspy.MultiChainComparison", "MultiChainComparison"),
    Entry("best_of_n", "dspex.modules.best_of_n:BestOfN", "dspy.BestOfN", "BestOfN"),
    Entry("refine", "dspex.modules.refine:Refine", "dspy.Refine", "Refine"),
    Entry("parallel", "dspex.modules.parallel:Parallel", "dspy.Parallel", "Parallel"),
    Entry("evaluate", "dspex.evaluate.evaluate:Evaluate", "dspy.Evaluate", "Evaluate"),
    Entry("labeled_few_shot", "dspex.teleprompt.vanilla:LabeledFewShot", "dspy.LabeledFewShot", "LabeledFewShot"),
    Entry("bootstrap_few_shot", "dspex.teleprompt.bootstrap:BootstrapFewShot", "dspy.BootstrapFewShot", "BootstrapFewShot"),
    Entry("bootstrap_few_shot_with_random_search", "dspex.teleprompt.random_search:BootstrapFewShotWithRandomSearch", "dspy.BootstrapFewShotWithRandomSearch", "BootstrapFewShotWithRandomSearch"),
    Entry("knn_few_shot", "dspex.teleprompt.knn_fewshot:KNNFewShot", "dspy.KNNFewShot", "KNNFewShot"),
    Entry("copro", "dspex.teleprompt.copro_optimizer:COPRO", "dspy.COPRO", "COPRO"),
    Entry("mipro_v2", "dspex.teleprompt.mipro_optimizer_v2:MIPROv2", "dspy.MIPROv2", "MIPROv2"),
    Entry("simba", "dspex.teleprompt.simba:SIMBA", "dspy.SIMBA", "SIMBA"),
    Entry("gepa", "dspex.teleprompt.gepa.gepa:GEPA", "dspy.GEPA", "GEPA"),
    Entry("bootstrap_finetune", "dspex.teleprompt.bootstrap_finetune:BootstrapFinetune", "dspy.BootstrapFinetune", "BootstrapFinetune", "fine-tunes through the LM's provider"),
    Entry("better_together", "dspex.teleprompt.bettertogether:BetterTogether", "dspy.BetterTogether", "BetterTogether"),
    Entry("retrieve", "dspex.retrievers.retrieve:Retrieve", "dspy.Retrieve", "Retrieve", "passages from settings.rm", state_compatible=True),
    Entry("colbert_v2", "dspex.dsp.colbertv2:ColBERTv2", "dspy.ColBERTv2", "ColBERTv2", "HTTP client of a ColBERTv2 server"),
    Entry("embeddings", None, "dspy.retrievers.Embeddings", "Embeddings"),
)  # fmt: skip


class Registry:
    """Module kinds and their implementations (thread-safe; one per process: :func:`registry`)."""

    def __init__(self, entries: tuple[Entry, ...] = _BUILTIN) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {e.kind: e for e in entries}
        self._classes: dict[str, Any] = {}

    def __contains__(self, kind: object) -> bool:
        return kind in self._entries

    def kinds(self) -> list[str]:
        return list(self._entries)

    def entry(self, kind: str) -> Entry:
        try:
            return self._entries[kind]
        except KeyError:
            raise UserError(
                f"unknown module kind {kind!r}; known: {', '.join(self._entries)}"
            ) from None

    def by_name(self, name: str) -> Entry | None:
        """The entry whose DSPy-compatible public name is ``name`` (``"ReAct"``)."""
        return next((e for e in self._entries.values() if e.name == name), None)

    def by_dspy(self, target: str) -> Entry | None:
        """The entry whose DSPy class is ``target`` (``"dspy.ChainOfThought"``)."""
        return next((e for e in self._entries.values() if e.dspy == target), None)

    def by_dspy_type(self, type_path: str) -> Entry | None:
        """The entry for a DSPy class however its path is spelled (a worker reports
        ``"dspy.predict.chain_of_thought.ChainOfThought"`` for ``"dspy.ChainOfThought"``)."""
        exact = self.by_dspy(type_path)
        if exact is not None or not type_path.startswith("dspy."):
            return exact
        name = type_path.rpartition(".")[2]
        return next((e for e in self._entries.values() if e.dspy_class_name == name), None)

    def kind_of(self, obj: Any) -> str | None:
        """The kind whose native class ``obj`` is an instance of (exact class first)."""
        cls = obj if isinstance(obj, type) else type(obj)
        with self._lock:
            loaded = list(self._classes.items())
        for kind, native in loaded:
            if native is cls:
                return kind
        for entry in self._entries.values():
            if entry.native and entry.native == f"{cls.__module__}:{cls.__qualname__}":
                return entry.kind
        return None

    def has_native(self, kind: str) -> bool:
        return self.entry(kind).native is not None

    def has_dspy(self, kind: str) -> bool:
        return self.entry(kind).dspy is not None and dspy_installed()

    def native_class(self, kind: str) -> Any:
        """The native implementation of ``kind`` (imported on first use)."""
        cls = self._classes.get(kind)
        if cls is None:
            path = self.entry(kind).native
            if path is None:
                raise UserError(f"{kind!r} has no native implementation")
            module, _, name = path.partition(":")
            cls = getattr(importlib.import_module(module), name)
            self._classes[kind] = cls
        return cls

    def register_native(self, kind: str, impl: Any, *, dspy: str | None = None) -> None:
        """Make ``impl`` (a class or ``"module:Class"``) the native implementation of ``kind``.

        A new kind needs ``dspy=`` only if it also has a DSPy class.
        """
        if isinstance(impl, str):
            if ":" not in impl:
                raise ConfigurationError(
                    f"a native implementation path looks like 'package.module:Class', got {impl!r}"
                )
            path, cls = impl, None
        elif callable(impl):
            path, cls = f"{impl.__module__}:{impl.__qualname__}", impl
        else:
            raise ConfigurationError(
                f"native implementation must be a class or a path, got {impl!r}"
            )
        with self._lock:
            old = self._entries.get(kind)
            self._entries[kind] = Entry(
                kind,
                path,
                dspy if dspy is not None else (old.dspy if old else None),
                old.name if old else None,
                "registered at runtime",
                # a plugin's state format is its own business: never assumed DSPy's
                added_outputs=old.added_outputs if old else (),
                dspy_attributes=old.dspy_attributes if old else (),
            )
            self._classes.pop(kind, None)
            if cls is not None:
                self._classes[kind] = cls

    def unregister_native(self, kind: str) -> None:
        """Restore the built-in native implementation of ``kind`` (or none)."""
        builtin = {e.kind: e for e in _BUILTIN}.get(kind)
        with self._lock:
            if builtin is None:
                self._entries.pop(kind, None)
            else:
                self._entries[kind] = builtin
            self._classes.pop(kind, None)

    def rows(self) -> list[Row]:
        """Every kind with the implementation chosen under the current settings, and why."""
        from dspex.router import explain

        rows = []
        for entry in self._entries.values():
            default, reason = explain(entry.kind)
            rows.append(Row(entry.kind, entry.native, entry.dspy, default, reason))
        return rows


_dspy_installed: bool | None = None


def dspy_installed() -> bool:
    """Whether the ``dspy`` extra is installed (checked once, without importing DSPy)."""
    global _dspy_installed
    if _dspy_installed is None:
        _dspy_installed = importlib.util.find_spec("dspy") is not None
    return _dspy_installed


_REGISTRY = Registry()


def registry() -> list[Row]:
    """``dspex.registry()``: the implementations of every module kind and the default now."""
    return _REGISTRY.rows()


def register_native(kind: str, impl: Any, *, dspy: str | None = None) -> None:
    """``dspex.register_native(kind, cls_or_path)``: see :meth:`Registry.register_native`."""
    _REGISTRY.register_native(kind, impl, dspy=dspy)
