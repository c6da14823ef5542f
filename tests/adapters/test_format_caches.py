"""The per-signature caches behind ``format``/``parse`` never serve an old result: changing a
signature's instructions (through the API or ``__doc__``), its fields, the demos or the
adapter class is seen by the next call."""

from __future__ import annotations

import dspex
from dspex.adapters import ChatAdapter, JSONAdapter
from dspex.adapters.chat import split_sections
from dspex.testing import DummyLM


def _system(adapter: ChatAdapter, signature: object) -> str:
    messages = adapter.format(signature, [], {"question": "q"})
    content: str = messages[0]["content"]
    return content


def test_instruction_changes_reach_the_system_message() -> None:
    sig = dspex.Signature("question -> answer")
    adapter = ChatAdapter()
    assert "Given the fields `question`, produce the fields `answer`." in _system(adapter, sig)
    sig.instructions = "Answer in French."
    assert "Answer in French." in _system(adapter, sig)
    sig.__doc__ = "Answer in German."  # assigned directly: no cache reset runs
    text = _system(adapter, sig)
    assert "Answer in German." in text and "French" not in text
    assert "Answer in Latin." in _system(adapter, sig.with_instructions("Answer in Latin."))


def test_field_changes_and_adapter_class_are_seen() -> None:
    sig = dspex.Signature("question -> answer")
    adapter = ChatAdapter()
    before = _system(adapter, sig)
    changed = sig.with_updated_fields("answer", desc="one word")
    assert "one word" in _system(adapter, changed) and "one word" not in before
    assert "confidence" in _system(adapter, sig.append("confidence", dspex.OutputField()))

    class Loud(ChatAdapter):  # same signature, another adapter class: its own system message
        def format_task_description(self, signature: object) -> str:
            return "LOUD"

    assert _system(Loud(), sig).endswith("LOUD") and not _system(adapter, sig).endswith("LOUD")
    json_system = JSONAdapter().format(sig, [], {"question": "q"})[0]["content"]
    assert json_system != _system(adapter, sig)


def test_demo_mutation_in_place_is_seen() -> None:
    seen: list[list[dict[str, str]]] = []
    lm = DummyLM(lambda messages: seen.append(messages) or "[[ ## answer ## ]]\nok")
    predict = dspex.Predict("question -> answer")
    with dspex.context(lm=lm):
        predict(question="q")
        predict.demos.append(dspex.Example(question="2+2?", answer="4"))
        predict(question="q")
        predict.demos[0]["answer"] = "four"
        predict(question="q")
    assert len(seen[0]) == 2 and len(seen[1]) == 4
    assert "4" in seen[1][2]["content"] and "four" in seen[2][2]["content"]


def test_marker_split_matches_the_line_rules() -> None:
    text = "lead\n  [[ ## answer ## ]] first\nmore\n\n\t[[ ## completed ## ]]"
    assert split_sections(text) == [(None, "lead"), ("answer", "first\nmore"), ("completed", "")]
    inline = "see [[ ## answer ## ]] here\n[[ ## answer ## ]]\nreal"
    assert split_sections(inline) == [(None, "see [[ ## answer ## ]] here"), ("answer", "real")]
