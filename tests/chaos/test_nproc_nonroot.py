"""Issue 11 item 7: the dspy pool's RLIMIT_NPROC default applies to a non-root user.

Root ignores RLIMIT_NPROC, so this runs a pool as ``nobody`` (``setpriv``) with a Python the
user can execute: the dspy pool's workers carry the default limit, and a handler forking past a
pool's ``max_processes`` gets ``EAGAIN`` instead of exhausting the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.dspy

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")


def _runnable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to switch to a non-root user"
    if shutil.which("setpriv") is None:
        return "setpriv is not installed"
    if not SYSTEM_PYTHON.exists():
        return f"no {SYSTEM_PYTHON} a non-root user can run"
    return None


@pytest.mark.skipif(_runnable() is not None, reason=str(_runnable()))
def test_nproc_default_applies_to_a_non_root_user() -> None:
    cache = tempfile.mkdtemp(prefix="dspex-nproc-")
    os.chmod(cache, 0o777)
    site = sysconfig.get_paths()["purelib"]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": cache,
        "PYTHONPATH": f"{ROOT / 'src'}:{site}",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    argv += [str(SYSTEM_PYTHON), str(HERE / "_nproc_check.py"), cache]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["uid"] == 65534
    default = int(found["default"])
    assert default > 2048  # what the user runs now plus 2,048
    assert found["dspy_worker_limits"] == [[str(default), str(default)]] * 2
    cap = default - 2048 + 30
    assert found["forker_limit"] == [cap, cap]
    forks, error = found["forks"]
    assert error == "BlockingIOError errno 11"  # EAGAIN: the limit holds
    assert forks < 30
