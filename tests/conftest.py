"""Suite-wide fixtures: every test starts from default settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from dspex.testing import LMServer

if TYPE_CHECKING:
    import dspex

# litellm (inside DSPy) must never fetch its model-price map over the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(autouse=True)
def _clean_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import dspex

    dspex.reset_defaults()
    dspex.configure(cache_dir=tmp_path_factory.mktemp("dspex-cache"))
    yield
    dspex.reset_defaults()


@pytest.fixture(scope="module")
def server() -> Iterator[LMServer]:
    """One LMServer per test module; pools the module started are shut down after it."""
    from dspex.pool import shutdown_pools

    with LMServer() as srv:
        yield srv
    shutdown_pools(cancel=True)


@pytest.fixture
def lm(server: LMServer) -> dspex.LM:
    """The default LM for a test: the module's server (cleared), no cache, no retries."""
    import dspex

    server.clear()
    lm = dspex.LM(
        "openai/test", api_base=server.url, api_key="sk-secret-key", cache=False, num_retries=0
    )
    dspex.configure(lm=lm)
    return lm
