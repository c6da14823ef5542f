"""``dspex.primitives.sandbox_serializable`` and ``repl_types``: values a sandbox receives."""

from __future__ import annotations

import pytest

import dspex
from dspex.primitives.repl_types import REPLEntry, REPLHistory, REPLVariable
from dspex.primitives.sandbox_serializable import SandboxSerializable, build_repl_variable


class Rows(SandboxSerializable):
    def __init__(self, rows: list[int]) -> None:
        self.rows = rows

    def sandbox_setup(self) -> str:
        return "import json\n"

    def to_sandbox(self) -> bytes:
        return repr(self.rows).encode()

    def sandbox_assignment(self, var_name: str, data_expr: str) -> str:
        return f"{var_name} = json.loads({data_expr})"

    def rlm_preview(self, max_chars: int = 500) -> str:
        return f"Rows: {len(self.rows)}"[:max_chars]


def test_abstract_methods_are_enforced_and_typing_is_nominal() -> None:
    class Half(SandboxSerializable):
        def sandbox_setup(self) -> str:
            return ""

    with pytest.raises(TypeError, match="abstract"):
        Half()  # type: ignore[abstract]

    class Duck:
        def sandbox_setup(self) -> str:
            return ""

    assert not isinstance(Duck(), SandboxSerializable)
    assert isinstance(Rows([1]), SandboxSerializable)


def test_build_repl_variable_uses_the_preview_and_names_the_setup() -> None:
    field = dspex.InputField(desc="the table")
    variable = build_repl_variable(Rows([1, 2, 3]), "table", field_info=field)
    assert variable.name == "table"
    assert variable.type_name == "Rows"
    assert variable.preview == "Rows: 3"
    assert variable.total_length == len("Rows: 3")
    assert variable.desc == "the table\nSandbox imports available:\nimport json"
    assert Rows([]).to_repl_variable("t") == build_repl_variable(Rows([]), "t")


def test_subclass_works_as_a_signature_annotation() -> None:
    class Sig(dspex.Signature):
        table: Rows = dspex.InputField()
        answer: str = dspex.OutputField()

    assert Sig.input_fields["table"].annotation is Rows


def test_repl_variable_previews_long_values_head_and_tail() -> None:
    variable = REPLVariable.from_value("xs", "a" * 10 + "b" * 10, preview_chars=6)
    assert variable.preview == "aaa...bbb"
    assert variable.total_length == 20
    container = REPLVariable.from_value("d", {"k": [1]})
    assert container.preview == '{\n  "k": [\n    1\n  ]\n}'
    assert container.model_dump() == container.format()
    assert "Variable: `d` (access it in your code)" in container.format()
    placeholder = dspex.InputField(desc="${d}")
    assert REPLVariable.from_value("d", 1, field_info=placeholder).desc == ""


def test_repl_history_is_immutable_and_formats_its_steps() -> None:
    empty = REPLHistory()
    assert not empty
    assert empty.format() == "You have not interacted with the REPL environment yet."
    one = empty.append(reasoning="look", code="print(1)", output="1")
    assert len(empty) == 0 and len(one) == 1
    assert [entry.code for entry in one] == ["print(1)"]
    assert one.format() == (
        "=== Step 1 ===\nReasoning: look\nCode:\n```python\nprint(1)\n```\nOutput (1 chars):\n1"
    )
    cut = REPLEntry.format_output("x" * 30, max_output_chars=10)
    assert cut.startswith("Output (30 chars):\nxxxxx\n\n... (20 characters omitted) ...")
    assert cut.endswith("xxxxx")


def test_stream_listener_knows_which_text_may_still_end_a_field() -> None:
    from dspex.errors import CallError
    from dspex.streaming import StreamListener

    listener = StreamListener(signature_field_name="answer")
    assert listener._could_form_end_identifier("text [[ #", "ChatAdapter")
    assert listener._could_form_end_identifier("text [[ ## comp", "ChatAdapter")
    assert not listener._could_form_end_identifier("text [x]", "ChatAdapter")
    assert listener._could_form_end_identifier('value "}', "JSONAdapter")
    assert not listener._could_form_end_identifier("value", "JSONAdapter")
    assert listener._could_form_end_identifier("value </ans", "XMLAdapter")
    assert not listener._could_form_end_identifier("a < b", "XMLAdapter")
    with pytest.raises(CallError, match="Unsupported adapter for streaming"):
        listener._could_form_end_identifier("x", "TwoStepAdapter")
