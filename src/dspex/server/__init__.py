"""``dspex serve``: DSPex programs over HTTP (``pip install 'dspex[server]'``).

::

    from dspex.server import create_app
    app = create_app({"qa": dspex.ChainOfThought("question -> answer")})
    # uvicorn.run(app), mount it in your own FastAPI app, or: dspex serve app.py:program

See ``docs/serving.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dspex.server.app import ServerOptions, add_program, create_app

__all__ = ["ServerOptions", "add_program", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        try:
            from dspex.server import app
        except ImportError as exc:
            from dspex.errors import ConfigurationError

            raise ConfigurationError(
                f"dspex.server needs the server extra ({exc.name} is missing): "
                "pip install 'dspex[server]'"
            ) from None
        return getattr(app, name)
    raise AttributeError(f"module 'dspex.server' has no attribute {name!r}")
