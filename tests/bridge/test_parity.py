"""Native ↔ DSPy parity: the same programs, one ``LMServer``, byte-identical prompts.

For every case of the seeded corpus (:mod:`tests.adapters.corpus`) and for ``Predict`` and
``ChainOfThought``, the native module and a DSPy-backed one run against ONE ``LMServer``.
Each side's LM gets its own ``api_base`` path (``/v1/<kind>/<seed>/<side>``), so every
recorded request is attributed to exactly one (kind, case, side) whatever the concurrency.
For each pair we assert:

* the sequence of requests is the same (a parse error may add a JSONAdapter retry: the retry
  must happen on both sides);
* each request's ``messages`` are equal as decoded JSON *and* as raw JSON text (the bytes
  between ``"messages":`` and the end of that array in the recorded HTTP body);
* the predictions are equal: same keys in the same order, equal values of the same types
  (recursively; pydantic models compared by type and dump).

The server's automatic answers depend only on the prompt, so equal prompts get equal replies
and equal predictions check that both sides parse the same way.

The other side is DSPy 3.4.1 in this process (``dspy.Predict`` / ``dspy.ChainOfThought``) and,
when available, DSPex's pool-backed ``implementation="dspy"`` modules (real DSPy in a worker).

Documented divergence (README): a field marker such as ``[[ ## answer ## ]]`` inside an input
value is escaped natively. The corpus never puts a marker in a value (asserted below by
``test_corpus_values_hold_no_field_markers``), so every case here must be byte-identical; the
divergence itself is tested in ``tests/adapters/test_parity.py``.
"""

from __future__ import annotations

import itertools
import json
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import pytest

import dspex
from dspex.testing import LMServer
from tests.adapters.corpus import CASES, Case

dspy = pytest.importorskip("dspy")
pytestmark = pytest.mark.dspy

KINDS = ("predict", "cot")
CHUNKS = 8  # the in-process corpus runs in this many tests (each kind)
SAVE_CASES = CASES[::10]  # save/load interop cases (52)


# ---------------------------------------------------------------------------- harness


@dataclass
class Run:
    """What one side did for one case: its recorded requests and its prediction."""

    messages: list[list[dict[str, Any]]]  # decoded, one list per request in order
    raw: list[str]  # the raw JSON text of each request's "messages"
    prediction: dict[str, Any]


_MESSAGES_KEY = re.compile(r'"messages"\s*:\s*')


def raw_messages(body: bytes) -> str:
    """The exact JSON text of the top-level ``messages`` array in a request body.

    Inside JSON strings a quote is escaped, so an unescaped ``"messages":`` is a key; the only
    objects holding a ``messages`` key in a chat request are the body itself.
    """
    text = body.decode("utf-8")
    match = _MESSAGES_KEY.search(text)
    assert match, f"no messages in request body {text[:200]!r}"
    _, end = json.JSONDecoder().raw_decode(text, match.end())
    return text[match.end() : end]


class Recorder:
    """One ``LMServer`` for the module, one endpoint path on it per side.

    Sequential runs take the requests recorded during the call (the server records a request
    before answering it, so all of a call's requests are there when it returns) and check
    they reached that side's endpoint. Concurrent runs use one endpoint per run instead.
    """

    def __init__(self, server: LMServer) -> None:
        self.server = server
        self._runs = itertools.count()
        self.native_base, self.dspy_base = self.endpoint("native"), self.endpoint("dspy")
        self.native_lm = dspex.LM(
            "openai/test", api_base=self.native_base, api_key="test", cache=False
        )
        self.dspy_lm = dspy.LM("openai/test", api_base=self.dspy_base, api_key="test", cache=False)

    def endpoint(self, side: str, unique: bool = False) -> str:
        suffix = f"/{next(self._runs)}" if unique else ""
        return f"{self.server.url}/{side}{suffix}"

    def mark(self) -> int:
        return len(self.server.requests)

    def collect(self, endpoint: str, prediction: Any, since: int = 0) -> Run:
        path = urllib.parse.urlsplit(endpoint).path + "/chat/completions"
        requests = self.server.requests[since:]
        if since:
            assert all(r.path == path for r in requests), [r.path for r in requests]
        else:
            requests = [r for r in requests if r.path == path]
        assert requests, f"{path}: no request reached the server"
        return Run(
            [r.json["messages"] for r in requests],
            [raw_messages(r.body) for r in requests],
            dict(prediction.items()),
        )


