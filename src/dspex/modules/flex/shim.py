"""The ``dspy`` a Flex's code sees inside its interpreter: constructors and calls are proxies.

:data:`SHIM_SOURCE` is Python run in the interpreter (never imported by DSPEx) before the
Flex's ``module_src``. Only JSON crosses the boundary, through two host tools the interpreter
registers by name:

- ``__dspy_construct__(kind, signature, attr_name, kwargs)``: the host builds a real
  predictor; the handle it answers is the attribute name (``self.classify`` -> ``"classify"``),
  or ``_dspy_anon_<n>`` for a predictor called without being assigned;
- ``__dspy_call__(handle, inputs)``: the host runs it and answers its output fields.

Tools handed to a predictor (``tools=[search]``) travel as ``{"__dspy_tool__": name}``,
``dspy.Signature(text, instructions)`` as ``{"__dspy_sig__": True, ...}``. Every name the shim
defines starts with ``_dspy`` so it cannot collide with the Flex's code, and tool names in that
namespace are refused host-side (:func:`~dspex.modules.flex.context.is_reserved_sandbox_name`).

``import dspy`` in the code gives this module. In a separate interpreter process it is
registered in ``sys.modules``; in an interpreter that runs in the host's own memory (the host
injects a token only its own process knows) only this namespace's ``__import__`` is redirected,
so the host's modules are untouched.
"""

from __future__ import annotations

__all__ = [
    "BRIDGEABLE_KINDS",
    "CALL_TOOL",
    "CONSTRUCT_TOOL",
    "HOST_TOKEN_VAR",
    "RESULT_FN",
    "SHIM_SOURCE",
    "SIGNATURE_MARKER",
    "TOOL_MARKER",
]

CONSTRUCT_TOOL = "__dspy_construct__"
CALL_TOOL = "__dspy_call__"
SIGNATURE_MARKER = "__dspy_sig__"
TOOL_MARKER = "__dspy_tool__"
HOST_TOKEN_VAR = "__dspy_host_token"
RESULT_FN = "_dspy_result_json"
"""Shim function the driver calls on ``forward``'s return: its fields as one JSON string."""

BRIDGEABLE_KINDS = ("Predict", "ChainOfThought", "RLM", "CodeAct", "ProgramOfThought", "ReAct", "ReActV2")  # fmt: skip
"""The predictor classes the code may construct (built host-side)."""

