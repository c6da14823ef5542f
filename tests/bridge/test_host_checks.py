"""The worker host's per-call shortcuts keep every verdict: cached allow-list checks, one
adapter instance per class, the session read from the pool's call context."""

from __future__ import annotations

from typing import Any

import pytest

from dspex.bridge.allowlist import Policy
from dspex.errors import SecurityError

pytestmark = pytest.mark.dspy


class _Outsider:  # defined in tests.*: not an allowed root
    def method(self) -> None:
        pass


def test_check_target_cache_only_admits_instances_of_checked_classes() -> None:
    dspy = pytest.importorskip("dspy")
    policy = Policy()
    example = dspy.Example(a=1)
    policy.check_target(example, "attribute 'a'")
    assert type(example) in policy._allowed_classes
    policy.check_target(dspy.Example(b=2), "attribute 'b'")  # cached verdict
    # a refusal is never cached, and other kinds of objects are still checked in full
    for _ in range(2):
        with pytest.raises(SecurityError):
            policy.check_target(_Outsider(), "method 'method'")
    with pytest.raises(SecurityError):
        policy.check_target(_Outsider().method, "method 'method'")
    with pytest.raises(SecurityError):
        policy.check_target(example.__repr__, "method")  # a private bound method
    with pytest.raises(SecurityError):
        policy.check_target(dspy, "attribute 'x'")  # a module
    assert _Outsider not in policy._allowed_classes
    assert len(policy._allowed_classes) == 1


def test_host_call_runs_under_parent_adapter_one_instance_per_class() -> None:
    dspy = pytest.importorskip("dspy")
    from dspex.bridge.host import DSPyHost

    host = DSPyHost(import_roots=[__name__.split(".")[0]])  # Probe is defined here
    seen: list[Any] = []

    class Probe(dspy.Module):  # type: ignore[misc]
        def forward(self) -> Any:
            seen.append((dspy.settings.adapter, dspy.settings.track_usage))
            return dspy.Prediction(answer="x")

    host._hold(Probe())  # w1
    ctx = {"lm": None, "adapter": "JSONAdapter"}
    for _ in range(2):
        out = host.call("w1", "__call__", [], {}, ctx)
        assert out["store"] == {"answer": "x"}
    (a1, usage1), (a2, usage2) = seen
    assert isinstance(a1, dspy.JSONAdapter) and a1 is a2 and usage1 and usage2
    host.call("w1", "__call__", [], {}, {"lm": None, "adapter": "ChatAdapter"})
    assert type(seen[-1][0]) is dspy.ChatAdapter
    with pytest.raises(SecurityError):
        host.call("w1", "__call__", [], {}, {"lm": None, "adapter": "Example"})
    assert host._session() is None  # outside a pool call
