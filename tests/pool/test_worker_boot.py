"""Worker boot: the heap the preload and target imports made is frozen out of the garbage
collector's reach (full collections scan only what the handler and its calls create; forked
workers keep sharing the template's pages); the handler's own state stays collectable."""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest

from dspex.pool import Pool


class Boot:
    def __init__(self) -> None:
        self.kept = [object() for _ in range(100)]  # built by the factory, in the worker

    def frozen(self) -> int:
        return gc.get_freeze_count()

    def collectable(self) -> bool:
        """Whether the handler's state is still seen by the collector (not frozen)."""
        return any(o is self.kept for o in gc.get_objects())


def make() -> Boot:
    return Boot()


@pytest.mark.parametrize("fork_server", [True, False])
def test_worker_freezes_its_boot_heap(make_pool: Callable[..., Pool], fork_server: bool) -> None:
    pool = make_pool(target="test_worker_boot:make", size=1, fork_server=fork_server)
    assert pool.call_sync("frozen") > 1000  # the imports (stdlib, msgpack, dspex.pool...)
    assert pool.call_sync("collectable")
