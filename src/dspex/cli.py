"""The ``dspex`` command: a thin dispatcher to each subsystem's own ``main(argv) -> int``.

dspex registry [--json|--markdown]   implementations per module kind
dspex pool status                    configured worker pools
dspex lmserver [--port N]            run the scripted test LM server
dspex demo [--lm MODEL]              the end-to-end demo
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "run"]

# command -> (module with main(argv), help text)
_COMMANDS: dict[str, tuple[str, str]] = {
    "registry": ("dspex.router.cli", "show implementations per module kind"),
    "pool": ("dspex.pool.cli", "inspect worker pools (`dspex pool status`)"),
    "lmserver": (
        "dspex.testing.lmserver",
        "run the scripted OpenAI/Anthropic-compatible LM server",
    ),
    "demo": ("dspex.demo", "run the end-to-end demo"),
}


def _usage() -> str:
    lines = ["usage: dspex <command> [args...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in _COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command, rest = args[0], args[1:]
    if command == "--version":
        from dspex import __version__

        print(__version__)
        return 0
    entry = _COMMANDS.get(command)
    if entry is None:
        print(f"dspex: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(entry[0])
    code: int = module.main(rest)
    return code


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
