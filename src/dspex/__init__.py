"""DSPex: LM programs with a DSPy-compatible API, run natively or on real DSPy in worker pools.

Importing ``dspex`` only defines names: each public object is imported from its submodule on
first access, so ``import dspex`` stays fast and native-only users never import DSPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dspex import errors
from dspex.errors import (
    AdapterParseError,
    CallError,
    CircuitOpenError,
    ConfigurationError,
    ContextWindowExceeded,
    DSPexError,
    ExecutionTimeout,
    ImplementationUnavailable,
    LMAuthError,
    LMBadRequestError,
    LMError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
    PipelineError,
    PipelineSpecError,
    PoolClosed,
    PoolError,
    PoolSaturated,
    PoolUnhealthy,
    ProtocolError,
    QueueTimeout,
    RemoteError,
    ResourceLimitExceeded,
    SecurityError,
    SessionLost,
    SignatureError,
    StateError,
    StepInputMissing,
    StepTimeout,
    StepValidationError,
    UserError,
    WorkerCrashed,
    is_retryable,
)
from dspex.settings import configure, context, current, reset_defaults

if TYPE_CHECKING:
    from dspex import evaluate, experimental, telemetry, testing
    from dspex.adapters import (
        Adapter,
        ChatAdapter,
        History,
        JSONAdapter,
        TwoStepAdapter,
        XMLAdapter,
    )
    from dspex.adapters.types import (
        Audio,
        Code,
        File,
        Image,
        Reasoning,
        Tool,
        ToolCallResults,
        ToolCalls,
        Type,
    )
    from dspex.bridge import DSPySession
    from dspex.evaluate import Evaluate
    from dspex.lm import LM, BaseLM
    from dspex.modules import KNN, ChainOfThought, Predict, majority
    from dspex.pipelines import Pipeline, PipelineResult, pipeline
    from dspex.primitives import Completions, Example, Module, Prediction, StreamChunk
    from dspex.router import dspy, module, register_native, registry
    from dspex.signatures import (
        InputField,
        OutputField,
        Signature,
        ensure_signature,
        infer_prefix,
        make_signature,
    )

__version__ = "0.1.0"

# public name -> submodule that defines it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "Adapter": "dspex.adapters",
    "Audio": "dspex.adapters.types",
    "Code": "dspex.adapters.types",
    "File": "dspex.adapters.types",
    "Image": "dspex.adapters.types",
    "Reasoning": "dspex.adapters.types",
    "BaseLM": "dspex.lm",
    "ChatAdapter": "dspex.adapters",
    "Completions": "dspex.primitives",
    "DSPySession": "dspex.bridge",
    "Evaluate": "dspex.evaluate",
    "Example": "dspex.primitives",
    "History": "dspex.adapters",
    "InputField": "dspex.signatures",
    "KNN": "dspex.modules",
    "JSONAdapter": "dspex.adapters",
    "LM": "dspex.lm",
    "Module": "dspex.primitives",
    "OutputField": "dspex.signatures",
    "Pipeline": "dspex.pipelines",
    "PipelineResult": "dspex.pipelines",
    "Prediction": "dspex.primitives",
    "Signature": "dspex.signatures",
    "StreamChunk": "dspex.primitives",
    "TwoStepAdapter": "dspex.adapters",
    "XMLAdapter": "dspex.adapters",
    "Tool": "dspex.adapters.types",
    "ToolCallResults": "dspex.adapters.types",
    "ToolCalls": "dspex.adapters.types",
    "Type": "dspex.adapters.types",
    "dspy": "dspex.router",
    "ensure_signature": "dspex.signatures",
    "infer_prefix": "dspex.signatures",
    "make_signature": "dspex.signatures",
    "module": "dspex.router",
    "majority": "dspex.modules",
    "pipeline": "dspex.pipelines",
    "register_native": "dspex.router",
    "registry": "dspex.router",
    "cache": "dspex.lm.cache",  # DSPy's dspy.cache: the active response cache
}
_SUBMODULES = frozenset({"evaluate", "experimental", "telemetry", "testing"})
# DSPy's module and optimizer names: built where the router says (native or a DSPy worker)
_ROUTED = frozenset(
    {
        "BestOfN",
        "BetterTogether",
        "BootstrapFewShot",
        "BootstrapFewShotWithRandomSearch",
        "BootstrapFinetune",
        "COPRO",
        "ChainOfThought",
        "CodeAct",
        "ColBERTv2",
        "Embeddings",
        "Flex",
        "GEPA",
        "KNNFewShot",
        "LabeledFewShot",
        "MIPROv2",
        "MultiChainComparison",
        "Parallel",
        "Predict",
        "ProgramOfThought",
        "ReAct",
        "ReActV2",
        "Refine",
        "Retrieve",
        "SIMBA",
    }
)

__all__ = [
    "KNN",
    "LM",
    "Adapter",
    "AdapterParseError",
    "Audio",
    "BaseLM",
    "CallError",
    "ChainOfThought",
    "ChatAdapter",
    "CircuitOpenError",
    "Code",
    "Completions",
    "ConfigurationError",
    "ContextWindowExceeded",
    "DSPexError",
    "DSPySession",
    "Evaluate",
    "Example",
    "ExecutionTimeout",
    "File",
    "History",
    "Image",
    "ImplementationUnavailable",
    "InputField",
    "JSONAdapter",
    "LMAuthError",
    "LMBadRequestError",
    "LMError",
    "LMRateLimitError",
    "LMServerError",
    "LMTimeoutError",
    "LMTransportError",
    "Module",
    "OutputField",
    "Pipeline",
    "PipelineError",
    "PipelineResult",
    "PipelineSpecError",
    "PoolClosed",
    "PoolError",
    "PoolSaturated",
    "PoolUnhealthy",
    "Predict",
    "Prediction",
    "ProtocolError",
    "QueueTimeout",
    "Reasoning",
    "RemoteError",
    "ResourceLimitExceeded",
    "SecurityError",
    "SessionLost",
    "Signature",
    "SignatureError",
    "StateError",
    "StepInputMissing",
    "StepTimeout",
    "StepValidationError",
    "StreamChunk",
    "Tool",
    "ToolCallResults",
    "ToolCalls",
    "TwoStepAdapter",
    "Type",
    "UserError",
    "WorkerCrashed",
    "XMLAdapter",
    "__version__",
    "configure",
    "context",
    "current",
    "dspy",
    "ensure_signature",
    "errors",
    "evaluate",
    "experimental",
    "infer_prefix",
    "is_retryable",
    "majority",
    "make_signature",
    "module",
    "pipeline",
    "register_native",
    "registry",
    "reset_defaults",
    "telemetry",
    "testing",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"dspex.{name}")
    elif name in _ROUTED:
        from dspex.router.factories import factory

        value = factory(name)
    else:
        from dspex._dspy_names import resolve  # the rest of DSPy's public names

        value = resolve(name)
        if value is None:
            raise AttributeError(f"module 'dspex' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    from dspex import _dspy_names as names

    extra = {*names.NATIVE, *names.PREFER_NATIVE, *names.ROUTED, *names.SUBMODULES}
    return sorted({*__all__, *_ROUTED, *extra})
