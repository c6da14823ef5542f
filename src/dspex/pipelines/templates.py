"""Template steps: Jinja2 in an immutable sandbox, rendering state fields into a text field.

Templates come from the developer; values come from users and LMs. The environment is
Jinja2's ``ImmutableSandboxedEnvironment``: attribute access to private/dunder names (the
``__class__.__mro__``/``__globals__`` walks of template-injection payloads) and methods that
mutate values are refused with :class:`~dspex.errors.SecurityError`, both when the template
is built (names spelled in the source) and when it renders. Values render literally: a value
containing ``{{ ... }}`` is text, never a template. No HTML autoescaping (the output is a
prompt or a report, not HTML). A field the template names that the state lacks raises
``StepInputMissing`` naming the step and the field.

Templates are bounded (:mod:`dspex.pipelines.template_bounds`): loops, calls and arithmetic
spend a per-render budget, sizes are checked before strings, sequences or integers are
built, and the render runs in a thread that stops soon after the step's ``timeout`` (or the
pipeline's) cancels it: the timeout holds even for a resource bomb.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from dspex.errors import PipelineError, PipelineSpecError, SecurityError
from dspex.pipelines.result import StepResult
from dspex.pipelines.runner import Frame, Run
from dspex.pipelines.steps import Step, missing_input
from dspex.pipelines.template_bounds import Budget, environment, render

__all__ = ["TemplateStep"]

_ENV: Any = None


def _environment() -> Any:
    """The shared sandboxed environment (Jinja2 imported on first template only)."""
    global _ENV
    if _ENV is None:
        _ENV = environment()
    return _ENV


def _refuse_private_names(name: str, ast: Any) -> None:
    """Refuse ``x.__attr__`` / ``x['_attr']`` spelled in the source, before anything renders."""
    from jinja2 import nodes

    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        attr = node.attr if isinstance(node, nodes.Getattr) else None
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            attr = node.arg.value if isinstance(node.arg.value, str) else None
        if attr is not None and attr.startswith("_"):
            raise SecurityError(
                f"template step {name!r} reads the private attribute {attr!r}; templates may "
                f"only read public fields and attributes",
                step=name,
                attribute=attr,
            )


class TemplateStep(Step):
    """Render ``source`` with the state fields it names; write the text to ``output``."""

    kind = "template"

    def __init__(self, source: str, name: str, *, output: str = "text", **options: Any) -> None:
        super().__init__(name, **options)
        if not isinstance(source, str):
            raise PipelineSpecError(
                f"step {name!r}: a template must be a string, got {type(source).__name__}",
                step=name,
                reason="template",
            )
        if not isinstance(output, str) or not output:
            raise PipelineSpecError(
                f"step {name!r}: output= must name a state field, got {output!r}",
                step=name,
                reason="output",
            )
        from jinja2 import TemplateError, TemplateSyntaxError, meta

        env = _environment()
        try:
            ast = env.parse(source)
            _refuse_private_names(name, ast)
            names = meta.find_undeclared_variables(ast)  # compiles: finds unknown filters/tests
            self.template = env.from_string(env.bound(ast))
        except TemplateSyntaxError as exc:
            raise PipelineSpecError(
                f"step {name!r}: template syntax error on line {exc.lineno}: {exc.message}",
                step=name,
                reason="template syntax",
                line=exc.lineno,
            ) from None
        except TemplateError as exc:  # an unknown filter or test, found when compiling
            raise PipelineSpecError(
                f"step {name!r}: template error on line {getattr(exc, 'lineno', '?')}: {exc}",
                step=name,
                reason="template",
                line=getattr(exc, "lineno", None),
            ) from None
        self.source = source
        self.output = output
        # Jinja's globals (range, dict, cycler...) are not state fields, unless the state has them
        self.fields = tuple(sorted(n for n in names if n not in env.globals))
        self.shadowing = tuple(sorted(n for n in names if n in env.globals))

    async def execute(
        self,
        state: Mapping[str, Any],
        run: Run,
        frame: Frame,
        path: str,
        children: list[StepResult],
    ) -> dict[str, Any]:
        from jinja2 import UndefinedError
        from jinja2.exceptions import SecurityError as JinjaSecurityError

        context: dict[str, Any] = {}
        for key in self.fields:
            try:
                context[key] = state[key]
            except KeyError:
                raise missing_input(path, key, state) from None
        for key in self.shadowing:
            if key in state:
                context[key] = state[key]
        cancelled = threading.Event()
        budget = Budget(path, cancelled)
        try:
            text = await asyncio.to_thread(render, self.template, context, budget)
        except asyncio.CancelledError:
            cancelled.set()  # the render thread stops within a few budget steps
            raise
        except JinjaSecurityError as exc:
            raise SecurityError(
                f"template step {path!r} was refused by the sandbox: {exc}", step=path
            ) from None
        except UndefinedError as exc:
            raise PipelineError(
                f"template step {path!r} reads something the state does not have: {exc.message}",
                step=path,
            ) from None
        return {self.output: text}
