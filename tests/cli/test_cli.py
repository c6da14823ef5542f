"""The `dspex` command as a user meets it: help everywhere, no tracebacks for mistakes."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dspex.cli import main

COMMANDS = (
    [],
    ["registry"],
    ["pool"],
    ["pool", "status"],
    ["lmserver"],
    ["demo"],
    ["serve"],
)


def _dspex(*args: str, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dspex.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=stdin,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "dspex")
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: dspex")


def test_version_is_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--version" in out and "serve" in out
    assert main(["-V"]) == 0


def test_bad_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "--bogus"]) == 2
    assert "No such option" in capsys.readouterr().err
    assert main(["registry", "--json", "--markdown"]) == 2
    assert main(["serve"]) == 2  # a target is required


def test_broken_pipe_is_one_line_not_a_traceback() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dspex.cli", "registry", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader went away, as `| head` does
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(120) == 141
    assert (
        "Traceback" not in err
        and err.strip() == "dspex registry: output closed early (broken pipe)"
    )


def test_busy_port_is_one_line(busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["lmserver", "--port", str(busy_port)],
        ["serve", "dspex.testing:LMServer", "--port", str(busy_port)],
    ):
        assert main(args) != 0, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and str(busy_port) in lines[0], lines
        assert lines[0].startswith(f"dspex {args[0]}: ")


def test_serve_target_mistakes_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for target, expected in (
        ("nope.py:program", "no such file"),
        ("no_such_module_xyz:program", "cannot import"),
        ("dspex:no_such_attribute", "has no attribute"),
        ("justtext", "a target looks like"),
        ("dspex.testing:LMServer", "not a program instance"),
    ):
        assert main(["serve", target, "--port", "0"]) == 2, target
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, err


def test_demo_against_a_dead_endpoint_is_one_line(busy_port: int) -> None:
    result = _dspex(
        "demo", "--lm", "openai/x", "--api-base", "http://127.0.0.1:9/v1", "--api-key", "k"
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("dspex demo: ")


def test_demo_accepts_api_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--help"]) == 0
    assert "--api-key" in capsys.readouterr().out
