"""``dspex pool status``: the configured pools and, for running ones, their live statistics.

Usage::

    dspex pool status [--json] [--start]

``--start`` starts each configured pool (to show real worker counts) and closes it again.
Pools are read from ``dspex.settings.current().pools``; a program can call
``main(["status"])`` after ``dspex.configure(pools=...)``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "status"]

_USAGE = "usage: dspex pool status [--json] [--start]"


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


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no pools configured (dspex.configure(pools={...}))"
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
    if args[0] != "status" or set(args[1:]) - {"--json", "--start"}:
        print(_USAGE, file=sys.stderr)
        return 2
    from dspex.errors import ConfigurationError

    try:
        rows = status(start="--start" in args)
    except ConfigurationError as exc:
        print(f"dspex pool: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2, default=str) if "--json" in args else _table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
