"""Fuzzed pipeline specs: every bad spec raises a typed ``UserError`` naming where it is
(issue 11, item 8). Specs are JSON-shaped data, as they arrive from files or HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dspex
from dspex import pipeline as pl

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["question -> answer", "q -> a", "dspy.Predict", "{{ x }}", "x", "", "a/b"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_option_names = st.sampled_from(
    [
        "name", "timeout", "retries", "backoff", "inputs", "outputs", "output", "thread",
        "signature", "n", "temperature", "bogus", "over", "into", "as_", "concurrency",
        "implementation", "callbacks", "demos",
    ]
)  # fmt: skip
_kwargs = st.dictionaries(_option_names, _values, max_size=4)
_targets = st.one_of(
    st.sampled_from(
        [
            "dspy.Predict", "dspy.ChainOfThought", "dspy:Predict", "Predict", "dspy.",
            ".Predict", "dspy..X", "os.system", "dspy.NoSuch",
        ]
    ),
    st.text(max_size=10),
    _scalars,
)  # fmt: skip
_impls = st.one_of(st.sampled_from(["auto", "native", "dspy", "python"]), st.text(max_size=5))
_tuple_steps = st.one_of(
    st.tuples(_impls, _targets),
    st.tuples(_impls, _targets, _kwargs),
    st.tuples(_impls, _targets, _values),
    st.tuples(_values),
)
_templates = st.one_of(
    st.sampled_from(
        [
            "{{ x }}", "{{ x | nosuchfilter }}", "{% if %}", "{{ x.__class__ }}",
            "{{ x['_p'] }}", "{% for i in %}", "{{ x | default }}", "{% nosuchtag %}",
            "{{ range(3) | nosuch(1) }}", "{% extends 'other' %}", "{% include 'x' %}",
            "{{ x is nosuchtest }}",
        ]
    ),
    st.text(max_size=20),
)  # fmt: skip


@st.composite
def _built_steps(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["step", "template", "map", "parallel", "validate", "branch"]))
    options = draw(_kwargs)
    if kind == "step":
        return ("step", draw(_targets), options)
    if kind == "template":
        return ("template", draw(_templates), options)
    return (kind, draw(_values), options)


_specs = st.lists(st.one_of(_tuple_steps, _built_steps(), _values), min_size=0, max_size=3)


def _build(spec: list[Any]) -> Any:
    steps: list[Any] = []
    for item in spec:
        if isinstance(item, tuple) and len(item) == 3 and item[0] in (
            "step", "template", "map", "parallel", "validate", "branch"
        ):  # fmt: skip
            kind, arg, options = item
            # the builders' own positional parameters are given once, as Python requires
            for own in ("signature", "source", "steps", "step_spec", "target", "condition"):
                options.pop(own, None)
            if kind == "map":
                steps.append(pl.map(arg, **{"over": "xs", **options}))
            elif kind == "branch":
                steps.append(pl.branch(arg, arg, **options))
            else:
                steps.append(getattr(pl, kind)(arg, **options))
        else:
            steps.append(item)
    return dspex.pipeline(steps)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,
)
@given(_specs)
def test_every_bad_spec_is_a_typed_user_error(spec: list[Any]) -> None:
    try:
        _build(spec)
    except dspex.UserError as exc:
        assert str(exc), "a typed error needs a message"
        if isinstance(exc, dspex.PipelineSpecError):
            assert "step" in exc.fields or "position" in exc.fields or "reason" in exc.fields
    except dspex.SecurityError:
        pass  # a template naming a private attribute: refused, typed


@pytest.mark.parametrize(
    ("build", "where"),
    [
        (lambda: pl.step(lambda question: {}, timeout="soon"), "timeout"),
        (lambda: dspex.pipeline([("auto", "dspy.Predict", {"implementation": "x"})]), "[0]"),
        (lambda: dspex.pipeline([[3]]), "[0][0]"),
        (lambda: pl.validate(None), "signature"),
        (lambda: pl.template("{{ x | nosuchfilter }}", name="t"), "t"),
        (lambda: pl.template("{{ x is nosuchtest }}", name="t"), "t"),
        (lambda: pl.template("{{ x }}", name="t", bogus=1), "bogus"),
        (lambda: pl.map(lambda item: item, over="xs", bogus=1), "bogus"),
        (lambda: dspex.pipeline([("dspy", "dspy.Predict", {"signature": "q -> a"}), 3]), "1"),
    ],
)
def test_known_bad_specs_name_the_problem(build: Any, where: str) -> None:
    with pytest.raises(dspex.UserError) as info:
        build()
    assert where in str(info.value) or where in repr(info.value.fields)
