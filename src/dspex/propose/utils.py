"""Helpers of the grounded proposer (DSPy's ``dspy.propose.utils``), on native programs.

``get_dspy_source_code`` renders the program the proposer describes to the prompt model: the
signatures of its predictors and the source of its module classes. The text is the one DSPy
3.4.1 builds for the same program (signatures built from strings are shown in DSPy's
``repr`` format, which names the fields' pydantic ``FieldInfo``), so the prompt bytes match.
"""

from __future__ import annotations

import inspect
import json
import linecache
import logging
import re
from typing import Any

from dspex.primitives.module import Module, Parameter

__all__ = [
    "create_example_string",
    "create_instruction_set_history_string",
    "create_predictor_level_history_string",
    "dspy_signature_repr",
    "get_dspy_source_code",
    "get_program_instruction_set_string",
    "parse_list_of_instructions",
    "strip_prefix",
]

logger = logging.getLogger(__name__)

_PREFIX = re.compile(r"^[\*\s]*(([\w\'\-]+\s+){0,4}[\w\'\-]+):\s*")
_NATIVE_UNDEFINED = "__dspy_is_type_undefined"
_DSPY_UNDEFINED = "IS_TYPE_UNDEFINED"


def strip_prefix(text: str) -> str:
    """Drop a leading ``Label:`` (up to five words) and surrounding double quotes."""
    return _PREFIX.sub("", text, count=1).strip('"')


def _signature(predictor: Any) -> Any:
    if not hasattr(predictor, "signature"):
        raise AttributeError(f"{type(predictor).__name__} has no signature")
    return predictor.signature


def _trial_programs(base_program: Any, trial_logs: dict[Any, Any]) -> list[dict[str, Any]]:
    programs: list[dict[str, Any]] = []
    for trial in trial_logs.values():
        if "program_path" in trial:
            program = base_program.deepcopy()
            program.load(trial["program_path"])
            programs.append({"program": program, "score": trial["score"]})
    return programs


def get_program_instruction_set_string(program: Any) -> str:
    """``["instruction 1", "instruction 2"]``: the program's instructions, predictor by predictor."""
    quoted = [f'"{_signature(p).instructions}"' for p in program.predictors()]
    return f"[{', '.join(quoted)}]"


def create_instruction_set_history_string(
    base_program: Any, trial_logs: dict[Any, Any], top_n: int
) -> str:
    """The ``top_n`` best distinct instruction sets of the logged trials, worst first."""
    unique: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in _trial_programs(base_program, trial_logs):
        key = get_program_instruction_set_string(entry["program"])
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    top = sorted(unique, key=lambda x: x["score"], reverse=True)[:top_n]
    top.reverse()
    return "".join(
        f"{get_program_instruction_set_string(e['program'])} | Score: {e['score']}\n\n" for e in top
    )


def parse_list_of_instructions(instruction_string: str) -> Any:
    """A JSON list, or else every double-quoted string in the text."""
    try:
        return json.loads(instruction_string)
    except json.JSONDecodeError:
        return re.findall(r'"([^"]*)"', instruction_string)


def create_predictor_level_history_string(
    base_program: Any, predictor_i: int, trial_logs: dict[Any, Any], top_n: int
) -> str:
    """The ``top_n`` instructions of predictor ``predictor_i`` by mean trial score, worst first."""
    totals: dict[str, list[float]] = {}
    for entry in _trial_programs(base_program, trial_logs):
        instruction = _signature(entry["program"].predictors()[predictor_i]).instructions
        bucket = totals.setdefault(instruction, [0.0, 0])
        bucket[0] += entry["score"]
        bucket[1] += 1
    averaged = [(instruction, total / count) for instruction, (total, count) in totals.items()]
    top = sorted(averaged, key=lambda x: x[1], reverse=True)[:top_n]
    top.reverse()
    return "".join(f"{instruction} | Score: {score}\n\n" for instruction, score in top)


def create_example_string(fields: dict[str, Any], example: Any) -> str:
    """One line per field: its prefix and the example's value for it."""
    return "\n".join(
        f"{field.json_schema_extra['prefix']} {example.get(name)}" for name, field in fields.items()
    )


