"""The DSPy backend end to end: real DSPy 3.4.1 in real pool workers, against a real LMServer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.testing import Fault, LMServer

pytestmark = pytest.mark.dspy


def _one(args: Any, pred: Any) -> float:
    return 1.0


def _wait_replaced(old_pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(old_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


# ---------------------------------------------------------------- Predict / ChainOfThought


def test_predict_dspy_matches_native_request_and_prediction(server: LMServer, lm: dspex.LM) -> None:
    remote = dspex.Predict("question -> answer: int", implementation="dspy")
    assert remote.implementation == "dspy"
    assert isinstance(remote, dspex.Module)
    got = remote(question="2+2?")
    dspy_messages = server.requests[-1].json["messages"]
    native = dspex.Predict("question -> answer: int")
    assert native.implementation == "native"
    expected = native(question="2+2?")
    assert server.requests[-1].json["messages"] == dspy_messages
    assert isinstance(got, dspex.Prediction)
    assert got.answer == expected.answer and isinstance(got.answer, int)
    usage = got.get_lm_usage()
    assert usage is not None and usage["openai/test"]["prompt_tokens"] > 0


async def test_acall_and_concurrent_calls(lm: dspex.LM) -> None:
    remote = dspex.ChainOfThought("question -> answer", implementation="dspy")
    preds = await asyncio.gather(*(remote.acall(question=f"q{i}") for i in range(6)))
    assert all(p.reasoning and p.answer for p in preds)


def test_per_call_lm_override(server: LMServer, lm: dspex.LM) -> None:
    with LMServer() as other:
        other_lm = dspex.LM("openai/other", api_base=other.url, api_key="k", cache=False)
        remote = dspex.Predict("question -> answer", implementation="dspy")
        remote(question="q", lm=other_lm)
        assert len(other.requests) == 1 and other.requests[0].json["model"] == "other"
        with dspex.context(lm=other_lm):
            remote(question="q")
        assert len(other.requests) == 2
        pinned = dspex.Predict("question -> answer", implementation="dspy")
        pinned.set_lm(other_lm)
        assert pinned.get_lm() is other_lm
        pinned(question="q")
        assert len(other.requests) == 3
        # a module copied into another session keeps its own LM
        best = dspex.dspy("dspy.Refine", module=pinned, N=1, reward_fn=_one, threshold=1.0)
        best(question="q")
        assert len(other.requests) == 4
        # an LM passed as an argument crosses as its spec (DSPy's own set_lm)
        inner = dspex.dspy("dspy.Predict", "question -> answer")
        inner.call_method("set_lm", other_lm)
        inner(question="q")
        assert len(other.requests) == 5
    assert server.requests == []


def test_demos_attribute_and_chain_of_thought_aliases(server: LMServer, lm: dspex.LM) -> None:
    demo = dspex.Example(question="1+1?", reasoning="one and one", answer="2")
    remote = dspex.ChainOfThought("question -> answer", implementation="dspy")
    remote.demos = [demo]
    native = dspex.ChainOfThought("question -> answer")
    native.demos = [demo]
    remote(question="3+3?")
    native(question="3+3?")
    assert server.requests[-1].json["messages"] == server.requests[-2].json["messages"]
    assert "one and one" in json.dumps(server.requests[-1].json["messages"])
    assert list(remote.signature.output_fields) == ["reasoning", "answer"]


def test_state_round_trips_between_implementations(tmp_path: Path, lm: dspex.LM) -> None:
    remote = dspex.Predict("question -> answer", implementation="dspy")
    remote.demos = [dspex.Example(question="dq", answer="da")]
    remote.save(tmp_path / "remote.json")
    native = dspex.Predict("question -> answer").load(tmp_path / "remote.json")
    assert [d["answer"] for d in native.demos] == ["da"]
    pulled = remote.to_native()
    assert isinstance(pulled, dspex.Predict) and pulled.implementation == "native"
    assert pulled.dump_state()["demos"] == native.dump_state()["demos"]

    native.demos = [dspex.Example(question="nq", answer="na")]
    native.save(tmp_path / "native.json")
    back = dspex.Predict("question -> answer", implementation="dspy").load(tmp_path / "native.json")
    assert back.dump_state()["demos"] == [{"question": "nq", "answer": "na"}]
    back.push_native(pulled)
    assert back.dump_state()["demos"] == [{"question": "dq", "answer": "da"}]


async def test_streaming_yields_field_chunks_then_prediction(lm: dspex.LM) -> None:
    remote = dspex.Predict("question -> answer", implementation="dspy")
    items = [item async for item in remote.astream(question="q")]
    chunks = [i for i in items if isinstance(i, dspex.StreamChunk)]
    assert chunks and {c.field for c in chunks} == {"answer"}
    assert isinstance(items[-1], dspex.Prediction)
    assert "".join(c.chunk for c in chunks).strip() == items[-1].answer


async def test_stream_error_is_typed_and_scrubbed(server: LMServer, lm: dspex.LM) -> None:
    """A stream ends with the pool's Error frame: the DSPex error, secrets scrubbed."""
    server.fault(Fault(status=401, times=5))
    remote = dspex.Predict("question -> answer", implementation="dspy")
    with pytest.raises(dspex.LMAuthError) as info:
        _ = [item async for item in remote.astream(question="q")]
    text = str(info.value) + json.dumps(info.value.fields, default=str)
    assert "sk-secret-key" not in text and "remote_type" in info.value.fields
    server.clear()
    items = [item async for item in remote.astream(question="q")]  # the session lives on
    assert isinstance(items[-1], dspex.Prediction)


