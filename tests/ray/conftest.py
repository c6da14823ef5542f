"""One real local Ray cluster per test session, started on first use (``ray_cluster``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A local Ray cluster bounded to 2 CPUs, no dashboard (~30 s to start on 2 busy cores)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, address="local")
    yield ray
    if started:
        ray.shutdown()
