"""DSPy's ``Hasher.hash`` of a tuple of demos, computed on DSPex ``Example`` objects.

BootstrapFewShot seeds a ``random.Random`` with ``sha256(pickle.dumps(tuple(demos)))`` when
one predictor runs several times for one example. To draw the same demo as DSPy, the bytes
must be the ones DSPy pickles: each demo as a ``dspy.primitives.example.Example`` whose
``__dict__`` is ``{"_store": ..., "_demos": [], "_input_keys": ...}``, with the same object
identities where pickle's memo can see them (field names are interned, as in DSPy). A stand-in class with
that ``__dict__`` is pickled with the class reference written under DSPy's name, so the hash
is computed without importing DSPy.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import sys
from collections.abc import Sequence
from typing import Any

from dspex.primitives.example import Example

__all__ = ["dspy_hash_demos"]

_DSPY_EXAMPLE = ("dspy.primitives.example", "Example")


def _key(key: Any) -> Any:
    # Pickle memoizes by object identity. DSPy's field names come from signatures, keyword
    # arguments and literals, which Python interns: equal names are one object there.
    return sys.intern(key) if type(key) is str else key


class _DSPyExample:
    """Pickles exactly as a ``dspy.Example`` with the same store would."""


def _stand_in(value: Any) -> Any:
    if isinstance(value, Example):
        obj = _DSPyExample()
        keys = value._input_keys
        obj.__dict__.update(
            _store={_key(k): _stand_in(v) for k, v in value._store.items()},
            _demos=[],
            _input_keys=None if keys is None else set(keys),
        )
        return obj
    if isinstance(value, list):
        return [_stand_in(v) for v in value]
    if isinstance(value, dict):
        return {k: _stand_in(v) for k, v in value.items()}
    return value


# The pure-Python pickler lets a subclass write a class reference under another name
# (typeshed does not describe its internals, hence ``Any``).
_PurePickler: Any = pickle._Pickler


class _Pickler(_PurePickler):  # type: ignore[misc]
    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is _DSPyExample:
            module, qualname = _DSPY_EXAMPLE
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def dspy_hash_demos(demos: Sequence[Example]) -> str:
    """``dspy.utils.hasher.Hasher.hash(tuple(demos))`` for DSPex demos."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.DEFAULT_PROTOCOL).dump(tuple(_stand_in(d) for d in demos))
    return hashlib.sha256(buffer.getvalue()).hexdigest()
