"""The public face: exported names, lazy imports, CLI entry points."""

from __future__ import annotations

import subprocess
import sys

import pytest

import dspex
from dspex.cli import main


def test_every_exported_name_resolves() -> None:
    for name in dspex.__all__:
        assert getattr(dspex, name) is not None, name
    assert len(set(dspex.__all__)) == len(dspex.__all__)
    with pytest.raises(AttributeError):
        _ = dspex.DoesNotExist  # type: ignore[attr-defined]


def test_import_is_light() -> None:
    code = "import sys, dspex; heavy = [m for m in ('dspy', 'litellm', 'pydantic', 'httpx') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_dispatch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0 and "commands:" in capsys.readouterr().out
    assert main(["--version"]) == 0 and dspex.__version__ in capsys.readouterr().out
    assert main(["bogus"]) == 2 and "unknown command" in capsys.readouterr().err


def test_demo_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "No LM configured" in out and "ChainOfThought" in out
    assert "research assistant" in out and "mixed" in out and "dspy" in out
