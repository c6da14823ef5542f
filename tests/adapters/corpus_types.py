"""A seeded corpus of signatures over DSPy's custom types (multimodal inputs, code, tools...).

Like ``corpus.py``, each case is described once and built independently with DSPy's and with
DSPex's public classes (``lib.Image``, ``lib.Tool``...), so the parity tests compare both the
construction of the values and the adapters' messages.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from tests.adapters.corpus import TEXTS

PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
URLS = [
    "https://example.com/cat.png",
    "https://example.org/a/b.jpg?x=1",
    "gs://bucket/img.webp",
    PNG,
]


def add(x: int, y: int = 2) -> int:
    """Add two numbers."""
    return x + y


def search(query: str, limit: int = 3) -> list[str]:
    """Search the web.

    Returns titles."""
    return [query] * limit


def lookup(key: str, strict: bool = False) -> str:
    return key


TOOL_FUNCS = [add, search, lookup]


def _experimental(lib: Any, name: str) -> Any:
    return getattr(importlib.import_module(f"{lib.__name__}.experimental"), name)


# kind -> (annotation builder, value builder(lib, rng), usable as input, usable as output)
Kind = tuple[Callable[[Any], Any], Callable[[Any, random.Random], Any], bool, bool]


def _text(r: random.Random) -> str:
    return r.choice(TEXTS) or "x"


KINDS: dict[str, Kind] = {
    "str": (lambda lib: str, lambda lib, r: _text(r), True, True),
    "int": (lambda lib: int, lambda lib, r: r.randint(-50, 50), True, True),
    "image": (lambda lib: lib.Image, lambda lib, r: lib.Image(r.choice(URLS)), True, False),
    "images": (
        lambda lib: list[lib.Image],
        lambda lib, r: [lib.Image(u) for u in r.sample(URLS, r.randint(1, 3))],
        True,
        False,
    ),
    "opt_image": (
        lambda lib: Optional[lib.Image],  # noqa: UP045
        lambda lib, r: lib.Image(r.choice(URLS)) if r.random() < 0.7 else None,
        True,
        False,
    ),
    "image_map": (
        lambda lib: dict[str, lib.Image],
        lambda lib, r: {"front": lib.Image(r.choice(URLS)), "back": lib.Image(PNG)},
        True,
        False,
    ),
    "file": (
        lambda lib: lib.File,
        lambda lib, r: r.choice(
            [
                lib.File.from_bytes(
                    _text(r).encode(), filename="notes.txt", mime_type="text/plain"
                ),
                lib.File.from_file_id("file-abc123", filename="report.pdf"),
                lib.File(file_data="data:application/pdf;base64,JVBERi0=", filename="a.pdf"),
            ]
        ),
        True,
        False,
    ),
    "audio": (
        lambda lib: lib.Audio,
        lambda lib, r: lib.Audio(data="UklGRiQAAABXQVZF", audio_format=r.choice(["wav", "mp3"])),
        True,
        False,
    ),
    "code": (
        lambda lib: lib.Code["python"],
        lambda lib, r: lib.Code["python"](code=r.choice(["print(1)", "def f(x):\n    return x"])),
        True,
        True,
    ),
    "code_java": (
        lambda lib: lib.Code["java"],
        lambda lib, r: lib.Code["java"](code="class A {}"),
        True,
        True,
    ),
    "reasoning": (
        lambda lib: lib.Reasoning,
        lambda lib, r: lib.Reasoning(content=_text(r)),
        False,
        True,
    ),
    "documents": (
        lambda lib: list[_experimental(lib, "Document")],
        lambda lib, r: [
            _experimental(lib, "Document")(data=_text(r), title=r.choice([None, "Doc"]))
            for _ in range(r.randint(1, 2))
        ],
        True,
        False,
    ),
}
INPUT_KINDS = [k for k, v in KINDS.items() if v[2]]
OUTPUT_KINDS = [k for k, v in KINDS.items() if v[3]]
NAMES = ["question", "photo", "pictures", "attachment", "clip", "snippet", "answer", "notes"]


@dataclass
class TypeCase:
    seed: int
    inputs: list[tuple[str, str]]  # (name, kind)
    outputs: list[tuple[str, str]]
    tools: bool  # a list[Tool] input and a ToolCalls output
    instructions: str | None
    n_demos: int
    extras: dict[str, Any] = field(default_factory=dict)

    def build(self, lib: Any) -> Any:
        spec: dict[str, Any] = {}
        for name, kind in self.inputs:
            spec[name] = (KINDS[kind][0](lib), lib.InputField())
        if self.tools:
            spec["tools"] = (list[lib.Tool], lib.InputField())
        for name, kind in self.outputs:
            spec[name] = (KINDS[kind][0](lib), lib.OutputField())
        if self.tools:
            spec["calls"] = (lib.ToolCalls, lib.OutputField())
        return lib.Signature(spec, self.instructions)

    def _values(self, lib: Any, fields: list[tuple[str, str]], salt: int) -> dict[str, Any]:
        r = random.Random(self.seed * 1000 + salt)
        return {name: KINDS[kind][1](lib, r) for name, kind in fields}

    def input_values(self, lib: Any, salt: int = 0) -> dict[str, Any]:
        values = self._values(lib, self.inputs, salt)
        if self.tools:
            r = random.Random(self.seed + salt)
            values["tools"] = [lib.Tool(f) for f in r.sample(TOOL_FUNCS, r.randint(1, 3))]
        return values

    def output_values(self, lib: Any, salt: int = 0) -> dict[str, Any]:
        values = self._values(lib, self.outputs, salt + 500)
        if self.tools:
            r = random.Random(self.seed + salt + 7)
            values["calls"] = lib.ToolCalls.from_dict_list(
                [
                    {"name": "add", "args": {"x": r.randint(0, 9)}},
                    {"name": "search", "args": {"query": "q"}},
                ][: r.randint(1, 2)]
            )
        return values

    def demos(self, lib: Any) -> list[Any]:
        return [
            lib.Example(**self.input_values(lib, i + 1), **self.output_values(lib, i + 1))
            for i in range(self.n_demos)
        ]


def make_type_case(seed: int) -> TypeCase:
    r = random.Random(seed)
    names = r.sample(NAMES, r.randint(2, 5))
    n_in = r.randint(1, len(names) - 1)
    inputs = [(n, r.choice(INPUT_KINDS)) for n in names[:n_in]]
    outputs = [(n, r.choice(OUTPUT_KINDS)) for n in names[n_in:]]
    return TypeCase(
        seed=seed,
        inputs=inputs,
        outputs=outputs,
        tools=r.random() < 0.3,
        instructions=r.choice([None, "Describe the inputs.", "Use the tools.\nThen answer."]),
        n_demos=r.choice([0, 0, 1, 2]),
    )


TYPE_CASES = [make_type_case(seed) for seed in range(520)]
