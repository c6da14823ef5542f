"""``dspex pool status``: the configured pools and, for running ones, their live statistics.

Usage::

    dspex pool status [--json] [--start] [--url URL]

``--start`` starts each configured pool (to show real worker counts) and closes it again.
Pools are read from ``dspex.settings.current().pools``; a program can call
``main(["status"])`` after ``dspex.configure(pools=...)``. A fresh shell has none configured
(only the built-in ``dspy`` pool, started by the first DSPy call): ``--url`` asks a running
``dspex serve`` for the live pools of its process instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "remote_status", "status"]

_USAGE = "usage: dspex pool status [--json] [--start] [--url URL]"


def remote_status(url: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The pools of the ``dspex serve`` process at ``url`` (``GET {url}/v1/pools``)."""
    import urllib.error
    import urllib.request

    from dspex.errors import UserError

    endpoint = url.rstrip("/") + "/v1/pools"
    if not endpoint.startswith(("http://", "https://")):
        raise UserError(f"--url must be an http(s) URL, got {url!r}")
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise UserError(f"{endpoint} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot reach {endpoint}: {reason}") from None
    except ValueError:
        raise UserError(f"{endpoint} did not answer JSON (is it a dspex server?)") from None
    rows = payload.get("pools") if isinstance(payload, dict) else None
    if not isinstance(rows, list):
        raise UserError(f"{endpoint} did not answer a pool list (is it a dspex server?)")
    return rows


def status(*, start: bool = False) -> list[dict[str, Any]]:
    """One row per configured or running pool."""
    from dspex.errors import DSPexError
    from dspex.pool.registry import configured_pools, get_pool, running_pools

    rows: list[dict[str, Any]] = []
    running = running_pools()
    for name, config in configured_pools().items():
        pool = running.pop(name, None)
        row: dict[str, Any]
        if pool is None and start:
            pool = get_pool(name)
            try:
                pool.start_sync()
            except DSPexError as exc:
                row = pool.stats()
                row["last_error"] = str(exc)
                rows.append(row)
                pool.close_sync(cancel=True)
                continue
            row = pool.stats()
            pool.close_sync()
        elif pool is not None:
            row = pool.stats()
        else:
            row = {
                "name": name,
                "target": config.target,
                "state": "not started",
                "size": config.size,
            }
        rows.append(row)
    rows += [pool.stats() for pool in running.values()]
    return rows


def _table(rows: list[dict[str, Any]], url: str | None = None) -> str:
    if not rows and url:
        return f"the server at {url} has no pools (none configured, none started yet)"
    if not rows:
        return (
            "no pools configured in this process (dspex.configure(pools={...})); the built-in "
            "'dspy' pool starts on the first DSPy call. For a running server's live pools: "
            "dspex pool status --url http://HOST:PORT"
        )
    cols = [
        "name",
        "state",
        "size",
        "workers",
        "busy",
        "queued",
        "restarts",
        "p50_ms",
        "p99_ms",
        "target",
    ]
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    errors = [f"{r['name']}: {r['last_error']}" for r in rows if r.get("last_error")]
    return "\n".join(lines + (["", "last errors:", *errors] if errors else []))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE)
        return 0 if args else 2
    url = None
    if "--url" in args:
        at = args.index("--url")
        url = args[at + 1] if at + 1 < len(args) else None
        args = args[:at] + args[at + 2 :]
        if url is None or "--start" in args:
            print(_USAGE, file=sys.stderr)
            return 2
    if args[0] != "status" or set(args[1:]) - {"--json", "--start"}:
        print(_USAGE, file=sys.stderr)
        return 2
    from dspex.errors import ConfigurationError, UserError

    try:
        rows = remote_status(url) if url else status(start="--start" in args)
    except (ConfigurationError, UserError) as exc:
        print(f"dspex pool: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2, default=str) if "--json" in args else _table(rows, url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
