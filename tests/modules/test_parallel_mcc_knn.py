"""Native ``Parallel``, ``MultiChainComparison``, ``majority`` and ``KNN`` against DSPy 3.4.1."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import dspex
from dspex.errors import ExecutionCancelled
from dspex.modules.aggregation import majority
from dspex.modules.best_of_n import BestOfN
from dspex.modules.knn import KNN
from dspex.modules.multi_chain_comparison import MultiChainComparison
from dspex.modules.parallel import Parallel
from dspex.modules.refine import Refine
from dspex.testing import LMServer

dspy = pytest.importorskip("dspy")


def _lm(lib: Any, server: LMServer) -> Any:
    return lib.LM("openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0)


# ---------------------------------------------------------------------- Parallel
def _pairs(lib: Any, n: int) -> list[tuple[Any, Any]]:
    predict = lib.Predict("question -> answer")
    pairs: list[tuple[Any, Any]] = []
    for i in range(n):
        q = f"question <{i:02d}>"
        example: Any
        if i % 3 == 0:
            example = lib.Example(question=q).with_inputs("question")
        elif i % 3 == 1:
            example = {"question": q}
        else:
            example = lib.Example(question=q, extra="x").with_inputs("question")
        pairs.append((predict, example))
    return pairs


def test_parallel_20_predicts_matches_dspy(server: LMServer) -> None:
    server.clear()
    for i in range(20):
        server.add_rule(f"<{i:02d}>", {"answer": f"answer {i}"})
    with dspex.context(lm=_lm(dspex, server)):
        ours = Parallel(num_threads=8, disable_progress_bar=True)(_pairs(dspex, 20))
    ours_prompts = sorted(str(r.json["messages"]) for r in server.requests)
    server.requests.clear()
    with dspy.context(lm=_lm(dspy, server)):
        theirs = dspy.Parallel(num_threads=8, disable_progress_bar=True)(_pairs(dspy, 20))
    theirs_prompts = sorted(str(r.json["messages"]) for r in server.requests)
    assert [dict(p.items()) for p in ours] == [dict(p.items()) for p in theirs]
    assert [p.answer for p in ours] == [f"answer {i}" for i in range(20)]
    assert ours_prompts == theirs_prompts


def test_parallel_failures_and_tuples() -> None:
    def div(a: int, b: int) -> float:
        return a / b

    pairs = [(div, (4, 2)), (div, (1, 0)), (div, (9, 3)), (div, (1, 0))]
    for lib_parallel in (Parallel, dspy.Parallel):
        results, failed, errors = lib_parallel(
            num_threads=2, return_failed_examples=True, disable_progress_bar=True, max_errors=5
        )(pairs)
        assert results == [2.0, None, 3.0, None]
        assert failed == [(1, 0), (1, 0)]
        assert [type(e) for e in errors] == [ZeroDivisionError, ZeroDivisionError]


def test_parallel_max_errors_and_bad_example() -> None:
    def boom(x: int) -> int:
        raise RuntimeError("no")

    with pytest.raises(ExecutionCancelled):
        Parallel(num_threads=2, max_errors=2, disable_progress_bar=True)(
            [(boom, (i,)) for i in range(10)]
        )
    results = Parallel(num_threads=1, disable_progress_bar=True, max_errors=5)([(boom, 3)])
    assert results == [None]  # an int is not a supported example type: a ValueError, recorded


async def test_parallel_async_and_nested() -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    inner = Parallel(num_threads=2, disable_progress_bar=True)
    outer = Parallel(num_threads=2, disable_progress_bar=True)
    out = await outer.acall([(inner, [(double, (1,)), (double, (2,))]), (double, (5,))])
    assert out == [[2, 4], 10]


# ---------------------------------------------------------------------- MultiChainComparison
def _completions(lib: Any) -> list[Any]:
    return [
        lib.Prediction(rationale="add the numbers\nmore", answer="4"),
        lib.Prediction(reasoning="count on fingers", answer="5\nextra"),
        {"rationale": "use a calculator", "answer": 4},
    ]


@pytest.mark.filterwarnings("ignore:The 'prefix' argument:DeprecationWarning")
@pytest.mark.parametrize("use_async", [False, True])
def test_mcc_matches_dspy(server: LMServer, use_async: bool) -> None:
    outputs = []
    for lib, cls in ((dspex, MultiChainComparison), (dspy, dspy.MultiChainComparison)):
        server.clear()
        server.reply({"rationale": "the answer is four", "answer": "4"})
        mcc = cls("question -> answer", M=3)
        with lib.context(lm=_lm(lib, server)):
            if use_async and lib is dspex:
                pred = asyncio.run(mcc.acall(_completions(lib), question="2+2?"))
            else:
                pred = mcc(_completions(lib), question="2+2?")
        req = server.requests[0].json
        outputs.append((req["messages"], req.get("temperature"), dict(pred.items())))
    assert outputs[0] == outputs[1]
    assert outputs[0][1] == 0.7
    with pytest.raises(ValueError, match="doesn't match the expected number M"):
        MultiChainComparison("question -> answer", M=2)(_completions(dspex), question="q")


# ---------------------------------------------------------------------- majority
@pytest.mark.parametrize(
    "values",
    [
        ["Paris", "paris!", "Lyon"],
        ["a", "b", "b", "a"],
        ["", "", "x"],
        ["", ""],
        ["The", "an", "x", "x"],
    ],
)
def test_majority_matches_dspy(values: list[str]) -> None:
    ours = majority(
        dspex.Completions([{"n": i, "answer": v} for i, v in enumerate(values)]), field="answer"
    )
    theirs = dspy.majority(
        dspy.Prediction.from_completions([{"n": i, "answer": v} for i, v in enumerate(values)]),
        field="answer",
    )
    assert dict(ours.items()) == dict(theirs.items())
    as_list = majority([{"n": i, "answer": v} for i, v in enumerate(values)])
    assert as_list.n == dspy.majority([{"n": i, "answer": v} for i, v in enumerate(values)]).n


def test_majority_uses_signature_last_output(server: LMServer) -> None:
    sig = dspex.Signature("question -> reasoning, answer")
    pred = dspex.Prediction.from_completions(
        [
            {"reasoning": "r1", "answer": "X"},
            {"reasoning": "r2", "answer": "Y"},
            {"reasoning": "r3", "answer": "y!"},
        ],
        signature=sig,
    )
    assert majority(pred).reasoning == "r2"
    with pytest.raises(TypeError):
        majority("nope")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- KNN
def _embed(texts: list[str]) -> list[list[float]]:
    """A deterministic toy embedder: letter frequencies of a, b, c."""
    return [[t.count("a") / 10, t.count("b") / 10, t.count("c") / 10] for t in texts]


def test_knn_nearest_examples() -> None:
    train = [
        dspex.Example(text=t, label=i).with_inputs("text")
        for i, t in enumerate(["aaa", "bbb", "abab", "ccc", "cab"])
    ]
    knn = KNN(k=2, trainset=train, vectorizer=_embed)
    assert [e.label for e in knn(text="bbbb")] == [1, 2]
    assert [e.label for e in knn(text="cc")] == [3, 4]
    with pytest.raises(ValueError):
        KNN(k=0, trainset=train, vectorizer=_embed)


def test_knn_without_numpy_ranks_with_float32_and_a_stable_sort(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dspex.modules import knn as knn_module

    monkeypatch.setattr(knn_module, "_numpy", lambda: None)
    train = [
        dspex.Example(text=t, label=i).with_inputs("text")
        for i, t in enumerate(["aaa", "bbb", "abab", "ccc", "cab"])
    ]
    knn = KNN(k=3, trainset=train, vectorizer=_embed)
    assert isinstance(knn.trainset_vectors, list)
    assert [e.label for e in knn(text="bbbb")] == [1, 2, 4]
    # "aaa", "bbb", "ccc" tie on float32 vectors: the later example first
    assert [e.label for e in knn(text="abc")] == [2, 3, 1]


def test_knn_matches_dspy_when_numpy_is_installed() -> None:
    np = pytest.importorskip("numpy")
    train = [
        dspex.Example(text=t, label=i).with_inputs("text")
        for i, t in enumerate(["aaa", "bbb", "abab", "ccc", "cab"])
    ]
    d_train = [
        dspy.Example(text=t, label=i).with_inputs("text")
        for i, t in enumerate(["aaa", "bbb", "abab", "ccc", "cab"])
    ]
    theirs = dspy.KNN(k=3, trainset=d_train, vectorizer=lambda ts: np.array(_embed(ts)))
    ours = KNN(k=3, trainset=train, vectorizer=_embed)
    for query in ("bbbb", "cc", "abc", "a"):
        assert [e.label for e in ours(text=query)] == [e.label for e in theirs(text=query)]


def test_public_names_build_the_native_modules() -> None:
    def tool(x: str) -> str:
        """Echo."""
        return x

    assert dspex.ReAct("question -> answer", tools=[tool]).implementation == "native"
    assert isinstance(dspex.MultiChainComparison("question -> answer"), MultiChainComparison)
    assert isinstance(dspex.Parallel(), Parallel)
    program = dspex.Predict("question -> answer")
    assert isinstance(
        dspex.BestOfN(module=program, N=2, reward_fn=lambda a, p: 1.0, threshold=1.0), BestOfN
    )
    assert isinstance(
        dspex.Refine(module=program, N=2, reward_fn=lambda a, p: 1.0, threshold=1.0), Refine
    )
    rows = {r.kind: r.default for r in dspex.registry()}
    assert {
        rows[k]
        for k in ("react", "best_of_n", "refine", "parallel", "multi_chain_comparison", "evaluate")
    } == {"native"}