# ---------------------------------------------------------------------------- program source
def _annotation_text(annotation: Any) -> str:
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def _extra_in_dspy_order(extra: dict[str, Any]) -> dict[str, Any]:
    """``json_schema_extra`` as DSPy holds it: a string signature's inputs carry the
    ``IS_TYPE_UNDEFINED`` marker first (DSPy passes it as the field's first argument)."""
    keys = list(extra)
    out: dict[str, Any] = {}
    if keys[:2] == ["__dspy_field_type", _NATIVE_UNDEFINED]:
        out[_DSPY_UNDEFINED] = extra[_NATIVE_UNDEFINED]
    for key, value in extra.items():
        if key == _NATIVE_UNDEFINED:
            if _DSPY_UNDEFINED not in out:
                out[_DSPY_UNDEFINED] = value
            continue
        out[key] = value
    return out


def _field_repr(field: Any) -> str:
    parts = [f"annotation={_annotation_text(field.annotation)}"]
    if field.is_required():
        parts.append("required=True")
    elif field.default_factory is not None:
        parts.append(f"default_factory={getattr(field.default_factory, '__name__', '?')}")
    else:
        parts.append(f"default={field.default!r}")
    if field.description is not None:
        parts.append(f"description={field.description!r}")
    parts.append(f"json_schema_extra={_extra_in_dspy_order(field.json_schema_extra)!r}")
    return " ".join(parts)


def dspy_signature_repr(signature: Any) -> str:
    """``repr`` of the signature as DSPy 3.4.1 prints its own (pydantic field reprs)."""
    fields = "\n    ".join(
        f"{name} = Field({_field_repr(field)})" for name, field in signature.fields.items()
    )
    inputs = ", ".join(signature.input_fields)
    outputs = ", ".join(signature.output_fields)
    return (
        f"{signature.__name__}({inputs} -> {outputs}\n"
        f"    instructions={signature.instructions!r}\n    {fields}\n)"
    )


def _signature_key(signature: Any) -> str:
    # DSPy keys a signature by the name its metaclass saw: a class statement's own name, or
    # "Signature" for the ones built from strings or derived from another signature.
    name = signature.__name__
    return ("Signature" if name == "StringSignature" else name) + "_sig"


def _class_source(cls: Any) -> str:
    """``inspect.getsource(cls)``, failing at once (the same ``OSError``) when no ``class``
    statement of that name is in the class's source file: a signature built from a string
    names a class its file never defines, and ``inspect`` parses the whole file (tens of
    milliseconds for the signatures module) to find that out."""
    file = inspect.getsourcefile(cls) if isinstance(cls, type) else None
    if file:
        linecache.checkcache(file)
        lines = linecache.getlines(file)
        name = cls.__qualname__.rpartition(".")[2]
        pattern = rf"^[ \t]*class[ \t]+{re.escape(name)}\b"
        if lines and re.search(pattern, "".join(lines), re.MULTILINE) is None:
            raise OSError("could not find class definition")
    return inspect.getsource(cls)


def get_dspy_source_code(module: Any) -> str:
    """The signatures of ``module``'s predictors and the source of its classes (DSPy's text)."""
    header: list[str] = []
    base_code = ""
    if type(module).__name__ not in ("Predict", "ChainOfThought"):
        try:
            base_code = inspect.getsource(type(module))
        except OSError as exc:  # DSPy reads notebook cells through IPython here
            raise TypeError(f"source code of {type(module).__name__} is not available") from exc

    completed: set[Any] = set()
    for attribute in list(module.__dict__):
        value = getattr(module, attribute)
        try:
            items = list(iter(value))
        except TypeError:
            items = [value]
        for item in items:
            try:
                hash(item)
            except TypeError:
                continue
            if isinstance(item, Parameter):
                signature = getattr(item, "signature", None)
                if signature is not None and _signature_key(signature) not in completed:
                    try:
                        header.append(_class_source(signature))
                    except (TypeError, OSError):
                        header.append(dspy_signature_repr(signature))
                    completed.add(_signature_key(signature))
            if isinstance(item, Module):
                code = get_dspy_source_code(item).strip()
                if code not in completed:
                    header.append(code)
                    completed.add(code)
            completed.add(item)
    return "\n\n".join(header) + "\n\n" + base_code
