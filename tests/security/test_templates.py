"""Template resource bombs respect the step's timeout and the size bounds (issue 11, item 3)."""

from __future__ import annotations

import threading

import pytest

import dspex
from dspex import pipeline as pl
from dspex.pipelines.template_bounds import MAX_STEPS, Budget

NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"


def _run(source: str, **options: object) -> dspex.PipelineResult:
    return dspex.pipeline([pl.template(source)], **options).run(name="bob", items=[1, 2])


def test_ordinary_templates_still_render() -> None:
    source = "Hi {{ name }}{% for x in items %} [{{ x }}]{% endfor %} {{ 2**10 }} {{ 'ab' * 3 }}"
    assert _run(source).state["text"] == "Hi bob [1] [2] 1024 ababab"
    assert _run("{{ '%5s|' | format('a') }}{{ 'x' | center(5) }}").state["text"] == "    a|  x  "
    counted = (
        "{% set ns = namespace(n=0) %}{% for x in items %}{% set ns.n = ns.n + x %}{% endfor %}"
    )
    assert _run(counted + "{{ ns.n }}").state["text"] == "3"


@pytest.mark.parametrize(
    "source",
    [
        "{{ 9**(9**9) }}",
        "{{ 'a' * 10**10 }}",
        "{{ [1] * 10**10 }}",
        "{{ 'a' | center(10000000000) }}",
        "{{ 'a' | indent(10000000000) }}",
        "{{ '%99999999999s' | format('a') }}",
        "{{ '%*s' % (10**10, 'a') }}",
        "{{ '{:>99999999999}'.format('a') }}",
        "{{ lipsum(10**9) }}",
        "{{ ('a' * 9000000) | replace('a', 'aaaa') }}",
        "{% set ns = namespace(s='a') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s | length }}",
    ],
)
def test_size_bombs_are_refused_before_they_allocate(source: str) -> None:
    with pytest.raises(dspex.SecurityError) as info:
        _run(source)
    assert info.value.fields["reason"] == "template_budget"


@pytest.fixture
def no_step_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The step budget ends a loop bomb on its own (below); lift it so that these tests
    show the timeout stopping one, whatever the machine's speed."""
    from dspex.pipelines import template_bounds

    monkeypatch.setattr(template_bounds, "MAX_STEPS", 10**15)


def test_a_loop_bomb_respects_the_step_timeout(no_step_budget: None) -> None:
    with pytest.raises(dspex.StepTimeout):
        _run(NESTED_LOOPS, step_timeout=0.5)
    with pytest.raises(dspex.StepTimeout):
        dspex.pipeline([pl.template(NESTED_LOOPS, timeout=0.5)]).run()


def test_a_loop_bomb_respects_the_pipeline_timeout(no_step_budget: None) -> None:
    with pytest.raises(dspex.StepTimeout):
        _run(NESTED_LOOPS, timeout=0.5)


def test_without_a_timeout_the_step_budget_ends_a_loop_bomb() -> None:
    with pytest.raises(dspex.SecurityError, match=f"budget of {MAX_STEPS} steps"):
        _run(
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}"
        )


def test_a_cancelled_budget_stops_the_render() -> None:
    cancelled = threading.Event()
    budget = Budget("t", cancelled)
    budget.spend(1)
    cancelled.set()
    with pytest.raises(dspex.SecurityError, match="cancelled"):
        for _ in range(1000):
            budget.spend()
