"""Pool handler for the RLIMIT_NPROC check (tests/chaos/test_nproc_nonroot.py)."""

from __future__ import annotations

import os
import resource
import time


class Forker:
    def limit(self) -> list[int]:
        return list(resource.getrlimit(resource.RLIMIT_NPROC))

    def fork_many(self, n: int) -> list[object]:
        """Fork up to ``n`` sleeping children: [forks that succeeded, the first error]."""
        pids: list[int] = []
        error = None
        for _ in range(n):
            try:
                pid = os.fork()
            except OSError as exc:
                error = f"{type(exc).__name__} errno {exc.errno}"
                break
            if pid == 0:
                time.sleep(5)
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        return [len(pids), error]


def make() -> Forker:
    return Forker()
