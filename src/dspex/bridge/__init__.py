"""The DSPy backend: real DSPy 3.4.1 objects hosted in ``dspy`` pool workers.

- :mod:`dspex.bridge.host` — the worker side (a pool handler hosting DSPy objects).
- :mod:`dspex.bridge.session` — the parent side of one worker session (recipes, callbacks).
- :mod:`dspex.bridge.remote` — ``RemoteModule``/``RemoteObject`` handles (``dspex.dspy()``
  builds them, through the router).
- :mod:`dspex.bridge.convert` — the tagged wire form of values (DSPy objects <-> DSPex's).
- :mod:`dspex.bridge.errors` — DSPy/litellm exceptions -> DSPex errors across the pool.
"""

from __future__ import annotations

from dspex.bridge.remote import RemoteModule, RemoteObject
from dspex.bridge.session import DSPY_POOL, DSPySession, dspy_pool

__all__ = ["DSPY_POOL", "DSPySession", "RemoteModule", "RemoteObject", "dspy_pool"]
