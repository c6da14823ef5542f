"""The callbacks wrapper of an adapter's ``format``/``parse``: methods with plain parameters get
a wrapper built with those parameters (no ``*args``/``**kwargs`` packing per call). It must
behave as the generic one: keyword calls, arity errors, callback inputs, pickling by value."""

from __future__ import annotations

from typing import Any

import cloudpickle
import pytest

import dspex
from dspex.adapters import ChatAdapter
from dspex.utils.callback import BaseCallback

ANSWER = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"


class Recorder(BaseCallback):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.seen.append(("format", sorted(inputs)))

    def on_adapter_format_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self.seen.append(("format_end", exception))

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.seen.append(("parse", sorted(inputs)))

    def on_adapter_parse_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self.seen.append(("parse_end", outputs))


def test_keyword_calls_and_arity_errors_as_the_method() -> None:
    adapter = ChatAdapter()
    sig = dspex.Signature("question -> answer")
    positional = adapter.format(sig, [], {"question": "q"})
    assert adapter.format(signature=sig, demos=[], inputs={"question": "q"}) == positional
    assert adapter.parse(completion=ANSWER, signature=sig) == {"answer": "Paris"}
    with pytest.raises(TypeError, match=r"format\(\) missing 1 required positional argument"):
        adapter.format(sig, [])  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'other'"):
        adapter.parse(sig, ANSWER, other=1)  # type: ignore[call-arg]


def test_callbacks_see_format_and_parse_by_parameter_name() -> None:
    recorder = Recorder()
    adapter = ChatAdapter(callbacks=[recorder])
    sig = dspex.Signature("question -> answer")
    adapter.format(sig, [], {"question": "q"})
    adapter.parse(sig, ANSWER)
    assert recorder.seen == [
        ("format", ["demos", "inputs", "signature"]),
        ("format_end", None),
        ("parse", ["completion", "signature"]),
        ("parse_end", {"answer": "Paris"}),
    ]


def test_a_script_adapter_pickles_by_value_and_still_reports() -> None:
    def make() -> type[ChatAdapter]:
        class Shouting(ChatAdapter):
            def parse(self, signature: Any, completion: str) -> dict[str, Any]:
                return {k: v.upper() for k, v in super().parse(signature, completion).items()}

        return Shouting

    cls = cloudpickle.loads(cloudpickle.dumps(make()))
    recorder = Recorder()
    sig = dspex.Signature("question -> answer")
    with dspex.context(callbacks=[recorder]):
        assert cls().parse(sig, ANSWER) == {"answer": "PARIS"}
    # the subclass's parse and ChatAdapter's (called through super()) both report
    assert [kind for kind, _ in recorder.seen] == ["parse", "parse", "parse_end", "parse_end"]
