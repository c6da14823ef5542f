"""DSPy's logging and cache switches: ``enable_logging``, ``disable_logging``,
``configure_dspy_loggers``, ``enable/disable_litellm_logging``, ``configure_cache``."""

from __future__ import annotations

import logging
import os
from typing import Any

from dspex import settings

__all__ = [
    "configure_cache",
    "configure_dspy_loggers",
    "disable_litellm_logging",
    "disable_logging",
    "enable_litellm_logging",
    "enable_logging",
]

logger = logging.getLogger(__name__)


def enable_logging() -> None:
    """Let DSPex's loggers (``dspex.*``) emit again."""
    logging.getLogger("dspex").disabled = False


def disable_logging() -> None:
    """Silence DSPex's loggers (``dspex.*``)."""
    logging.getLogger("dspex").disabled = True


def configure_dspy_loggers(root_module_name: str) -> None:
    """Give the ``root_module_name`` logger a stream handler (DSPy's default set-up)."""
    root = logging.getLogger(root_module_name)
    if not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y/%m/%d %H:%M:%S"
            )
        )
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def enable_litellm_logging() -> None:
    """DSPex does not use litellm in process; this only affects DSPy workers' litellm logger."""
    logging.getLogger("LiteLLM").disabled = False


def disable_litellm_logging() -> None:
    logging.getLogger("LiteLLM").disabled = True


def configure_cache(
    enable_disk_cache: bool | None = True,
    enable_memory_cache: bool | None = True,
    disk_cache_dir: str | os.PathLike[str] | None = None,
    disk_size_limit_bytes: int | None = None,
    memory_max_entries: float = 1_000_000,
    restrict_pickle: bool = False,
    safe_types: list[type[Any]] | None = None,
) -> None:
    """DSPy's cache switch: install a new :class:`~dspex.lm.cache.Cache` as ``dspex.cache``.

    ``enable_memory_cache``/``enable_disk_cache`` turn the in-memory LRU and the on-disk
    SQLite tier on or off for every LM and Embedder (both off: no call is answered from or
    stored in a cache); ``disk_cache_dir`` moves the disk tier (and ``settings.cache_dir``);
    ``memory_max_entries`` bounds the memory tier, which starts empty. ``dspex.LM(...,
    cache=False)`` still turns caching off for one LM. The disk tier holds JSON, never pickles
    (``restrict_pickle`` holds by construction); ``disk_size_limit_bytes`` has no equivalent
    (logged when given).
    """
    from dspex.lm.cache import Cache, install

    new = Cache(
        bool(enable_disk_cache), bool(enable_memory_cache), disk_cache_dir,
        disk_size_limit_bytes, memory_max_entries, restrict_pickle, safe_types,
    )  # fmt: skip
    if disk_cache_dir is not None:
        settings.configure(cache_dir=disk_cache_dir)
    install(new)
    if disk_size_limit_bytes is not None:
        logger.warning(
            "configure_cache: disk_size_limit_bytes has no DSPex equivalent and was ignored"
        )
