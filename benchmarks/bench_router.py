"""Router and telemetry overhead (issue: router, registry, compare mode, telemetry).

All in process with ``DummyLM`` so only framework time is measured; p50 of many calls.
- routing overhead per call: a routed ``dspex.Predict`` vs the same module built without
  the router (target ≤ 2 µs beyond the module), and with ``routing_strategy="performance"``
  (each call measured);
- construction: routed vs unrouted;
- telemetry: ``emit`` with no handler (target ≤ 5 µs) and with one handler (≤ 20 µs).
"""

from __future__ import annotations

from _common import p50, per_call, us, write

N = 20_000


def main() -> None:
    import dspex
    from dspex.modules import Predict
    from dspex.telemetry import attach, detach, emit
    from dspex.testing import DummyLM

    lm = DummyLM()
    dspex.configure(lm=lm)
    routed = dspex.Predict("question -> answer")
    plain = Predict("question -> answer")
    with dspex.context(routing_strategy="performance"):
        measured = dspex.Predict("question -> answer")
    rounds: dict[str, list[float]] = {"routed": [], "plain": [], "measured": []}
    for _ in range(5):
        rounds["plain"] += per_call(lambda: plain(question="q"), N // 10)
        rounds["routed"] += per_call(lambda: routed(question="q"), N // 10)
        rounds["measured"] += per_call(lambda: measured(question="q"), N // 10)
    call = {k: p50(v) for k, v in rounds.items()}

    build_routed = p50(per_call(lambda: dspex.Predict("question -> answer"), N // 4))
    build_plain = p50(per_call(lambda: Predict("question -> answer"), N // 4))

    meta = {"kind": "predict", "implementation": "native"}
    emit_none = p50(per_call(lambda: emit("dspex.bench.event", {"duration": 1.0}, meta), N))
    handle = attach("dspex.bench", lambda *_: None)
    emit_one = p50(per_call(lambda: emit("dspex.bench.event", {"duration": 1.0}, meta), N))
    detach(handle)

    def verdict(value: float, target: float) -> str:
        return "met" if value <= target else "not met"

    extra = call["routed"] - call["plain"]
    extra_measured = call["measured"] - call["plain"]
    text = f"""
## Router and telemetry

`.venv/bin/python benchmarks/bench_router.py` — in process, `DummyLM`, p50.

| measurement | value | target |
|---|---:|---|
| `Predict` call, built without the router | {us(call["plain"])} | |
| `Predict` call, built by the router (static) | {us(call["routed"])} ({extra * 1e6:+.2f} µs) | ≤ +2 µs: {verdict(extra, 2e-6)} |
| `Predict` call, `routing_strategy="performance"` (measured) | {us(call["measured"])} ({extra_measured * 1e6:+.2f} µs) | |
| construction, routed | {us(build_routed)} | |
| construction, without the router | {us(build_plain)} | |
| `emit`, no handler attached | {us(emit_none)} | ≤ 5 µs: {verdict(emit_none, 5e-6)} |
| `emit`, one handler attached | {us(emit_one)} | ≤ 20 µs: {verdict(emit_one, 20e-6)} |

The router decides at construction, so a static route costs nothing per call; the
difference in the second row is noise between identical call paths.
"""
    write("router", text)


if __name__ == "__main__":
    main()
