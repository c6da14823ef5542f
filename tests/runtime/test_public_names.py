"""Every public name of DSPy 3.4.1 resolves on ``dspex`` and is documented as native or routed
in ``docs/compatibility.md``."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dspex
from dspex import _dspy_names

dspy = pytest.importorskip("dspy")

DOC = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"


@functools.cache
def _public() -> list[str]:
    """``dir(dspy)`` of a fresh interpreter: other tests import DSPy submodules or call
    ``dspy.configure_cache`` (which sets ``dspy.cache``), changing this process's view."""
    code = (
        "import importlib, json, dspy; importlib.import_module('dspy.experimental'); "
        "print(json.dumps(sorted(n for n in dir(dspy) if not n.startswith('_'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_every_dspy_name_resolves() -> None:
    missing = [n for n in _public() if not hasattr(dspex, n)]
    assert missing == []
    assert set(_public()) <= set(dir(dspex))


def test_every_dspy_name_is_in_the_table_and_documented() -> None:
    text = DOC.read_text()
    rows = dict(re.findall(r"^\| `([A-Za-z_0-9]+)` \| ([a-z-]+) \|", text, re.M))
    for name in _public():
        status = _dspy_names.status(name)
        documented = rows.get(name)
        assert documented == _dspy_names.documented_status(name), (
            f"{name}: docs/compatibility.md says {documented!r}; regenerate its table with "
            "dspex._dspy_names.markdown_rows"
        )
        allowed = {"native-when-built": ("native", "routed")}.get(documented, (documented,))
        assert status in allowed, f"{name}: docs say {documented}, code says {status}"


def test_error_names_are_one_tree() -> None:
    assert dspex.DSPyError is dspex.errors.DSPexError
    assert issubclass(dspex.LMNotConfiguredError, dspex.ConfigurationError)
    assert issubclass(dspex.ContextWindowExceededError, dspex.LMError)
    assert dspex.is_retryable_lm_error(dspex.LMRateLimitError("slow down"))


def test_native_names_are_dspexs_own_objects() -> None:
    assert dspex.BaseModule is dspex.Module
    assert dspex.make_signature is dspex.signatures.make_signature
    assert dspex.streamify is dspex.streaming.streamify
    assert dspex.inspect_history.__module__ == "dspex.utils.inspect_history"


def test_routed_name_builds_in_a_dspy_worker_or_through_the_router() -> None:
    routed = dspex.AvatarOptimizer
    assert isinstance(routed, _dspy_names.RoutedName) and routed.target == "dspy.AvatarOptimizer"
    # a module kind goes through the router's factory (native once registered)
    from dspex.router.factories import RoutedFactory

    assert isinstance(dspex.ReAct, RoutedFactory)


def test_dspy_layout_packages_import() -> None:
    import dspex.clients
    import dspex.predict
    import dspex.retrievers
    import dspex.streaming
    import dspex.utils
    import dspex.utils.dummies

    assert dspex.predict.Predict is dspex.Predict
    assert dspex.utils.DummyLM is dspex.utils.dummies.DummyLM
    assert dspex.clients.LM is dspex.LM
    assert dspex.utils.exceptions.ContextWindowExceededError is dspex.ContextWindowExceededError
