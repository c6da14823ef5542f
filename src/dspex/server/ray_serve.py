"""The ``dspex serve`` app on Ray Serve: :func:`deployment` and ``dspex serve --ray``.

:func:`deployment` wraps the same :func:`dspex.server.create_app` app in a Ray Serve
deployment (``serve.ingress`` with an app builder), so every replica serves the same
endpoints, schemas, limits and error mapping as ``dspex serve``::

    from ray import serve
    from dspex.server.ray_serve import deployment

    serve.run(deployment({"qa": program}, num_replicas=2), route_prefix="/")

The programs are cloudpickled by value when their code lives outside installed packages (as
fan-out programs are, :mod:`dspex.pool.fanout`), and the settings in force (the LM, adapter,
callbacks that pickle...) are configured in each replica before it builds its app. Each
replica applies ``max_concurrency``/``max_queue`` on its own; Ray Serve's proxy routes
between replicas.
"""

from __future__ import annotations

import pickle
import signal
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.errors import ConfigurationError

__all__ = ["build_app", "deployment", "serve_on_ray"]


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise ConfigurationError(
            "Ray Serve is missing: pip install 'dspex[ray-serve]' (ray[serve])"
        ) from None
    return serve


def build_app(payload: bytes, options: Mapping[str, Any]) -> Any:
    """In a replica: configure the travelling settings, then ``create_app`` the programs."""
    import dspex
    from dspex.server.app import create_app

    shipped = pickle.loads(payload)
    dspex.configure(**shipped["settings"])
    return create_app(shipped["programs"], **dict(options))


def deployment(
    programs: Mapping[str, Any],
    *,
    name: str = "dspex",
    num_replicas: int = 1,
    ray_actor_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> Any:
    """A bound Ray Serve application serving ``programs`` (``create_app``'s ``options``)."""
    from dspex.pool.fanout import dumps_by_value, travelling_settings
    from dspex.server.app import ServerOptions

    serve = _serve()
    known = set(ServerOptions.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigurationError(f"unknown server option(s) {', '.join(unknown)}")
    if not isinstance(num_replicas, int) or num_replicas < 1:
        raise ConfigurationError(f"num_replicas must be a positive integer, got {num_replicas!r}")
    travel = travelling_settings()
    parts = [*programs.values(), *travel["callbacks"]]
    payload = dumps_by_value(
        {"programs": dict(programs), "settings": travel}, parts, "Ray Serve replicas"
    )
    frozen = dict(options)

    def build() -> Any:
        return build_app(payload, frozen)

    ingress = serve.ingress(build)()
    actor_options = dict(ray_actor_options or {"num_cpus": 0})
    wrapped = serve.deployment(
        name=name, num_replicas=num_replicas, ray_actor_options=actor_options
    )(ingress)
    return wrapped.bind()


def serve_on_ray(
    targets: Sequence[str],
    *,
    names: Sequence[str] = (),
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    replicas: int = 1,
    **options: Any,
) -> int:
    """``dspex serve --ray``: deploy the targets on Ray Serve and wait for a signal."""
    from dspex.server.cli import _programs

    serve = _serve()
    import ray

    programs = _programs(targets, names)
    app = deployment(programs, num_replicas=replicas, **options)  # fails before Ray starts
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _SIGNALS}
    started = not ray.is_initialized()
    try:
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name="dspex", route_prefix="/")
        print(
            f"dspex serve: on Ray Serve at http://{host}:{port} "
            f"(programs: {', '.join(programs) or 'none'}; replicas: {replicas})",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        serve.shutdown()
        if started:
            ray.shutdown()
    print("dspex serve: stopped", flush=True)
    return 0


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
