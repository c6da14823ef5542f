"""The DSPy worker's allow-list against every bypass path we know (issue 11, item 1).

Most cases drive a real :class:`DSPyHost` in this process (the same object a pool worker
runs) with wire-form requests; the issue's own reproductions also go through a real pool.
A refused path must fail *before* anything runs: each attempt that could run a command
points it at a marker file that must not appear.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.bridge.allowlist import Policy, exportable, parse_code_opt_in, split_path
from dspex.bridge.convert import TAG

pytestmark = pytest.mark.dspy


@pytest.fixture(scope="module")
def host() -> Any:
    pytest.importorskip("dspy")
    from dspex.bridge.host import DSPyHost

    return _Enveloped(DSPyHost(["tests"]))


class _Enveloped:
    """A host whose protocol methods answer ``[ok, value]``: the host raises, and what a pool
    worker would put in its Error frame (``_error_payload``) is the value of a refusal."""

    _METHODS = frozenset({"create", "call", "get", "set", "dump_state", "load_state", "release"})

    def __init__(self, host: Any) -> None:
        self._host = host

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._host, name)
        if name not in self._METHODS:
            return attr

        def answer(*args: Any, **kwargs: Any) -> list[Any]:
            try:
                return [True, attr(*args, **kwargs)]
            except Exception as exc:
                return [False, self._host._error_payload(exc)]

        return answer


def _error(envelope: list[Any]) -> dict[str, Any]:
    ok, value = envelope
    assert not ok, f"expected a refusal, got {value!r}"
    return dict(value)


def _refused(envelope: list[Any]) -> str:
    error = _error(envelope)
    assert error["type"] == "SecurityError", error
    return str(error["message"])


BYPASS_PATHS = [
    # the issue's reproductions: attribute walks through a module's imports
    "dspex.bridge.host:os.system",
    "dspex.pool._procs:subprocess.run",
    "dspex.pool.procs:subprocess.run",
    "dspy._vendor.lm15.errors:builtins.exec",
    "dspy.evaluate.evaluate:importlib.import_module",
    "dspy.evaluate.evaluate:importlib",
    "dspy.primitives.python_interpreter:subprocess.Popen",
    # code-running DSPy classes and interpreters, by their own path and by re-export
    "dspy.primitives.local_interpreter:LocalInterpreter",
    "dspy:LocalInterpreter",
    "dspy.LocalInterpreter",
    "dspy.primitives.python_interpreter:PythonInterpreter",
    "dspy:PythonInterpreter",
    "dspy.ProgramOfThought",
    "dspy:CodeAct",
    "dspy.predict.rlm:RLM",
    "dspy:Flex",
    # pickle loaders, settings objects and bound methods
    "dspy:load",
    "dspy.utils.saving:load",
    "dspy:configure",
    "dspy:settings",
    "dspy.clients.lm_local:LocalProvider",
    # roots that are never allowed, and standard types that may not be created
    "os.system",
    "os:system",
    "subprocess:run",
    "builtins:exec",
    "builtins.eval",
    "importlib:import_module",
    "pathlib:Path",
    "collections:namedtuple",
    # dspex's own machinery: settings, pools, nested bridges, the sandbox
    "dspex:configure",
    "dspex.settings:configure",
    "dspex:dspy",
    "dspex.pool:Pool",
    "dspex.sandbox:PythonSandbox",
    # private names and malformed paths
    "dspy.predict.predict:Predict.__init__",
    "dspy.predict.predict:Predict._forward_preprocess",
    "dspy.Predict.__class__",
    "dspy:Predict.__subclasses__",
    "dspy:",
    ":Predict",
    "dspy:Predict;os.system",
    "tests.security.test_allowlist:_error",
]


@pytest.mark.parametrize("path", BYPASS_PATHS)
def test_bypass_paths_are_refused_before_anything_runs(
    host: Any, path: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    envelope = host.create("o1", path, [f"touch {marker}"], {})
    _refused(envelope)
    assert not marker.exists()


def test_the_worker_refuses_a_root_on_the_deny_list_even_if_configured() -> None:
    pytest.importorskip("dspy")
    from dspex.bridge.host import DSPyHost

    host = _Enveloped(DSPyHost(["os", "subprocess", "builtins"]))
    assert "os" not in host.roots
    for path in ("os:system", "subprocess:run", "builtins:exec"):
        _refused(host.create("o", path, ["true"], {}))


def test_legitimate_targets_still_resolve(host: Any) -> None:
    for path in ("dspy.Predict", "dspy:Predict", "dspy.predict.predict:Predict"):
        ok, value = host.create("p", path, ["question -> answer"], {})
        assert ok, value
        assert value["type"] == "dspy.predict.predict.Predict"
    policy = host.policy
    assert policy.resolve("datetime:date", "type").__name__ == "date"
    assert policy.resolve("dspy.predict.predict:Predict.forward").__name__ == "forward"
    with pytest.raises(dspex.SecurityError, match="not an allowed import root"):
        policy.resolve("datetime:date", "object")
    with pytest.raises(dspex.SecurityError, match="only be named as a type"):
        policy.resolve("collections:namedtuple", "type")


def test_code_running_modules_need_an_opt_in_by_name() -> None:
    pytest.importorskip("dspy")
    policy = Policy((), ("ProgramOfThought",))
    assert policy.resolve("dspy.ProgramOfThought").__name__ == "ProgramOfThought"
    with pytest.raises(dspex.SecurityError, match="allow_code_execution"):
        policy.resolve("dspy.CodeAct")  # a subclass of ProgramOfThought: its own opt-in
    everything = Policy((), parse_code_opt_in(True))
    assert everything.resolve("dspy.CodeAct").__name__ == "CodeAct"
    # opting in never opens the interpreters themselves
    with pytest.raises(dspex.SecurityError):
        everything.resolve("dspy.primitives.local_interpreter:LocalInterpreter")
    with pytest.raises(dspex.ConfigurationError):
        parse_code_opt_in(["NotAModule"])


def test_opting_in_is_a_trusted_setting() -> None:
    dspex.configure(allow_code_execution=["ProgramOfThought"])
    from dspex import settings

    assert settings.current().allow_code_execution == ("ProgramOfThought",)
    with pytest.raises(dspex.ConfigurationError):
        dspex.configure(allow_code_execution=["LocalInterpreter"])


def test_interpreters_cannot_be_smuggled_into_an_opted_in_module() -> None:
    pytest.importorskip("dspy")
    from dspex.bridge.host import DSPyHost

    host = _Enveloped(DSPyHost([], ("ProgramOfThought",)))
    for factory in (
        "dspy.primitives.local_interpreter:LocalInterpreter",
        "tests.security.test_allowlist:BYPASS_PATHS",
    ):
        kwargs = {"interpreter_factory": {TAG: "callable", "path": factory}}
        _refused(host.create("pot", "dspy.ProgramOfThought", ["question -> answer"], kwargs))
    ok, _ = host.create("pot", "dspy.ProgramOfThought", ["question -> answer"], {})
    assert ok
    message = _refused(host.call("pot", "__call__", [], {"interpreter_factory": None}))
    assert "interpreter_factory" in message


def test_methods_that_touch_files_or_unpickle_are_refused(host: Any, tmp_path: Path) -> None:
    ok, _ = host.create("p", "dspy.Predict", ["question -> answer"], {})
    assert ok
    target = tmp_path / "state.json"
    _refused(host.call("p", "save", [str(target)], {}))
    assert not target.exists()
    _refused(host.call("p", "load", [str(target)], {"allow_pickle": True}))
    _refused(host.call("p", "load_state", [{}], {"allow_unsafe_lm_state": True}))
    _refused(host.call("p", "__reduce__", [], {}))
    _refused(host.get("p", "forward.__globals__"))
    _refused(host.get("p", "__dict__"))


def test_standard_types_cannot_become_objects_to_call_methods_on(host: Any, tmp_path: Path) -> None:
    """A type-only class (pathlib.Path) may cross as an annotation, never as an object."""
    target = tmp_path / "written"
    tool = {TAG: "callable", "path": "pathlib:Path"}
    ok, _ = host.create("t", "dspy.Tool", [tool], {})
    assert ok  # DSPy may hold a class as a tool ...
    ok, value = host.call("t", "__call__", [], {"args": str(target)})
    # ... but whatever it returns cannot be driven through the protocol
    if ok and isinstance(value, dict) and value.get(TAG) == "object":
        _refused(host.call(value["id"], "write_text", ["pwned"], {}))
    assert not target.exists()


def test_adapter_names_must_be_dspy_adapters(host: Any) -> None:
    ok, _ = host.create("p", "dspy.Predict", ["question -> answer"], {})
    assert ok
    message = _refused(host.call("p", "__call__", [], {"question": "q"}, {"adapter": "load"}))
    assert "adapter" in message


def test_the_parent_only_sends_paths_the_worker_accepts() -> None:
    assert exportable("dspy.predict.predict:Predict", ())
    assert exportable("tests.security.test_allowlist:host", ("tests",))
    assert not exportable("tests.security.test_allowlist:host", ())
    assert not exportable("tests.security.test_allowlist:_error", ("tests",))
    assert not exportable("dspy.primitives.local_interpreter:LocalInterpreter", ())
    assert not exportable("dspy.predict.program_of_thought:ProgramOfThought", ())
    assert not exportable("os:system", ("os",))
    with pytest.raises(dspex.SecurityError, match="private"):
        split_path("dspy._vendor.lm15:errors")


# ---------------------------------------------------------------- end to end through the pool


def test_issue_reproductions_through_a_real_pool(lm: dspex.LM, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    for path in (
        "dspex.bridge.host:os.system",
        "dspex.pool._procs:subprocess.run",
        "dspy._vendor.lm15.errors:builtins.exec",
        "dspy.evaluate.evaluate:importlib.import_module",
    ):
        with pytest.raises(dspex.SecurityError):
            dspex.dspy(path, f"id > {marker}")(question="x")
    with pytest.raises(dspex.SecurityError):
        interpreter = dspex.dspy("dspy.primitives.local_interpreter:LocalInterpreter")
        interpreter.call_method("execute", f"import os; os.system('id > {marker}')")
    assert not marker.exists()


def test_a_pipeline_spec_from_json_cannot_run_commands(lm: dspex.LM, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    spec = json.loads(
        json.dumps(
            [
                [
                    "dspy",
                    "dspy.primitives.local_interpreter:LocalInterpreter",
                    {"inputs": ["question"]},
                ],
                ["dspy", "dspy.ProgramOfThought", {"signature": "question -> answer"}],
            ]
        )
    )
    for step in spec:
        pipeline = dspex.Pipeline([tuple(step)])
        with pytest.raises((dspex.SecurityError, dspex.PipelineError)) as info:
            pipeline(question=f"import os; os.system('id > {marker}')")
        error: BaseException | None = info.value
        while error is not None and not isinstance(error, dspex.SecurityError):
            error = error.__cause__
        assert isinstance(error, dspex.SecurityError), info.value
    assert not marker.exists()
