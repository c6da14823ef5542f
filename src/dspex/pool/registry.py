"""Named pools built lazily from ``dspex.settings.current().pools``.

``dspex.configure(pools={"general": {"target": "pkg.mod:factory", "size": 4}})`` declares a
pool; ``get_pool("general")`` builds it on first use (workers start on its first call), and
``shutdown_pools()`` closes them all (also run at interpreter exit).
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping
from typing import Any, cast

from dspex.errors import ConfigurationError
from dspex.pool.config import PoolConfig
from dspex.pool.pool import Pool, close_all_pools

__all__ = ["configured_pools", "get_pool", "running_pools", "shutdown_pools"]

_lock = threading.Lock()
_pools: dict[str, Pool] = {}


def configured_pools() -> dict[str, PoolConfig]:
    """The validated configurations of every pool declared in the current settings."""
    from dspex import settings

    return {name: PoolConfig.from_mapping(spec) for name, spec in settings.current().pools.items()}


def get_pool(name: str = "default", *, default: Mapping[str, Any] | None = None) -> Pool:
    """The pool called ``name``, created from the settings on first use (thread-safe).

    ``default`` is the spec of a built-in pool (the DSPy backend's ``"dspy"`` pool): used
    when the settings do not declare ``name``, and under the declared options when they do
    (``env`` mappings are merged).
    """
    with _lock:
        pool = _pools.get(name)
        if pool is not None and pool.state not in ("closing", "closed"):
            return pool
        from dspex import settings

        specs = settings.current().pools
        if name not in specs and default is None:
            known = ", ".join(sorted(specs)) or "none"
            raise ConfigurationError(
                f"no pool named {name!r} is configured (configured: {known}); "
                "declare it with dspex.configure(pools={...})",
                field="pools",
            )
        declared = specs.get(name)
        if isinstance(declared, PoolConfig):
            config = declared
        elif default is None:
            config = PoolConfig.from_mapping(specs[name])
        else:
            spec = {**default, **dict(declared or {})}
            spec["env"] = {**dict(default.get("env") or {}), **dict(spec.get("env") or {})}
            config = PoolConfig.from_mapping(spec)
        if config.backend == "ray":
            from dspex.pool.ray_backend import RayPool

            # a PoolBackend with the registry's Pool surface (state, stats, close_sync)
            built = cast(Pool, RayPool(config, name=name))
        else:
            built = Pool(config, name=name)
        _pools[name] = built
        return built


def running_pools() -> dict[str, Pool]:
    """Pools created through :func:`get_pool` that are not closed."""
    with _lock:
        return {n: p for n, p in _pools.items() if p.state not in ("closing", "closed")}


def shutdown_pools(*, cancel: bool = False) -> None:
    """Close every registry pool (and forget it: the next ``get_pool`` builds a new one)."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close_sync(cancel=cancel)


@atexit.register
def _at_exit() -> None:
    shutdown_pools(cancel=True)
    close_all_pools()
