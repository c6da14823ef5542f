"""``python -m dspex.testing.lmserver`` / ``dspex lmserver``: serve the scripted LM until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dspex lmserver", description="Scripted OpenAI/Anthropic-compatible LM server"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added before every reply"
    )
    args = parser.parse_args(argv)
    from dspex.testing.server import LMServer

    server = LMServer(host=args.host, port=args.port, latency=args.latency).start()
    print(
        f"LMServer listening: OpenAI base {server.url} | Anthropic POST {server.url}/messages",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