SHIM_SOURCE = f'''
import json as _dspy_json
import sys as _dspy_sys
import types as _dspy_types

_DSPY_KINDS = {BRIDGEABLE_KINDS!r}


def _dspy_tool_call(_dspy_name, **_dspy_kwargs):
    return globals()[_dspy_name](**_dspy_kwargs)


class _DspyPrediction:
    """Output fields of a predictor call, or the value forward returns."""

    def __init__(self, **fields):
        object.__setattr__(self, "_fields", dict(fields))

    def __getattr__(self, name):
        fields = object.__getattribute__(self, "_fields")
        if name in fields:
            return fields[name]
        raise AttributeError(name)

    def __getitem__(self, name):
        return object.__getattribute__(self, "_fields")[name]

    def __contains__(self, name):
        return name in object.__getattribute__(self, "_fields")

    def get(self, name, default=None):
        return object.__getattribute__(self, "_fields").get(name, default)

    def keys(self):
        return object.__getattribute__(self, "_fields").keys()

    def values(self):
        return object.__getattribute__(self, "_fields").values()

    def items(self):
        return object.__getattribute__(self, "_fields").items()

    def toDict(self):
        return dict(object.__getattribute__(self, "_fields"))

    def __repr__(self):
        return "Prediction(" + repr(object.__getattribute__(self, "_fields")) + ")"


class _DspyHandle:
    """A predictor living on the host; calling it runs it there."""

    def __init__(self, handle):
        object.__setattr__(self, "_handle", handle)

    def __call__(self, **inputs):
        handle = object.__getattribute__(self, "_handle")
        fields = _dspy_tool_call({CALL_TOOL!r}, handle=handle, inputs=inputs)
        return _DspyPrediction(**(fields or {{}}))


_dspy_anonymous = [0]


def _dspy_construct(kind, signature, name, kwargs):
    handle = _dspy_tool_call(
        {CONSTRUCT_TOOL!r}, kind=kind, signature=signature, attr_name=name, kwargs=kwargs
    )
    return _DspyHandle(handle)


class _DspyPending:
    """A constructor's result until it is assigned to a module attribute (its handle name)."""

    def __init__(self, kind, signature, kwargs):
        self.kind, self.signature, self.kwargs, self.handle = kind, signature, kwargs, None

    def __call__(self, **inputs):
        if self.handle is None:  # used without being assigned: an anonymous predictor
            _dspy_anonymous[0] += 1
            name = "_dspy_anon_" + str(_dspy_anonymous[0])
            self.handle = _dspy_construct(self.kind, self.signature, name, self.kwargs)
        return self.handle(**inputs)


class _DspyModule:
    def __init__(self, *args, **kwargs):
        pass

    def __setattr__(self, name, value):
        if isinstance(value, _DspyPending):
            value = _dspy_construct(value.kind, value.signature, name, value.kwargs)
        object.__setattr__(self, name, value)

    def __call__(self, **inputs):
        return self.forward(**inputs)


def _dspy_name_of(tool):
    for name, value in list(globals().items()):
        if value is tool and not name.startswith("_"):
            return name
    return getattr(tool, "__name__", type(tool).__name__)


def _dspy_encode(value):
    if callable(value):
        return {{{TOOL_MARKER!r}: _dspy_name_of(value)}}
    if isinstance(value, (list, tuple)):
        return [_dspy_encode(v) for v in value]
    if isinstance(value, dict):
        return {{k: _dspy_encode(v) for k, v in value.items()}}
    return value


def _dspy_constructor(kind):
    def build(signature=None, **kwargs):
        encoded = {{k: _dspy_encode(v) for k, v in kwargs.items()}}
        return _DspyPending(kind, signature, encoded)

    build.__name__ = kind
    return build


def _dspy_make_signature(signature, instructions=None, **kwargs):
    return {{{SIGNATURE_MARKER!r}: True, "signature": signature, "instructions": instructions}}


def _dspy_result_json(value):
    fields = value._fields if isinstance(value, _DspyPrediction) else value
    return _dspy_json.dumps(fields)


_dspy_facade = _dspy_types.ModuleType("dspy")
_dspy_facade.Module = _DspyModule
_dspy_facade.Prediction = _DspyPrediction
_dspy_facade.Signature = _dspy_make_signature
_dspy_facade.Tool = lambda func, **kwargs: func
for _dspy_kind in _DSPY_KINDS:
    setattr(_dspy_facade, _dspy_kind, _dspy_constructor(_dspy_kind))
dspy = _dspy_facade


def _dspy_in_host():
    bridge = _dspy_sys.modules.get("dspex.modules.flex.bridge")
    return getattr(bridge, "HOST_TOKEN", None) == globals().get({HOST_TOKEN_VAR!r})


if _dspy_in_host():
    _dspy_builtins = globals()["__builtins__"]
    _dspy_builtins = dict(_dspy_builtins if isinstance(_dspy_builtins, dict) else vars(_dspy_builtins))
    _dspy_host_import = _dspy_builtins["__import__"]

    def _dspy_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.split(".")[0] == "dspy":
            if name != "dspy":
                raise ModuleNotFoundError("No module named " + repr(name), name=name)
            return _dspy_facade
        return _dspy_host_import(name, globals, locals, fromlist, level)

    _dspy_builtins["__import__"] = _dspy_import
    globals()["__builtins__"] = _dspy_builtins
else:
    _dspy_sys.modules["dspy"] = _dspy_facade
'''
