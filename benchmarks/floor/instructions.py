"""Instructions per LM call, layer by layer (``valgrind --tool=callgrind``; load-independent).

``.venv/bin/python benchmarks/floor/instructions.py [PIECE ...]`` (default: every piece) runs
each piece N = 1000 and 2000 times under callgrind, counting only inside the measured loop
(``--toggle-collect`` on ``functools.reduce``, which wraps it), with ``PYTHONHASHSEED=0`` and
the garbage collector off, and prints the difference / 1000: user-space instructions per call.
No network: the LM has an injected transport that returns a canned 200 reply at once, so the
figures are the LM stack above the connection pool. ``PYTHONPATH=<other>/src`` measures
another tree (before/after). A piece takes ~25 s (two interpreter starts under valgrind).

Pieces: ``acall`` (``LM.acall``, whole), ``call`` (sync ``LM.__call__``), ``callbacks`` (the
callbacks check), ``begin`` (options, cache key), ``flow`` (request bytes, deadline, attempt
flow), ``parse`` (the reply's JSON to outputs), ``end`` (begin + usage, history, the caller's
copy), ``nothing`` (the loop itself).
"""

from __future__ import annotations

import functools
import gc
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

PIECES = ("nothing", "acall", "call", "callbacks", "begin", "flow", "parse", "end")


def _pieces() -> dict[str, Callable[[], object]]:
    import orjson

    import dspex
    from dspex.lm.transport import Response
    from dspex.utils import callback

    body = orjson.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "test",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant",
            "content": "[[ ## answer ## ]]\nember river\n\n[[ ## completed ## ]]",
        }}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39},
    })  # fmt: skip
    reply = Response(200, "OK", {"content-type": "application/json"}, body)

    class Canned:  # the transport's interface, answering at once
        max_response_bytes = 1 << 20

        def settings(self) -> dict[str, Any]:
            return {}

        async def arequest(self, *_: Any) -> Response:
            return reply

        def request(self, *_: Any) -> Response:
            return reply

    lm = dspex.LM(
        "openai/test", api_base="http://127.0.0.1:9/v1", api_key="k", cache=False,
        num_retries=0, transport=Canned(),  # type: ignore[arg-type]
    )  # fmt: skip
    msgs = [
        {"role": "system", "content": "Your input fields are:\n1. `question` (str):"},
        {"role": "user", "content": "[[ ## question ## ]]\nquestion 17"},
    ]
    first = lm._begin(None, msgs, {})

    def acall() -> None:
        coro = lm.acall(messages=msgs)
        try:
            coro.send(None)  # the canned transport never suspends
        except StopIteration:
            return
        raise AssertionError("the call suspended")

    def end() -> None:
        call = lm._begin(None, msgs, {})
        call.texts, call.usage = ["x"], {"prompt_tokens": 1}
        lm._end(call)

    return {
        "nothing": lambda: None,
        "acall": acall,
        "call": lambda: lm(messages=msgs),
        "callbacks": lambda: callback.begin(lm, lm.acall, (), {"messages": msgs}),
        "begin": lambda: lm._begin(None, msgs, {}),
        "flow": lambda: lm._flow(first, lm._parser(first)),
        "parse": lambda: lm._parse(reply),
        "end": end,
    }


def child(piece: str, n: int) -> None:
    fn = _pieces()[piece]
    for _ in range(300):  # warm: caches, specialization
        fn()
    gc.collect()
    gc.disable()

    def measured(_a: int, _b: int) -> int:
        for _ in range(n):
            fn()
        return 0

    functools.reduce(measured, [0, 0])


def collected(piece: str, n: int) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        "--collect-atstart=no", "--toggle-collect=functools_reduce",
        sys.executable, __file__, "--child", piece, str(n),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stderr
    found = re.search(r"Collected : (\d+)", out)
    if found is None:
        raise RuntimeError(f"no callgrind total in:\n{out[-2000:]}")
    return int(found.group(1))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]))
        return
    for piece in sys.argv[1:] or PIECES:
        per_call = (collected(piece, 2000) - collected(piece, 1000)) / 1000
        print(f"{piece:10s} {per_call:10,.0f} instructions/call", flush=True)


if __name__ == "__main__":
    main()
