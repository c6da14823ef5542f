"""``dspex registry``: the implementations of every module kind and the router's default.

Usage::

    dspex registry [--json | --markdown]

The default column reflects the settings in force, including the ``DSPEX_*`` environment
variables (``DSPEX_PREFER_NATIVE``, ``DSPEX_IMPLEMENTATION_OVERRIDES``...).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

__all__ = ["main", "markdown", "table"]

_USAGE = "usage: dspex registry [--json | --markdown]"
_COLUMNS = ("kind", "native", "dspy", "default", "reason")


def _cells() -> list[list[str]]:
    from dspex.router import registry

    return [
        [str(v) if v is not None else "-" for v in row.as_dict().values()] for row in registry()
    ]


def table() -> str:
    """A plain-text table for terminals."""
    cells = _cells()
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def markdown() -> str:
    """A Markdown table (the README's is generated with this)."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in _cells():
        lines.append(
            "| "
            + " | ".join(f"`{v}`" if v != "-" and i < 4 else v for i, v in enumerate(row))
            + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["-h"], ["--help"]):
        print(_USAGE)
        return 0
    if len(args) > 1 or (args and args[0] not in ("--json", "--markdown")):
        print(_USAGE, file=sys.stderr)
        return 2
    from dspex.errors import ConfigurationError

    try:
        if args == ["--json"]:
            from dspex.router import registry

            print(json.dumps([r.as_dict() for r in registry()], indent=2))
        else:
            print(markdown() if args else table())
    except ConfigurationError as exc:
        print(f"dspex registry: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
