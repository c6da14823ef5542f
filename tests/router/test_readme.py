"""The README's registry table is the output of ``dspex registry --markdown``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_registry_table_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    import dspex
    from dspex.router.cli import markdown

    for name in dspex.settings.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    dspex.reset_defaults()
    found = re.search(
        r"<!-- registry:start -->\n(.*?)\n<!-- registry:end -->", README.read_text(), re.S
    )
    assert found, "README lost its registry markers"
    assert found.group(1) == markdown(), "regenerate with: dspex registry --markdown"
