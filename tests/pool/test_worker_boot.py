"""Worker boot: the preloaded heap and the handler are frozen out of the garbage collector's
reach (full collections scan only what calls create; forked workers keep sharing the
template's pages)."""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest

from dspex.pool import Pool


class Boot:
    def __init__(self) -> None:
        self.kept = [object() for _ in range(1000)]  # built by the factory, in the worker

    def frozen(self) -> int:
        return gc.get_freeze_count()

    def grow(self, n: int) -> int:
        self.kept.extend(object() for _ in range(n))  # made by a call: not frozen
        self.kept.append([[] for _ in range(n)])
        return gc.get_freeze_count()


def make() -> Boot:
    return Boot()


@pytest.mark.parametrize("fork_server", [True, False])
def test_worker_freezes_its_boot_heap(make_pool: Callable[..., Pool], fork_server: bool) -> None:
    pool = make_pool(target="test_worker_boot:make", size=1, fork_server=fork_server)
    frozen = pool.call_sync("frozen")
    assert frozen > 1000  # at least the handler's list, plus the imports
    assert pool.call_sync("grow", 5000) == frozen  # what calls create stays collectable
