"""GEPA's instruction proposers (DSPy 3.4.1's ``dspy.teleprompt.gepa.instruction_proposal``).

:class:`InstructionProposer` is the default: per component it asks the reflection LM, through a
native ``Predict`` under a ``JSONAdapter``, for a new instruction from the current one and the
reflective examples (structured values: images reach the LM as image content). Its prompts,
fields and options are DSPy's, so the reflection LM receives the same requests.
:class:`MultiModalInstructionProposer` is DSPy's older markdown-rendering proposer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict

from dspex import settings
from dspex.adapters.base import Adapter
from dspex.adapters.types import History
from dspex.adapters.types.base_type import Type
from dspex.modules.predict import Predict
from dspex.primitives.module import Module
from dspex.signatures import InputField, OutputField, Signature

__all__ = [
    "CompressInstruction",
    "GenerateEnhancedMultimodalInstructionFromFeedback",
    "InstructionProposer",
    "MultiModalInstructionProposer",
    "ProposeInstruction",
    "ReflectiveExample",
    "SingleComponentMultiModalProposer",
    "compact_history",
]

ReflectiveExample = TypedDict(
    "ReflectiveExample",
    {"Inputs": dict[str, Any], "Generated Outputs": dict[str, Any] | str, "Feedback": str},
)
ReflectiveExample.__doc__ = (
    "An example's predictor inputs, generated outputs, and evaluation feedback."
)


# ---------------------------------------------------------------------------- skills


@dataclass(frozen=True)
class _Skill:
    name: str
    content: str
    description: str | None = None


_SUFFIXES = (".md", ".markdown", ".txt")
_PATH_START = re.compile(r"^(?:\.{1,2}[\\/]|~[\\/]|[\\/]|[A-Za-z]:[\\/])")


def _existing(source: str) -> Path | None:
    try:
        path = Path(source).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError):
        return None


def _meant_as_path(source: str) -> bool:
    """Whether a string naming nothing on disk was meant as a path (DSPy's rules)."""
    if "\n" in source or "\r" in source:
        return False
    text = source.strip()
    separator = "/" in text or "\\" in text
    if not re.search(r"\s", text):
        return separator or text.startswith((".", "~")) or text.lower().endswith(_SUFFIXES)
    if _PATH_START.match(text):
        return True
    if not separator:
        return False
    try:
        return Path(text).expanduser().parent.exists()
    except (OSError, ValueError):
        return False


def _frontmatter(text: str) -> tuple[dict[str, str], str]:
    import yaml  # type: ignore[import-untyped]

    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, text
    for end in range(1, len(lines)):
        if lines[end].rstrip() != "---":
            continue
        try:
            meta = yaml.safe_load("\n".join(lines[1:end]) + "\n")
        except yaml.YAMLError as exc:
            raise ValueError("Invalid YAML skill frontmatter.") from exc
        meta = {} if meta is None else meta
        if not isinstance(meta, dict):
            raise ValueError("Skill frontmatter must be a YAML mapping.")
        kept: dict[str, str] = {}
        for key in ("name", "description"):
            if key in meta:
                if not isinstance(meta[key], str):
                    raise ValueError(f"Skill frontmatter {key!r} must be a string.")
                kept[key] = meta[key]
        return kept, "\n".join(lines[end + 1 :])
    raise ValueError("Skill frontmatter is missing its closing '---'.")


def _skill_from_text(text: str, fallback: str | None) -> _Skill:
    text = text.strip()
    if not text:
        raise ValueError("Empty skill content.")
    meta, content = _frontmatter(text)
    content = content.strip()
    if not content:
        raise ValueError("Empty skill content after removing frontmatter.")
    if fallback is None:
        first = content.splitlines()[0].lstrip("# ").strip()
        fallback = (first[:60] + "…" if len(first) > 60 else first) or "inline-skill"
    return _Skill(meta.get("name") or fallback, content, meta.get("description"))


def _skill_from_path(path: Path) -> _Skill:
    if not path.exists():
        raise FileNotFoundError(f"Skill path {path} does not exist.")
    if path.is_dir():
        skill_md = path / "SKILL.md"
        if not skill_md.exists():
            raise FileNotFoundError(f"Skill directory {path} has no SKILL.md.")
        return _skill_from_text(skill_md.read_text(encoding="utf-8"), path.name)
    return _skill_from_text(path.read_text(encoding="utf-8"), path.stem)


def load_skill(source: str | Path) -> _Skill:
    """A skill from a directory with ``SKILL.md``, a file, or inline text."""
    if isinstance(source, Path):
        return _skill_from_path(source.expanduser())
    if not isinstance(source, str):
        raise TypeError(f"A skill must be a str or a Path, not {type(source).__name__}.")
    if not source.strip():
        raise ValueError("Empty skill content.")
    path = _existing(source)
    if path is not None:
        return _skill_from_path(path)
    if _meant_as_path(source):
        raise FileNotFoundError(
            f"Skill {source!r} looks like a path, but no such file or directory exists. "
            "Pass the path to an existing skill file or directory. Inline skill content that "
            "resembles a path must span more than one line."
        )
    return _skill_from_text(source, None)


def _render_skill(skill: _Skill) -> str:
    attrs = f"name={skill.name!r}"
    if skill.description:
        attrs += f" description={skill.description!r}"
    return f"<skill {attrs}>\n{skill.content.strip()}\n</skill>"


# ---------------------------------------------------------------------------- signatures


class ProposeInstruction(Signature):
    """I provided an assistant with instructions to perform a task for me. You are given those instructions, along with examples of different task inputs provided to the assistant, the assistant's response for each of them, and some feedback on how the assistant's response could be better.

    Your task is to write a new instruction for the assistant.

    Read the inputs carefully and identify the input format and infer detailed task description about the task I wish to solve with the assistant.

    Read all the assistant responses and the corresponding feedback. Identify all niche and domain specific factual information about the task and include it in the instruction, as a lot of it may not be available to the assistant in the future. The assistant may have utilized a generalizable strategy to solve the task, if so, include that in the instruction as well."""

    current_instruction: str = InputField(desc="The instructions I provided to the assistant.")
    examples_with_feedback: list[dict[str, Any]] = InputField(
        desc="Task inputs provided to the assistant, the assistant's response for each, "
        "and feedback on how the response could be better."
    )
    new_instruction: str = OutputField(desc="The new instruction for the assistant.")


class CompressInstruction(Signature):
    """Shorten the instruction to fit within the stated limit. Preserve every
    strategy, rule, and constraint; cut redundancy and verbosity. Do not add
    new content. Output only the shortened instruction."""

    instruction: str = InputField()
    length_limit: str = InputField()
    shortened_instruction: str = OutputField()


# ---------------------------------------------------------------------------- long inputs

_COMPACTED_CHARS = 500


def compact_history(history: History, max_chars: int = _COMPACTED_CHARS) -> History:
    """A copy of ``history`` with each tool result longer than ``max_chars`` cut (marked)."""
    from dspex.adapters.types.tool_calls import ToolCallResults, ToolCalls

    def cut(calls: Any) -> Any:
        results = calls.tool_call_results
        shortened = []
        for result in results.tool_call_results:
            text = result.value if isinstance(result.value, str) else str(result.value)
            if len(text) > max_chars:
                marker = f" [{len(text) - max_chars:,} of {len(text):,} characters cut]"
                result = result.model_copy(update={"value": text[:max_chars] + marker})
            shortened.append(result)
        new_results = results.model_copy(update={"tool_call_results": shortened})
        return calls.model_copy(update={"tool_call_results": new_results})

    messages = []
    for message in history.messages:
        messages.append(
            {
                key: cut(value)
                if isinstance(value, ToolCalls)
                and isinstance(getattr(value, "tool_call_results", None), ToolCallResults)
                else value
                for key, value in message.items()
            }
        )
    return History(messages)


def _compact(value: Any) -> Any:
    if isinstance(value, History):
        return compact_history(value)
    if hasattr(value, "max_output_chars") and hasattr(value, "model_copy"):  # a REPL history
        limit = min(int(value.max_output_chars), _COMPACTED_CHARS)
        return value.model_copy(update={"max_output_chars": limit})
    if isinstance(value, Mapping):
        return {key: _compact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_compact(item) for item in value]
    return value


# ---------------------------------------------------------------------------- the proposer


def _clean_text(label: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{label} must be a str or None, got {type(value).__name__}.")
    return value.strip() or None


class InstructionProposer:
    """GEPA's default instruction proposer (DSPy 3.4.1's arguments and prompts).

    ``skills`` (paths or inline text, loaded now), ``additional_instructions``,
    ``base_instructions`` (replaces the prompt), ``max_chars`` (one compression call, then a
    pydantic ``ValidationError``), ``truncate_history_outputs`` and ``adapter`` (default
    ``JSONAdapter()``).
    """

    def __init__(
        self,
        skills: str | Path | Sequence[str | Path] | None = None,
        additional_instructions: str | None = None,
        base_instructions: str | None = None,
        max_chars: int | None = None,
        truncate_history_outputs: bool = False,
        adapter: Adapter | None = None,
    ) -> None:
        from pydantic import StringConstraints, TypeAdapter

        from dspex.adapters.json import JSONAdapter

        if max_chars is not None and (
            isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars <= 0
        ):
            raise ValueError(f"max_chars must be a positive int or None, got {max_chars!r}.")
        if not isinstance(truncate_history_outputs, bool):
            raise TypeError(
                "truncate_history_outputs must be a bool, got "
                f"{type(truncate_history_outputs).__name__}."
            )
        if adapter is not None and not isinstance(adapter, Adapter):
            raise TypeError(
                f"adapter must be a dspy.Adapter or None, got {type(adapter).__name__}."
            )
        sources = [skills] if isinstance(skills, str | Path) else list(skills or ())
        self.skills: tuple[_Skill, ...] = tuple(load_skill(s) for s in sources)
        self.additional_instructions = _clean_text(
            "additional_instructions", additional_instructions
        )
        self.base_instructions = _clean_text("base_instructions", base_instructions)
        self.max_chars = max_chars
        self._instruction_validator: Any = TypeAdapter(
            Annotated[
                str, StringConstraints(strip_whitespace=True, min_length=1, max_length=max_chars)
            ]
        )
        self.truncate_history_outputs = truncate_history_outputs
        self.adapter: Adapter = adapter if adapter is not None else JSONAdapter()

        # Static fields first (prompt caching): each prepend lands at index 0.
        signature: Any = ProposeInstruction
        if self._length_limit_text():
            signature = signature.prepend(
                "length_limit",
                InputField(desc="Hard limit on the length of the new instruction."),
                str,
            )
        if self.additional_instructions:
            signature = signature.prepend(
                "additional_instructions",
                InputField(
                    desc="Additional requirements from the user for the new instruction. Follow them."
                ),
                str,
            )
        if self.skills:
            signature = signature.prepend(
                "reference_skills",
                InputField(
                    desc="Trusted reference material chosen by the user. Draw on it when writing the new instruction."
                ),
                str,
            )
        if self.base_instructions:
            signature = signature.with_instructions(self.base_instructions)
        self.propose = Predict(signature)
        self.compress = Predict(CompressInstruction) if self._length_limit_text() else None

    def __call__(
        self,
        candidate: dict[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components_to_update: list[str],
    ) -> dict[str, str]:
        """A new instruction per component to update (present in both ``candidate`` and
        ``reflective_dataset``)."""
        results: dict[str, str] = {}
        for name in components_to_update:
            if name not in candidate or name not in reflective_dataset:
                continue
            inputs: dict[str, Any] = {}
            if self.skills:
                inputs["reference_skills"] = "\n\n".join(_render_skill(s) for s in self.skills)
            if self.additional_instructions:
                inputs["additional_instructions"] = self.additional_instructions
            if self.compress is not None:
                inputs["length_limit"] = self._length_limit_text()
            inputs["current_instruction"] = candidate[name]
            inputs["examples_with_feedback"] = self._prepare_examples(reflective_dataset[name])
            with settings.context(adapter=self.adapter):
                draft = str(self.propose(**inputs).new_instruction).strip()
            if not draft:
                raise ValueError(
                    f"The reflection LM returned an empty instruction for component {name!r}."
                )
            results[name] = self._enforce_length(draft)
        return results

    def _prepare_examples(self, examples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if self.truncate_history_outputs:
            return [_compact(example) for example in examples]
        return [dict(example) for example in examples]

    def _length_limit_text(self) -> str:
        if self.max_chars is None:
            return ""
        return f"The new instruction must be at most {self.max_chars} characters."

    def _enforce_length(self, draft: str) -> str:
        from pydantic import ValidationError

        try:
            return str(self._instruction_validator.validate_python(draft))
        except ValidationError:
            if self.compress is None:
                raise
        with settings.context(adapter=self.adapter):
            shortened = self.compress(
                instruction=draft, length_limit=self._length_limit_text()
            ).shortened_instruction
        return str(self._instruction_validator.validate_python(shortened))


# ---------------------------------------------------------------------------- multimodal


class GenerateEnhancedMultimodalInstructionFromFeedback(Signature):
    """I provided an assistant with instructions to perform a task involving visual content, but the assistant's performance needs improvement based on the examples and feedback below.

    Your task is to write a better instruction for the assistant that addresses the specific issues identified in the feedback, with particular attention to how visual and textual information should be analyzed and integrated.

    ## Analysis Steps:
    1. **Read the inputs carefully** and identify both the visual and textual input formats, understanding how they work together
    2. **Read all the assistant responses and corresponding feedback** to understand what went wrong with visual analysis, text processing, or their integration
    3. **Identify visual analysis patterns** - what visual features, relationships, or details are important for this task
    4. **Identify domain-specific knowledge** about both visual and textual aspects, as this information may not be available to the assistant in the future
    5. **Look for successful visual-textual integration strategies** and include these patterns in the instruction
    6. **Address specific visual analysis issues** mentioned in the feedback

    ## Instruction Requirements:
    - **Clear task definition** explaining how to process both visual and textual inputs
    - **Visual analysis guidance** specific to this task (what to look for, how to describe, what features matter)
    - **Integration strategies** for combining visual observations with textual information
    - **Domain-specific knowledge** about visual concepts, terminology, or relationships
    - **Error prevention guidance** for common visual analysis mistakes shown in the feedback
    - **Precise, actionable language** for both visual and textual processing

    Focus on creating an instruction that helps the assistant properly analyze visual content, integrate it with textual information, and avoid the specific visual analysis mistakes shown in the examples."""

    current_instruction = InputField(
        desc="The current instruction that was provided to the assistant to perform the multimodal task"
    )
    examples_with_feedback = InputField(
        desc="Task examples with visual content showing inputs, assistant outputs, and feedback. "
        "Pay special attention to feedback about visual analysis accuracy, visual-textual integration, "
        "and any domain-specific visual knowledge that the assistant missed."
    )
    improved_instruction = OutputField(
        desc="A better instruction for the assistant that addresses visual analysis issues, provides "
        "clear guidance on how to process and integrate visual and textual information, includes "
        "necessary visual domain knowledge, and prevents the visual analysis mistakes shown in the examples."
    )


_ERROR_WORDS = ("incorrect", "wrong", "error", "failed", "missing")
_SUCCESS_WORDS = ("correct", "good", "accurate", "well", "successfully")
_KNOWLEDGE_WORDS = ("should know", "domain", "specific", "context", "background")


def _render(value: Any, level: int, images: list[Any]) -> str:
    """GEPA's markdown for one value; ``Type`` values become placeholders collected in ``images``."""
    if isinstance(value, Type):
        images.append(value)
        return f"[IMAGE-{len(images)} - see visual content]\n\n"
    if isinstance(value, dict | list | tuple):
        items = (
            value.items()
            if isinstance(value, dict)
            else ((f"Item {i + 1}", v) for i, v in enumerate(value))
        )
        text = "".join(
            f"{'#' * level} {key}\n" + _render(item, min(level + 1, 6), images)
            for key, item in items
        )
        return text if value else text + "\n"
    return f"{str(value).strip()}\n\n"


class SingleComponentMultiModalProposer(Module):
    """Proposes one component's instruction from its reflective examples (images kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.propose_instruction = Predict(GenerateEnhancedMultimodalInstructionFromFeedback)

    def forward(self, current_instruction: str, reflective_dataset: list[ReflectiveExample]) -> str:
        text, images = self._format(reflective_dataset)
        examples: Any = [text, *images] if images else text
        result = self.propose_instruction(
            current_instruction=current_instruction, examples_with_feedback=examples
        )
        return str(result.improved_instruction)

    @staticmethod
    def _format(dataset: Sequence[Mapping[str, Any]]) -> tuple[str, list[Any]]:
        parts: list[str] = []
        images: list[Any] = []
        for number, example in enumerate(dataset, start=1):
            own: list[Any] = []
            part = f"# Example {number}\n"
            for key, value in example.items():
                part += f"## {key}\n" + _render(value, 3, own)
            parts.append(part)
            images.extend(own)
        text = "\n\n".join(parts)
        if images:
            text = (
                f"The examples below include visual content ({len(images)} images total). "
                "Please analyze both the text and visual elements when suggesting improvements.\n\n"
                + text
            )
        summary = _pattern_summary(dataset)
        return (f"{summary}\n\n{text}" if summary else text), images


def _pattern_summary(dataset: Sequence[Mapping[str, Any]]) -> str:
    feedback = [str(example.get("Feedback", "")).lower() for example in dataset]
    errors = sum(any(w in f for w in _ERROR_WORDS) for f in feedback)
    successes = sum(any(w in f for w in _SUCCESS_WORDS) for f in feedback)
    gaps = sum(any(w in f for w in _KNOWLEDGE_WORDS) for f in feedback)
    if not (errors or successes or gaps):
        return ""
    lines = ["## Feedback Pattern Analysis\n"]
    if errors:
        lines += [
            f"**Common Issues Found ({errors} examples):**",
            "Focus on preventing these types of mistakes in the new instruction.\n",
        ]
    if successes:
        lines += [
            f"**Successful Approaches Found ({successes} examples):**",
            "Build on these successful strategies in the new instruction.\n",
        ]
    if gaps:
        lines += [
            f"**Domain Knowledge Needs Identified ({gaps} examples):**",
            "Include this specialized knowledge in the new instruction.\n",
        ]
    return "\n".join(lines)


class MultiModalInstructionProposer:
    """A GEPA proposal function running :class:`SingleComponentMultiModalProposer` per component."""

    def __init__(self) -> None:
        self.single_proposer = SingleComponentMultiModalProposer()

    def __call__(
        self,
        candidate: dict[str, str],
        reflective_dataset: Mapping[str, list[ReflectiveExample]],
        components_to_update: list[str],
    ) -> dict[str, str]:
        return {
            name: self.single_proposer(
                current_instruction=candidate[name], reflective_dataset=reflective_dataset[name]
            )
            for name in components_to_update
            if name in candidate and name in reflective_dataset
        }
