"""``dspex serve app.py:program [--name NAME]... [--host H] [--port P]``: run the server.

A target is ``path/to/file.py:attribute`` or ``package.module:attribute``; the attribute is
a program (a ``dspex.Module``) or a dict of them by name. The file runs as a module first,
so it can ``dspex.configure(lm=...)``. Served names come from ``--name`` (one per target, in
order) or the attribute names.

Shutdown is graceful: the first SIGTERM/SIGINT makes the server refuse new calls with 503
(``/health`` says ``draining``) while calls in flight finish (up to ``--drain-timeout``),
then it exits 0; a second signal exits at once.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from dspex.errors import ConfigurationError, UserError

__all__ = ["load_target", "serve"]


def _module_from_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_target(target: str) -> dict[str, Any]:
    """``"app.py:program"`` -> ``{"program": <the program>}`` (a dict attribute as is)."""
    location, sep, attribute = target.rpartition(":")
    if not sep or not location or not attribute:
        raise UserError(
            f"a target looks like app.py:program or package.module:program, got {target!r}"
        )
    if location.endswith(".py") or "/" in location:
        module = _module_from_file(Path(location))
    else:
        if "" not in sys.path:
            sys.path.insert(0, "")
        try:
            module = importlib.import_module(location)
        except ModuleNotFoundError as exc:
            raise UserError(f"cannot import {location!r}: {exc}") from None
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise UserError(f"{location} has no attribute {attribute!r}") from None
    if isinstance(value, Mapping):
        return dict(value)
    return {attribute: value}


def _programs(targets: Sequence[str], names: Sequence[str]) -> dict[str, Any]:
    if names and len(names) != len(targets):
        raise UserError(f"give one --name per target ({len(targets)} targets, {len(names)} names)")
    programs: dict[str, Any] = {}
    for i, target in enumerate(targets):
        found = load_target(target)
        if names:
            if len(found) != 1:
                raise UserError(f"{target} holds {len(found)} programs; --name renames only one")
            found = {names[i]: next(iter(found.values()))}
        for name, program in found.items():
            if name in programs:
                raise UserError(f"two targets serve a program named {name!r}")
            programs[name] = program
    return programs


_BACKLOG = 2048
"""The listening socket's backlog (uvicorn's default; passed to its config too)."""


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    # Listen now, not when uvicorn starts serving: "listening on" is printed before the app's
    # startup, and a client that connects at once must wait in the backlog, not be refused.
    sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    return sock


def serve(
    targets: Sequence[str],
    *,
    names: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "warning",
    **options: Any,
) -> int:
    """Load the targets and serve them until a signal; the process exit code."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError(
            "dspex serve needs the server extra: pip install 'dspex[server]'"
        ) from None
    from dspex.server.app import create_app

    sock = _bind(host, port)  # a busy port fails before any user code runs
    try:
        programs = _programs(targets, names)
        app = create_app(programs, **options)
    except BaseException:
        sock.close()
        raise
    limiter = app.state.dspex.limiter
    drain_timeout = float(app.state.dspex.options.drain_timeout)

    class _Server(uvicorn.Server):
        """uvicorn, with a drain phase before it stops accepting connections."""

        drain_until: float | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.drain_until is not None:  # a second signal: stop now
                super().handle_exit(sig, frame)
                return
            limiter.start_draining()
            self.drain_until = time.monotonic() + drain_timeout

        async def on_tick(self, counter: int) -> bool:
            if self.drain_until is not None and (
                (limiter.in_flight == 0 and limiter.waiting == 0)
                or time.monotonic() > self.drain_until
            ):
                self.should_exit = True
            return await super().on_tick(counter)

    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(drain_timeout),
        backlog=_BACKLOG,  # (the socket listens with it already: see _bind)
    )
    server = _Server(config)
    bound_host, bound_port = sock.getsockname()[:2]
    print(
        f"dspex serve: listening on http://{bound_host}:{bound_port} "
        f"(programs: {', '.join(programs) or 'none'})",
        flush=True,
    )
    try:
        server.run(sockets=[sock])
    finally:
        from dspex.pool import shutdown_pools

        shutdown_pools()
    print("dspex serve: stopped", flush=True)
    return 0
