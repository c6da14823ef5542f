"""Suite-wide fixtures: every test starts from default settings."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# litellm (inside DSPy) must never fetch its model-price map over the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(autouse=True)
def _clean_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import dspex

    dspex.reset_defaults()
    dspex.configure(cache_dir=tmp_path_factory.mktemp("dspex-cache"))
    yield
    dspex.reset_defaults()