def same_value(a: Any, b: Any) -> bool:
    """Equal and of the same type, recursively (``1 == 1.0 == True`` does not count)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, pydantic.BaseModel):
        return a.model_dump() == b.model_dump() and same_value(dict(a), dict(b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _first_difference(a: str, b: str) -> str:
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"at char {i}: native {a[max(0, i - 60) : i + 60]!r}\n   other  {b[max(0, i - 60) : i + 60]!r}"


def check_parity(case: Case, kind: str, native: Run, other: Run, side: str) -> None:
    """Assert byte-identical request messages and equal predictions, with a precise report."""
    where = f"seed {case.seed} ({kind}, native vs {side})"
    assert len(native.messages) == len(other.messages), (
        f"{where}: {len(native.messages)} vs {len(other.messages)} requests"
    )
    for i, (n_msgs, o_msgs) in enumerate(zip(native.messages, other.messages, strict=True)):
        if n_msgs != o_msgs:
            detail = f"{len(n_msgs)} vs {len(o_msgs)} messages"
            for j, (n, o) in enumerate(zip(n_msgs, o_msgs, strict=False)):
                if n != o:
                    n_text = json.dumps(n, ensure_ascii=False)
                    o_text = json.dumps(o, ensure_ascii=False)
                    detail = f"message {j} differs {_first_difference(n_text, o_text)}"
                    break
            raise AssertionError(f"{where}: request {i}: {detail}")
        assert native.raw[i] == other.raw[i], (
            f"{where}: request {i}: raw messages JSON differs "
            f"{_first_difference(native.raw[i], other.raw[i])}"
        )
    assert list(native.prediction) == list(other.prediction), (
        f"{where}: prediction keys {list(native.prediction)} vs {list(other.prediction)}"
    )
    for key, value in native.prediction.items():
        assert same_value(value, other.prediction[key]), (
            f"{where}: prediction[{key!r}]: native {value!r} ({type(value).__name__}) vs "
            f"{other.prediction[key]!r} ({type(other.prediction[key]).__name__})"
        )


# ---------------------------------------------------------------------------- the two libraries


def native_module(case: Case, kind: str) -> Any:
    sig = case.build(dspex)
    module = dspex.Predict(sig) if kind == "predict" else dspex.ChainOfThought(sig)
    module.demos = [dspex.Example(**d) for d in case.demos]
    return module


def dspy_module(case: Case, kind: str) -> Any:
    sig = case.build(dspy)
    if kind == "predict":
        module = dspy.Predict(sig)
        module.demos = [dspy.Example(**d) for d in case.demos]
    else:
        module = dspy.ChainOfThought(sig)
        module.predict.demos = [dspy.Example(**d) for d in case.demos]
    return module


def run_native(rec: Recorder, case: Case, kind: str, module: Any = None) -> Run:
    module = native_module(case, kind) if module is None else module
    since = rec.mark()
    with dspex.context(lm=rec.native_lm):
        prediction = module(**case.inputs)
    return rec.collect(rec.native_base, prediction, since)


def run_dspy(rec: Recorder, case: Case, kind: str, module: Any = None) -> Run:
    module = dspy_module(case, kind) if module is None else module
    since = rec.mark()
    with dspy.context(lm=rec.dspy_lm):
        prediction = module(**case.inputs)
    return rec.collect(rec.dspy_base, prediction, since)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    with LMServer() as server:
        yield Recorder(server)


# ---------------------------------------------------------------------------- the corpus


def _values(case: Case) -> Iterator[Any]:
    yield from case.inputs.values()
    for demo in case.demos:
        yield from demo.values()


def test_corpus_values_hold_no_field_markers() -> None:
    """The one documented prompt divergence (escaped markers in values) cannot arise here."""
    for case in CASES:
        for value in _values(case):
            text = value.model_dump_json() if isinstance(value, pydantic.BaseModel) else repr(value)
            assert "[[ ##" not in text and "## ]]" not in text, case.seed
    assert len(CASES) >= 300


@pytest.mark.parametrize("chunk", range(CHUNKS))
@pytest.mark.parametrize("kind", KINDS)
def test_native_matches_dspy_in_process(recorder: Recorder, kind: str, chunk: int) -> None:
    for case in CASES[chunk::CHUNKS]:
        check_parity(
            case, kind, run_native(recorder, case, kind), run_dspy(recorder, case, kind), "dspy"
        )
    recorder.server.clear()


# ---------------------------------------------------------------------------- save / load interop


def _customize(case: Case) -> tuple[str, list[dict[str, Any]]]:
    """State a saved program carries beyond its constructor: new instructions and demos."""
    instructions = f"Saved program {case.seed}: follow the demos.\nBe exact."
    demos = case.demos or [{**case.inputs, **case.outputs}]
    return instructions, demos


def _predictor(module: Any, kind: str) -> Any:
    return module if kind == "predict" else module.predict


@pytest.mark.parametrize("kind", KINDS)
def test_dspy_saved_program_loads_natively_and_predicts_the_same(
    recorder: Recorder, kind: str, tmp_path: Path
) -> None:
    for case in SAVE_CASES:
        instructions, demos = _customize(case)
        saver = dspy_module(case, kind)
        pred = _predictor(saver, kind)
        pred.signature = pred.signature.with_instructions(instructions)
        pred.demos = [dspy.Example(**d) for d in demos]
        path = tmp_path / f"dspy-{kind}-{case.seed}.json"
        saver.save(str(path))

        native = native_module(case, kind)
        native.demos = []
        native.load(path)
        assert _predictor(native, kind).signature.instructions == instructions, case.seed
        assert len(native.demos) == len(demos), case.seed

        loaded = dspy_module(case, kind)
        loaded.load(str(path))
        check_parity(
            case,
            kind,
            run_native(recorder, case, kind, native),
            run_dspy(recorder, case, kind, loaded),
            "dspy (both loaded from a dspy save)",
        )
    recorder.server.clear()


@pytest.mark.parametrize("kind", KINDS)
def test_native_saved_program_loads_in_dspy_and_predicts_the_same(
    recorder: Recorder, kind: str, tmp_path: Path
) -> None:
    for case in SAVE_CASES:
        instructions, demos = _customize(case)
        saver = native_module(case, kind)
        pred = _predictor(saver, kind)
        pred.signature = pred.signature.with_instructions(instructions)
        saver.demos = [dspex.Example(**d) for d in demos]
        path = tmp_path / f"native-{kind}-{case.seed}.json"
        saver.save(path)

        loaded = dspy_module(case, kind)
        loaded.load(str(path))
        assert _predictor(loaded, kind).signature.instructions == instructions, case.seed
        # DSPy re-saves exactly what native saved (metadata aside).
        assert _without_metadata(loaded.dump_state()) == _without_metadata(
            json.loads(path.read_text())
        ), case.seed

        native = native_module(case, kind)
        native.load(path)
        check_parity(
            case,
            kind,
            run_native(recorder, case, kind, native),
            run_dspy(recorder, case, kind, loaded),
            "dspy (both loaded from a native save)",
        )
    recorder.server.clear()


def _without_metadata(state: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in state.items() if k != "metadata"}))
