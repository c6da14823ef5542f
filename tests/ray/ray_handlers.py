"""Handlers for the Ray pool's limit tests (imported by the actors through ``pythonpath``)."""

from __future__ import annotations

import os
import time


class Hog:
    def pid(self) -> int:
        return os.getpid()

    def hold(self, mb: int, seconds: float) -> int:
        """Allocate ``mb`` MiB and keep it for ``seconds`` (long enough for the watchdog)."""
        block = bytearray(mb * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(seconds)
        return len(block)

    def open_files(self, n: int) -> int:
        files = [open(os.devnull) for _ in range(n)]  # noqa: SIM115
        return len(files)


def make() -> Hog:
    return Hog()
