"""The program-layer demo: the scripted model makes few-shot compilation pay off, natively."""

from __future__ import annotations

import dspex
from dspex import demo_program
from dspex.testing import LMServer


def test_compiling_the_support_program_fixes_the_ambiguous_tickets() -> None:
    with LMServer() as server:
        demo_program.script(server)
        result = demo_program._session(dspex, demo_program._lm(dspex, server.url))
    assert result["baseline"] == 75.0  # 4 of 12 tickets are ambiguous without demos
    assert result["compiled"] == 100.0
    demos = result["program"].classify.predict.demos
    assert [d.augmented for d in demos[:3]] == [True, True, True]
    assert all(not getattr(d, "augmented", False) for d in demos[3:])
