"""Workers in another virtualenv that has nothing but msgpack installed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from dspex.pool import Pool

pytestmark = pytest.mark.slow  # creating a virtualenv and installing into it takes a while


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    env = tmp_path_factory.mktemp("venv") / "bare"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "msgpack"],
        check=True,
    )
    return str(python)


@pytest.mark.parametrize("fork_server", [True, False])
async def test_workers_run_in_a_bare_virtualenv(
    make_pool: Callable[..., Pool], bare_python: str, fork_server: bool
) -> None:
    pool = make_pool(size=1, python=bare_python, fork_server=fork_server)
    env = await pool.call("environment")
    assert Path(env["prefix"]) == Path(bare_python).parent.parent
    assert env["has"] == {"msgpack": True, "psutil": False, "pydantic": False, "dspy": False}
    assert await pool.call("add", 2, 2) == 4
    assert [x async for x in pool.stream("numbers", 3)] == [0, 1, 2]
