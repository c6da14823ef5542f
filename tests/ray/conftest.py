"""One real local Ray cluster for the tests of this package, started on first use (``ray_cluster``)."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[Any]:
    """A local Ray cluster bounded to 2 CPUs, no dashboard (~30 s to start on 2 busy cores).

    Ray gives its raylet a fixed 30 s to register at startup, which a saturated shared machine
    sometimes misses: a start that times out is retried (twice) before the tests fail."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        for attempt in range(3):
            try:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, address="local")
                break
            except Exception as exc:
                if "timed out during startup" not in str(exc) or attempt == 2:
                    raise
                with warnings.catch_warnings():  # the failed start's sockets and pipes
                    warnings.simplefilter("ignore", ResourceWarning)
                    ray.shutdown()
                    gc.collect()
    yield ray
    if started:
        ray.shutdown()
