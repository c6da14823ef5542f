"""Pipelines with native steps against a real LMServer: composition, errors, options, metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import dspex
from dspex import pipeline as pl
from dspex.pipelines import PipelineResult, StepResult
from dspex.testing import Fault, LMServer


def shout(question: str) -> dict[str, Any]:
    return {"loud": question.upper()}


async def count_words(question: str) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"words": len(question.split())}


# ---------------------------------------------------------------- composition


def test_mixed_sequential_parallel_branch_map_reduce(server: LMServer, lm: dspex.LM) -> None:
    server.reply({"queries": ["alpha", "beta", "gamma"]})
    pipe = dspex.pipeline(
        [
            pl.validate("topic: str -> "),
            pl.template("Topic: {{ topic }}", output="prompt"),
            dspex.Predict("prompt -> queries: list[str]"),
            pl.parallel(
                [shout_step(), ("native", dspex.Predict, {"signature": "prompt -> n: int"})]
            ),
            pl.map(dspex.Predict("query -> snippet"), over="queries", as_="query", concurrency=2),
            pl.reduce(lambda acc, s: [*acc, s], over="snippet", into="collected", initial=[]),
            pl.branch(
                lambda s: s["n"] >= 0,
                pl.template("{{ collected | length }} found", output="summary"),
            ),
        ]
    )
    assert pipe.implementation == "native"
    result = pipe.run(topic="rivers")
    assert result.ok and result["queries"] == ["alpha", "beta", "gamma"]
    assert result["loud"] == "TOPIC: RIVERS" and isinstance(result["n"], int)
    assert len(result["snippet"]) == 3 and result["collected"] == result["snippet"]
    assert result["summary"] == "3 found"
    names = [s.name for s in result.walk()]
    assert names[:4] == ["validate", "template", "Predict", "parallel"]
    assert "parallel/shout" in names and "map[2]" in names and "branch/template" in names
    assert len(server.requests) == 1 + 1 + 3
    # every map item asked about its own query
    asked = sorted(r.last_user_message for r in server.requests[-3:])
    assert [("alpha" in a, "beta" in a, "gamma" in a) for a in asked].count(
        (True, False, False)
    ) == 1


def shout_step() -> Any:
    return pl.step(lambda prompt: {"loud": prompt.upper()}, name="shout")


def test_state_flows_and_outputs_are_renamed(lm: dspex.LM) -> None:
    pipe = dspex.pipeline(
        [
            pl.step(shout, inputs={"question": "q"}, outputs={"loud": "shouted"}),
            pl.step(lambda shouted: len(shouted), output="length", name="measure"),
        ]
    )
    result = pipe.run({"q": "abc"})
    assert result.state == {"q": "abc", "shouted": "ABC", "length": 3}
    assert result.outputs == {"shouted": "ABC", "length": 3}


def test_branch_else_and_field_condition() -> None:
    pipe = dspex.pipeline(
        [pl.branch("urgent", [lambda: {"route": "fast"}], [lambda: {"route": "slow"}])]
    )
    assert pipe.run(urgent=True)["route"] == "fast"
    assert pipe.run(urgent=0)["route"] == "slow"
    with pytest.raises(dspex.StepInputMissing, match=r"'branch'.*'urgent'"):
        pipe.run()


def test_map_into_and_dict_items_with_continue_on_error() -> None:
    def invert(x: int) -> dict[str, Any]:
        return {"inv": 1 / x}

    pipe = dspex.pipeline(
        [pl.map(invert, over="rows", as_=None, into="out")], continue_on_error=True
    )
    result = pipe.run(rows=[{"x": 1}, {"x": 0}, {"x": 4}])
    assert result["out"] == [{"inv": 1.0}, None, {"inv": 0.25}]
    assert [e.step for e in result.errors] == ["map[1]"]  # type: ignore[attr-defined]
    assert isinstance(result.errors[0].__cause__, ZeroDivisionError)
    assert result.steps[0].status == "partial"
    with pytest.raises(dspex.PipelineError, match=r"step 'map\[1\]' failed: ZeroDivisionError"):
        dspex.pipeline([pl.map(invert, over="rows", as_=None)]).run(rows=[{"x": 1}, {"x": 0}])
    with pytest.raises(dspex.StepValidationError, match="must be a list"):
        dspex.pipeline([pl.map(invert, over="rows")]).run(rows=5)


def test_map_bounds_concurrency() -> None:
    running = 0
    peak = 0

    async def work(item: int) -> dict[str, Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return {"y": item * 2}

    result = dspex.pipeline([pl.map(work, over="xs", concurrency=3)]).run(xs=list(range(10)))
    assert result["y"] == [i * 2 for i in range(10)] and peak == 3


def test_reduce_without_initial_and_empty_list() -> None:
    pipe = dspex.pipeline([pl.reduce(lambda a, b: a + b, over="xs", into="total")])
    assert pipe.run(xs=[1, 2, 3])["total"] == 6
    with pytest.raises(dspex.PipelineError, match="empty 'xs'"):
        pipe.run(xs=[])


# ---------------------------------------------------------------- parallel failures


async def _boom(prompt: str) -> dict[str, Any]:
    raise ValueError("search backend down")


async def _slow(prompt: str) -> dict[str, Any]:
    await asyncio.sleep(0.05)
    return {"slow": "done"}


def _fanout(**options: Any) -> Any:
    return dspex.pipeline(
        [
            pl.parallel(
                [
                    pl.step(lambda prompt: {"a": 1}, name="first"),
                    pl.step(_boom, name="search"),
                    pl.step(_slow, name="slow"),
                ],
                name="fanout",
            ),
            pl.step(lambda a: {"after": a + 1}, name="after"),
        ],
        **options,
    )


def test_parallel_failure_raises_attributed_error_and_cancels_the_rest() -> None:
    start = time.perf_counter()
    with pytest.raises(dspex.PipelineError) as info:
        _fanout().run(prompt="p")
    assert info.value.step == "fanout/search"  # type: ignore[attr-defined]
    assert "search backend down" in str(info.value)
    assert isinstance(info.value.cause, ValueError)  # type: ignore[attr-defined]
    assert time.perf_counter() - start < 0.05  # the slow branch was cancelled, not awaited


def test_parallel_failure_with_continue_on_error_keeps_partial_results() -> None:
    result = _fanout(continue_on_error=True).run(prompt="p")
    assert not result.ok and [e.step for e in result.errors] == ["fanout/search"]  # type: ignore[attr-defined]
    assert result["a"] == 1 and result["slow"] == "done" and result["after"] == 2
    fanout = result.steps[0]
    assert fanout.status == "partial"
    assert [(c.name, c.status) for c in fanout.children] == [
        ("fanout/first", "ok"),
        ("fanout/search", "error"),
        ("fanout/slow", "ok"),
    ]


def test_parallel_merges_in_declaration_order() -> None:
    async def late() -> dict[str, Any]:
        await asyncio.sleep(0.02)
        return {"k": "late", "late": True}

    pipe = dspex.pipeline([pl.parallel([late, lambda: {"k": "early"}])])
    assert pipe.run()["k"] == "early"  # declared second: its value wins


# ---------------------------------------------------------------- errors for bad input


def test_missing_input_names_step_and_field(lm: dspex.LM) -> None:
    pipe = dspex.pipeline([dspex.ChainOfThought("question, context -> answer")])
    with pytest.raises(dspex.StepInputMissing) as info:
        pipe.run(question="q")
    err = info.value
    assert err.step == "ChainOfThought" and err.field == "context"  # type: ignore[attr-defined]
    assert "holds: question" in str(err)
    assert isinstance(err, dspex.PipelineError) and isinstance(err, KeyError)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("dspy.ChainOfThought", "bare string is not a step"),
        (("python", "dspy.ChainOfThought", {"signature": "a -> b"}), "'python' is 'dspy'"),
        (("dspy", "dspy.ChainOfThought"), "no signature"),
        (("dspy", shout), "plain function runs natively"),
        ((1, 2, 3, 4), "tuple step"),
        (("auto", "dspy.Predict", ["x"]), "dict of arguments"),
        (42, "cannot make a step"),
    ],
)
def test_bad_step_specs_raise_spec_errors(spec: Any, match: str) -> None:
    with pytest.raises(dspex.PipelineSpecError, match=match):
        dspex.pipeline([spec])


def test_unknown_field_and_option_errors() -> None:
    with pytest.raises(dspex.PipelineSpecError, match="inputs= names \\['nope'\\]"):
        pl.step(shout, inputs={"nope": "x"})
    with pytest.raises(dspex.PipelineSpecError, match="inputs= names"):
        pl.step(dspex.Predict("question -> answer"), inputs={"qq": "x"})
    with pytest.raises(dspex.PipelineSpecError, match="timeout"):
        pl.step(shout, timeout=-1)
    with pytest.raises(dspex.PipelineSpecError, match="unique"):
        dspex.pipeline([pl.step(shout, name="a"), pl.step(shout, name="a")])
    with pytest.raises(dspex.PipelineSpecError, match="session"):
        dspex.pipeline([shout], session="global")
    with pytest.raises(dspex.PipelineSpecError, match="already built"):
        pl.step(dspex.Predict("a -> b"), implementation="dspy")
    with pytest.raises(dspex.ImplementationUnavailable, match="no native implementation"):
        pl.step("dspy.retrievers.Embeddings", "q -> a", implementation="native")
    with pytest.raises(dspex.PipelineError, match="returned a int"):
        dspex.pipeline([lambda question: 3]).run(question="q")
    with pytest.raises(dspex.PipelineSpecError, match="dict of inputs"):
        dspex.pipeline([shout]).run(["q"])  # type: ignore[arg-type]
    # duplicate default names are numbered
    assert [s.name for s in dspex.pipeline([shout, shout]).steps] == ["shout", "shout_2"]


# ---------------------------------------------------------------- template and validation


def test_template_renders_user_values_literally() -> None:
    pipe = dspex.pipeline([pl.template("Q: {{ q }} ({{ tags | join(', ') }})", output="p")])
    out = pipe.run(q="{{ 7*7 }} {% raw %}<b>", tags=["x", "y"])["p"]
    assert out == "Q: {{ 7*7 }} {% raw %}<b> (x, y)"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ x['__class__'] }}",
    ],
)
def test_template_escapes_are_refused_when_built(source: str) -> None:
    with pytest.raises(dspex.SecurityError, match="private attribute"):
        pl.template(source)


def test_template_sandbox_refuses_at_render_time() -> None:
    # names built at run time escape the static check; the sandbox refuses them
    pipe = dspex.pipeline([pl.template("{{ q | attr(name) }}", output="p")])
    with pytest.raises(dspex.SecurityError, match="refused by the sandbox") as info:
        pipe.run(q="x", name="__class__")
    assert info.value.step == "template"  # type: ignore[attr-defined]
    mutate = dspex.pipeline([pl.template("{{ xs.append(1) }}", output="p")])
    with pytest.raises(dspex.SecurityError):
        mutate.run(xs=[])


def test_template_missing_field_and_syntax_error() -> None:
    with pytest.raises(dspex.StepInputMissing, match="'greet' needs input 'name'"):
        dspex.pipeline([pl.template("Hi {{ name }}", name="greet")]).run()
    with pytest.raises(dspex.PipelineSpecError, match="syntax error on line 1"):
        pl.template("{{ oops ")


def test_validation_converts_and_rejects() -> None:
    pipe = dspex.pipeline([pl.validate("n: int, tags: list[str], note: str | None -> ok: bool")])
    result = pipe.run(n="3", tags='["a", "b"]', ok="true")
    assert result.state["n"] == 3 and result["tags"] == ["a", "b"] and result["ok"] is True
    with pytest.raises(dspex.StepValidationError) as info:
        pipe.run(n="three", tags=[], ok=True)
    assert info.value.field == "n" and info.value.expected == "int"  # type: ignore[attr-defined]
    with pytest.raises(dspex.StepInputMissing, match="'tags'"):
        pipe.run(n=1, ok=True)


# ---------------------------------------------------------------- options


def test_step_timeout_cancels_the_step() -> None:
    cancelled = asyncio.Event()

    async def stuck() -> dict[str, Any]:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    async def go() -> None:
        pipe = dspex.pipeline([pl.step(stuck, timeout=0.05)])
        with pytest.raises(dspex.StepTimeout, match=r"'stuck' exceeded its 0\.05 s timeout"):
            await pipe.arun()
        assert cancelled.is_set()

    asyncio.run(go())


def test_pipeline_timeout_and_partial_results() -> None:
    async def slow() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    steps = [lambda: {"a": 1}, pl.step(slow, name="slow"), lambda: {"b": 2}]
    start = time.perf_counter()
    with pytest.raises(dspex.StepTimeout, match="step 'slow' was cancelled") as info:
        dspex.pipeline(steps, timeout=0.05, name="outer").run()
    assert info.value.step == "outer" and time.perf_counter() - start < 1  # type: ignore[attr-defined]
    result = dspex.pipeline(steps, timeout=0.05, continue_on_error=True).run()
    assert result.state == {"a": 1} and isinstance(result.errors[0], dspex.StepTimeout)


def test_retries_with_backoff_and_no_retry_of_developer_mistakes(
    server: LMServer, lm: dspex.LM
) -> None:
    server.fault(Fault(status=500, times=2))
    pipe = dspex.pipeline([dspex.Predict("question -> answer")], retries=2, backoff=0.01)
    result = pipe.run(question="q")
    assert result.ok and result.steps[0].attempts == 3

    calls = 0

    def needs(x: int) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        raise dspex.CallError("bad call")

    with pytest.raises(dspex.PipelineError):
        dspex.pipeline([needs], retries=3, backoff=0).run(x=1)
    assert calls == 1


def test_per_step_retries_override_pipeline_default() -> None:
    attempts = 0

    def flaky() -> dict[str, Any]:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("flap")
        return {"ok": True}

    result = dspex.pipeline([pl.step(flaky, retries=5, backoff=0)]).run()
    assert result["ok"] and result.steps[0].attempts == 3


# ---------------------------------------------------------------- nesting, entry points


def test_nested_pipelines_as_steps_and_as_modules(lm: dspex.LM) -> None:
    inner = dspex.pipeline(
        [dspex.Predict("question -> answer"), pl.template("A: {{ answer }}", output="line")],
        name="inner",
    )
    outer = dspex.pipeline([shout, inner, pl.parallel([inner, count_words])], name="outer")
    assert isinstance(inner, dspex.Module)
    result = outer.run(question="what is up")
    assert result["line"].startswith("A: ") and result["words"] == 3
    names = [s.name for s in result.walk()]
    assert "inner/Predict" in names and "parallel/inner/template" in names
    assert result.tokens > 0 and result.steps[1].tokens > 0

    pred = inner(question="q")  # a pipeline is a module: Prediction of the final state
    assert isinstance(pred, dspex.Prediction) and pred.line.startswith("A: ")
    assert pred.get_lm_usage()


def test_sync_and_async_entry_points_agree(lm: dspex.LM) -> None:
    pipe = dspex.pipeline(
        [
            dspex.ChainOfThought("question -> answer"),
            pl.parallel([shout, count_words]),
            pl.map(lambda item: {"sq": item * item}, over="xs"),
        ]
    )

    def shape(r: PipelineResult) -> Any:
        return r.state, [(s.name, s.kind, s.implementation, s.status) for s in r.walk()]

    sync = pipe.run(question="same question", xs=[1, 2])
    asynchronous = asyncio.run(pipe.arun({"question": "same question", "xs": [1, 2]}))
    assert shape(sync) == shape(asynchronous)
    assert pipe(question="same question", xs=[1, 2]).toDict() == sync.state

    async def via_acall() -> Any:
        return await pipe.acall(question="same question", xs=[1, 2])

    assert asyncio.run(via_acall()).toDict() == sync.state


def test_astream_yields_steps_as_they_finish_then_the_result(lm: dspex.LM) -> None:
    pipe = dspex.pipeline([shout, pl.parallel([count_words, lambda loud: {"n": len(loud)}])])

    async def go() -> list[Any]:
        return [item async for item in pipe.astream(question="a b")]

    items = asyncio.run(go())
    assert all(isinstance(i, StepResult) for i in items[:-1])
    assert isinstance(items[-1], PipelineResult)
    assert [i.name for i in items[:-1]] == [
        "shout",
        *sorted(["parallel/count_words", "parallel/step"], key=[i.name for i in items].index),
        "parallel",
    ]
    assert items[0].outputs == {"loud": "A B"}

    async def early() -> None:
        async for _ in pipe.astream(question="x"):
            break

    asyncio.run(early())


def test_metrics_and_telemetry(lm: dspex.LM) -> None:
    pipe = dspex.pipeline([dspex.Predict("question -> answer"), shout], name="m")
    with dspex.telemetry.capture("dspex.pipeline") as cap:
        result = pipe.run(question="q")
    events = cap.named("dspex.pipeline.step")
    assert [e[2]["step"] for e in events] == ["Predict", "shout"]
    assert events[0][2]["implementation"] == "native" and events[0][2]["pipeline"] == "m"
    assert events[0][1]["tokens"] > 0 and events[1][1]["tokens"] == 0
    rows = result.metrics()
    assert rows[0]["implementation"] == "native" and rows[0]["duration_ms"] > 0
    assert rows[0]["tokens"] == result.tokens > 0
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(result.table())
    assert "Predict" in console.export_text()