# ---------------------------------------------------------------- any DSPy class


def test_react_with_parent_defined_tool(server: LMServer, lm: dspex.LM) -> None:
    seen: list[str] = []

    def search(query: str) -> str:
        """Search the encyclopedia."""
        seen.append(query)
        return f"{query} is in Europe"

    react = dspex.dspy("dspy.ReAct", "question -> answer", tools=[search], max_iters=3)
    server.reply(
        {"next_thought": "look", "next_tool_name": "search", "next_tool_args": {"query": "paris"}},
        {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
        {"reasoning": "found it", "answer": "Paris"},
    )
    pred = react(question="Where is Paris?")
    assert seen == ["paris"]
    assert pred.answer == "Paris"
    assert pred.trajectory["observation_0"] == "paris is in Europe"
    # the tool's name, docstring and typed argument reached DSPy's prompt
    system = server.requests[0].json["messages"][0]["content"]
    assert "search" in system and "Search the encyclopedia." in system


def test_async_parent_tool(server: LMServer, lm: dspex.LM) -> None:
    async def lookup(key: str) -> str:
        """Look a key up."""
        await asyncio.sleep(0)
        return key.upper()

    react = dspex.dspy("dspy.ReAct", "question -> answer", tools=[lookup], max_iters=2)
    server.reply(
        {"next_thought": "t", "next_tool_name": "lookup", "next_tool_args": {"key": "abc"}},
        {"next_thought": "t", "next_tool_name": "finish", "next_tool_args": {}},
        {"reasoning": "r", "answer": "ABC"},
    )
    assert react(question="q").trajectory["observation_0"] == "ABC"


def test_parent_tool_error_reaches_dspy_as_an_observation(server: LMServer, lm: dspex.LM) -> None:
    def broken(query: str) -> str:
        raise ValueError("index offline")

    react = dspex.dspy("dspy.ReAct", "question -> answer", tools=[broken], max_iters=2)
    server.reply(
        {"next_thought": "t", "next_tool_name": "broken", "next_tool_args": {"query": "x"}},
        {"next_thought": "t", "next_tool_name": "finish", "next_tool_args": {}},
        {"reasoning": "r", "answer": "a"},
    )
    pred = react(question="q")
    assert "index offline" in str(pred.trajectory["observation_0"])


def test_best_of_n_with_parent_reward(lm: dspex.LM) -> None:
    scores: list[str] = []

    def reward(args: dict[str, Any], pred: dspex.Prediction) -> float:
        assert isinstance(pred, dspex.Prediction)
        scores.append(pred.answer)
        return 1.0

    module = dspex.ChainOfThought("question -> answer")  # a native module, sent by value
    best = dspex.dspy("dspy.BestOfN", module=module, N=3, reward_fn=reward, threshold=1.0)
    pred = best(question="q")
    assert scores and pred.answer == scores[-1]


def test_multi_chain_comparison(lm: dspex.LM) -> None:
    mcc = dspex.dspy("dspy.MultiChainComparison", "question -> answer", M=2)
    completions = [
        dspex.Prediction(reasoning="r1", answer="a1"),
        dspex.Prediction(reasoning="r2", answer="a2"),
    ]
    pred = mcc(completions, question="q")
    assert pred.answer and pred.rationale


def test_evaluate_with_parent_metric_over_threads(lm: dspex.LM) -> None:
    seen: list[str] = []

    def metric(example: dspex.Example, pred: dspex.Prediction, trace: Any = None) -> float:
        seen.append(example.question)
        return 1.0 if pred.answer else 0.0

    devset = [dspex.Example(question=f"q{i}", answer="a").with_inputs("question") for i in range(6)]
    session = dspex.DSPySession()
    evaluate = dspex.dspy(
        "dspy.Evaluate", devset=devset, metric=metric, num_threads=3, session=session
    )
    program = dspex.dspy("dspy.Predict", "question -> answer", session=session)
    result = evaluate(program)
    assert result.score == 100.0
    assert sorted(seen) == [f"q{i}" for i in range(6)]
    # a program from another session is copied by value
    assert evaluate(dspex.Predict("question -> answer", implementation="dspy")).score == 100.0


def test_optimizer_returns_a_usable_remote_program(lm: dspex.LM) -> None:
    trainset = [
        dspex.Example(question=f"q{i}", answer="x").with_inputs("question") for i in range(3)
    ]
    session = dspex.DSPySession()
    optimizer = dspex.dspy("dspy.LabeledFewShot", k=2, session=session)
    student = dspex.dspy("dspy.Predict", "question -> answer", session=session)
    compiled = optimizer.compile(student, trainset=trainset)
    assert isinstance(compiled, dspex.bridge.RemoteModule)
    assert len(compiled.dump_state()["demos"]) == 2
    assert compiled(question="q").answer
    # optimize in DSPy, serve natively
    native = compiled.to_native()
    assert native.implementation == "native" and len(native.demos) == 2


def test_bootstrap_a_native_program_then_serve_it_natively(server: LMServer, lm: dspex.LM) -> None:
    trainset = [
        dspex.Example(question=f"q{i}", answer="a").with_inputs("question") for i in range(3)
    ]
    optimizer = dspex.BootstrapFewShot(
        metric=lambda example, pred, trace=None: True,
        max_bootstrapped_demos=2,
        implementation="dspy",  # the optimizer runs in DSPy; the program it makes comes back
    )
    assert optimizer.implementation == "dspy"
    compiled = optimizer.compile(dspex.ChainOfThought("question -> answer"), trainset=trainset)
    native = compiled.to_native()
    assert isinstance(native, dspex.ChainOfThought)
    assert [d.get("augmented") for d in native.demos] == [True, True, None]  # 2 bootstrapped
    remote_pred = compiled(question="x")
    native_pred = native(question="x")
    assert server.requests[-1].json["messages"] == server.requests[-2].json["messages"]
    assert remote_pred == native_pred


# ---------------------------------------------------------------- failures


def test_worker_killed_mid_session_rehydrates(lm: dspex.LM) -> None:
    remote = dspex.Predict("question -> answer", implementation="dspy")
    remote.demos = [dspex.Example(question="dq", answer="da")]
    remote(question="a")
    pid = remote._dspy_session.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _wait_replaced(pid)
    assert remote(question="b").answer
    assert remote._dspy_session.worker_pid != pid
    assert remote.dump_state()["demos"] == [{"question": "dq", "answer": "da"}]


def test_worker_killed_without_recipe_raises_session_lost(lm: dspex.LM) -> None:
    remote = dspex.dspy("dspy.Predict", "question -> answer", rehydrate=False)
    remote(question="a")
    pid = remote._dspy_session.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _wait_replaced(pid)
    with pytest.raises(dspex.SessionLost):
        remote(question="b")


def test_lm_errors_are_typed_and_secrets_scrubbed(server: LMServer, lm: dspex.LM) -> None:
    server.fault(Fault(status=401, times=5))
    remote = dspex.Predict("question -> answer", implementation="dspy")
    with pytest.raises(dspex.LMError) as info:
        remote(question="q")
    assert isinstance(info.value, dspex.LMAuthError)
    text = str(info.value) + json.dumps(info.value.fields, default=str)
    assert "sk-secret-key" not in text
    assert "remote_type" in info.value.fields


def test_no_lm_configured_is_a_configuration_error(server: LMServer) -> None:
    remote = dspex.Predict("question -> answer", implementation="dspy")
    with pytest.raises(dspex.ConfigurationError):
        remote(question="q")


def test_in_process_lm_answers_dspy_from_the_parent(lm: dspex.LM) -> None:
    from dspex.testing import DummyLM

    seen: list[Any] = []

    def answer(messages: list[dict[str, Any]]) -> dict[str, Any]:
        seen.append(messages)
        return {"answer": "from the parent"}

    dummy = DummyLM(answer)
    remote = dspex.Predict("question -> answer", implementation="dspy")
    assert remote(question="q", lm=dummy).answer == "from the parent"
    native = dspex.Predict("question -> answer")
    native(question="q", lm=dummy)
    # DSPy's adapter messages reached the parent LM unchanged: same as the native prompt
    assert len(seen) == 2 and seen[0] == seen[1]
    with pytest.raises(dspex.ConfigurationError, match="BaseLM"):
        remote(question="q", lm="openai/gpt-4o")


def test_imports_outside_the_allow_list_are_refused(lm: dspex.LM) -> None:
    with pytest.raises(dspex.SecurityError, match="not an allowed import root"):
        dspex.dspy("os.system", "echo pwned")()
    with pytest.raises(dspex.SecurityError):
        dspex.dspy("subprocess:run", ["true"])()


def test_private_attributes_and_methods_are_refused(lm: dspex.LM) -> None:
    remote = dspex.dspy("dspy.Predict", "question -> answer")
    with pytest.raises(dspex.SecurityError):
        remote.call_method("__class__")
    with pytest.raises(AttributeError):
        remote.get("no_such_attribute")
    with pytest.raises(dspex.SecurityError):
        remote.get("signature.__class__")


def test_bad_constructor_arguments_are_typed_errors(lm: dspex.LM) -> None:
    remote = dspex.dspy("dspy.Predict", "question -> -> answer")
    with pytest.raises(dspex.DSPexError) as info:
        remote(question="q")
    assert "dspy" in info.value.fields.get("remote_traceback", "")
    with pytest.raises(dspex.UserError):
        dspex.dspy("dspy.NoSuchModule")()


# ---------------------------------------------------------------- routing


def test_routing_rules(lm: dspex.LM) -> None:
    assert dspex.Predict("q -> a").implementation == "native"
    assert dspex.Predict("q -> a", implementation="auto").implementation == "native"
    with dspex.context(implementation_overrides={"predict": "dspy"}):
        assert dspex.Predict("q -> a").implementation == "dspy"
        assert dspex.ChainOfThought("q -> a").implementation == "native"
        assert dspex.Predict("q -> a", implementation="native").implementation == "native"
    with dspex.context(prefer_native="dspy_first"):
        assert dspex.ChainOfThought("q -> a").implementation == "dspy"
    with pytest.raises(dspex.ConfigurationError):
        dspex.Predict("q -> a", implementation="fastest")
    assert dspex.Predict("q -> a", implementation="compare").implementation == "compare"


def test_route_events(lm: dspex.LM) -> None:
    with dspex.telemetry.capture("dspex.router") as seen:
        dspex.Predict("q -> a", implementation="dspy")
    event, _, meta = seen.events[0]
    assert event == "dspex.router.route"
    assert meta["implementation"] == "dspy" and meta["source"] == "explicit"


def test_a_script_exits_cleanly_without_shutting_pools_down(server: LMServer) -> None:
    import subprocess
    import sys

    script = (
        "import dspex\n"
        f"lm = dspex.LM('openai/test', api_base={server.url!r}, api_key='k')\n"
        "print(dspex.Predict('q -> a', implementation='dspy')(q='x', lm=lm).a)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert "Traceback" not in done.stderr, done.stderr


def test_dspy_execute_and_error_events(server: LMServer, lm: dspex.LM) -> None:
    remote = dspex.Predict("question -> answer", implementation="dspy")
    with dspex.telemetry.capture("dspex") as seen:
        remote(question="q")
        server.fault(Fault(status=401))
        with pytest.raises(dspex.LMAuthError):
            remote(question="q")
    names = seen.names()
    assert names.count("dspex.dspy.execute.stop") == 1
    assert "dspex.dspy.execute.exception" in names
    _, measurements, meta = seen.named("dspex.error.LMAuthError")[0]
    assert meta["event"] == "dspex.dspy.execute" and measurements["duration"] > 0


# Code-running DSPy modules need the parent's opt-in (read when the DSPy pool starts); their
# LM-generated code then runs in dspex.sandbox (bubblewrap), never in the worker itself.


@pytest.fixture
def code_pool(lm: dspex.LM) -> Iterator[None]:
    from dspex.pool import shutdown_pools

    shutdown_pools()
    dspex.configure(allow_code_execution=["ProgramOfThought", "RLM"])
    yield
    shutdown_pools()


def test_program_of_thought_runs_code_in_the_sandbox(server: LMServer, code_pool: None) -> None:
    pot = dspex.dspy("dspy.ProgramOfThought", "question -> answer", max_iters=2)
    server.reply(
        {
            "reasoning": "compute",
            "generated_code": "import os\nresult = 6 * 7\nSUBMIT(str(result) + str(os.getuid() > 0))",
        },
        {"reasoning": "done", "answer": "42"},
    )
    assert pot(question="6*7?").answer == "42"
    # the code ran as an unprivileged uid (inside the sandbox), and its output reached the LM
    assert "42True" in json.dumps(server.requests[-1].json["messages"])


def test_rlm_explores_its_context_with_code(server: LMServer, code_pool: None) -> None:
    rlm = dspex.dspy("dspy.RLM", "context, question -> answer", max_iters=3)
    server.reply({"reasoning": "measure", "code": "SUBMIT(answer=str(len(context)))"})
    assert rlm(context="hello world", question="how long is it?").answer == "11"


def test_the_dspy_pool_is_tuned_through_settings(lm: dspex.LM) -> None:
    from dspex.bridge import dspy_pool
    from dspex.bridge.host import IMPORT_ROOTS_ENV
    from dspex.pool import shutdown_pools

    shutdown_pools()
    dspex.configure(
        pools={"dspy": {"size": 1, "request_timeout": 30, "env": {"MY_FLAG": "1"}}},
        dspy_import_roots=("tests",),
    )
    pool = dspy_pool()
    try:
        assert pool.config.size == 1 and pool.config.request_timeout == 30
        assert pool.config.target == "dspex.bridge.host:make_host"
        env = dict(pool.config.env)
        assert env["MY_FLAG"] == "1" and env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
        assert env[IMPORT_ROOTS_ENV] == "tests"
        assert dspex.Predict("question -> answer", implementation="dspy")(question="q").answer
        assert pool.stats()["workers"] == 1
    finally:
        shutdown_pools()
    with pytest.raises(dspex.ConfigurationError):
        dspex.configure(pools={"dspy": {"size": 0}})
        dspy_pool()
