"""A seeded corpus of signatures, demos and inputs for the native-vs-DSPy parity suites.

Each case is described once (field names, types, descriptions, instructions, values) and built
independently with DSPy's and with DSPex's public constructors, so the comparison tests both
the construction and the adapters.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import pydantic


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Person(pydantic.BaseModel):
    name: str
    age: int
    tags: list[str] = []


class Box(pydantic.BaseModel):
    label: str
    owner: Person | None = None


# (annotation, string form or None, value maker)
TEXTS = [
    "",
    "plain",
    "two\nlines",
    "unicode ✓ 日本語",
    "«angle» quotes",
    '{"json": [1, 2]}',
    "  padded  ",
    "tab\tsep",
    "ümlaut",
]


def _text(r: random.Random) -> str:
    return r.choice(TEXTS) + (str(r.randint(0, 99)) if r.random() < 0.5 else "")


TYPES: list[tuple[Any, str | None, Any]] = [
    (str, "str", _text),
    (int, "int", lambda r: r.randint(-1000, 1000)),
    (float, "float", lambda r: round(r.uniform(-5, 5), 3)),
    (bool, "bool", lambda r: r.random() < 0.5),
    (list[str], "list[str]", lambda r: [_text(r) for _ in range(r.randint(0, 3))]),
    (list[int], "list[int]", lambda r: [r.randint(0, 9) for _ in range(r.randint(0, 4))]),
    (
        dict[str, int],
        "dict[str, int]",
        lambda r: {f"k{i}": r.randint(0, 9) for i in range(r.randint(0, 3))},
    ),
    (dict[str, list[str]], "dict[str, list[str]]", lambda r: {"a": [_text(r)], "b": []}),
    (tuple[int, str], "tuple[int, str]", lambda r: (r.randint(0, 9), _text(r))),
    (Optional[str], "Optional[str]", lambda r: None if r.random() < 0.3 else _text(r)),  # noqa: UP045
    (int | None, "int | None", lambda r: None if r.random() < 0.3 else r.randint(0, 9)),
    (Literal["yes", "no"], "Literal['yes', 'no']", lambda r: r.choice(["yes", "no"])),
    (Literal["it's", "x y"], None, lambda r: r.choice(["it's", "x y"])),
    (Literal[1, 2, 3], "Literal[1, 2, 3]", lambda r: r.choice([1, 2, 3])),
    (Color, None, lambda r: r.choice(list(Color))),
    (Person, None, lambda r: Person(name=_text(r), age=r.randint(0, 90), tags=["t"])),
    (list[Person], None, lambda r: [Person(name="a", age=1)]),
    (
        Box,
        None,
        lambda r: Box(label="l", owner=Person(name="o", age=3) if r.random() < 0.5 else None),
    ),
    (list[dict[str, Any]], None, lambda r: [{"n": 1, "s": "x", "nested": {"deep": [1, None]}}]),
]

INSTRUCTIONS = [
    None,
    "Answer the question.",
    "Be concise.\nUse the context.\n\n  Indented line.",
    "Réponds en français — s'il te plaît.",
    "",
]
DESCS = [
    None,
    None,
    "a short description",
    "multi\nline description",
    "with `backticks` and ${braces}",
]
NAMES = [
    "question",
    "context",
    "answer",
    "score",
    "items",
    "mode",
    "notes",
    "rationale",
    "x1",
    "camelCase",
    "snake_case_name",
    "HTML",
    "text2number",
]


@dataclass
class FieldSpec:
    name: str
    index: int  # into TYPES
    desc: str | None
    is_input: bool


@dataclass
class Case:
    seed: int
    fields: list[FieldSpec]
    instructions: str | None
    form: str  # "string" | "dict"
    demos: list[dict[str, Any]] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    def string_form(self) -> str:
        def part(f: FieldSpec) -> str:
            typ = TYPES[f.index][1]
            return f.name if typ == "str" and f.index == 0 and self.seed % 2 else f"{f.name}: {typ}"

        ins = ", ".join(part(f) for f in self.fields if f.is_input)
        outs = ", ".join(part(f) for f in self.fields if not f.is_input)
        return f"{ins} -> {outs}"

    def build(self, lib: Any) -> Any:
        if self.form == "string":
            return lib.Signature(self.string_form(), self.instructions)
        spec = {}
        for f in self.fields:
            kwargs = {"desc": f.desc} if f.desc is not None else {}
            made = lib.InputField(**kwargs) if f.is_input else lib.OutputField(**kwargs)
            spec[f.name] = (TYPES[f.index][0], made)
        return lib.Signature(spec, self.instructions)


def make_case(seed: int) -> Case:
    r = random.Random(seed)
    names = r.sample(NAMES, r.randint(2, 6))
    n_inputs = r.randint(1, len(names) - 1)
    form = "string" if r.random() < 0.4 else "dict"
    fields = []
    for i, name in enumerate(names):
        choices = [k for k, t in enumerate(TYPES) if form == "dict" or t[1] is not None]
        fields.append(
            FieldSpec(
                name, r.choice(choices), None if form == "string" else r.choice(DESCS), i < n_inputs
            )
        )
    instructions = r.choice(INSTRUCTIONS) if form == "dict" or r.random() < 0.5 else None
    if instructions == "" and form == "string":
        instructions = None
    case = Case(seed, fields, instructions, form)

    def values(r: random.Random, which: list[FieldSpec]) -> dict[str, Any]:
        return {f.name: TYPES[f.index][2](r) for f in which}

    ins = [f for f in fields if f.is_input]
    outs = [f for f in fields if not f.is_input]
    case.inputs = values(r, ins)
    case.outputs = values(r, outs)
    for _ in range(r.randint(0, 3)):
        demo = {**values(r, ins), **values(r, outs)}
        if r.random() < 0.35:  # an incomplete demo: drop some fields
            for key in r.sample(list(demo), max(1, len(demo) // 2)):
                demo.pop(key)
        case.demos.append(demo)
    return case


CASES = [make_case(seed) for seed in range(520)]
