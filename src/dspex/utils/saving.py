"""Whole-program save/load with cloudpickle (DSPy's ``save(dir, save_program=True)`` and
``dspy.load(dir)``), with DSPy's safety rules: loading needs ``allow_pickle=True``, and a
warning says a pickle runs code when it is loaded."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from dspex.errors import StateError

__all__ = [
    "DSPY_STATE_VERSION",
    "dependency_versions",
    "get_dependency_versions",
    "load",
    "save_program",
    "serialize_by_value",
]

logger = logging.getLogger(__name__)

DSPY_STATE_VERSION = "3.4.1"
"""The DSPy release whose save formats DSPex reads and writes."""

PICKLE_WARNING = (
    "Loading untrusted .pkl files can run arbitrary code, which may be dangerous. To avoid "
    'this, prefer saving using json format using module.save("module.json").'
)


def get_dependency_versions() -> dict[str, str]:
    """The versions DSPy records in saved files (and compares on load)."""
    import cloudpickle

    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "dspy": DSPY_STATE_VERSION,
        "cloudpickle": ".".join(cloudpickle.__version__.split(".")[:2]),
    }


dependency_versions = get_dependency_versions


def warn_version_mismatch(saved: dict[str, Any]) -> None:
    """One warning per dependency whose saved version differs from this environment's."""
    here = get_dependency_versions()
    for key, version in saved.items():
        if key in here and here[key] != version:
            logger.warning(
                f"There is a mismatch of {key} version between saved model and current "
                f"environment. You saved with `{key}=={version}`, but now you have "
                f"`{key}=={here[key]}`. This might cause errors or performance downgrade on the "
                "loaded model, please consider loading the model in the same environment as the "
                "saving environment."
            )


@contextmanager
def serialize_by_value(modules: Sequence[Any] | None) -> Iterator[None]:
    """Pickle these modules' code by value (so the file does not need them importable)."""
    import cloudpickle

    modules = list(modules or ())
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


def save_program(
    program: Any,
    path: str | Path,
    modules_to_serialize: Sequence[Any] | None = None,
    versions: dict[str, str] | None = None,
) -> None:
    """Write ``program.pkl`` (cloudpickle) and ``metadata.json`` into the directory ``path``
    (``versions``: the dependency versions to record, this environment's by default). The
    caller warns that a pickle runs code when loaded (``Module.save`` does, on its logger)."""
    import cloudpickle

    path = Path(path)
    if path.suffix:
        raise StateError(
            "`path` must point to a directory without a suffix when `save_program=True`, but "
            f"received: {path}"
        )
    if path.exists() and not path.is_dir():
        raise StateError(f"The path '{path}' exists but is not a directory.")
    path.mkdir(parents=True, exist_ok=True)
    try:
        with serialize_by_value(modules_to_serialize), open(path / "program.pkl", "wb") as fh:
            cloudpickle.dump(program, fh)
    except Exception as exc:
        raise StateError(
            f"Saving failed with error: {exc}. Please remove the non-picklable attributes from "
            "your DSPy program, or consider using state-only saving by setting "
            "`save_program=False`."
        ) from exc
    metadata = {"dependency_versions": versions or get_dependency_versions()}
    (path / "metadata.json").write_bytes(
        orjson.dumps(metadata, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    )


def load(path: str | Path, allow_pickle: bool = False) -> Any:
    """A whole program saved with ``save(dir, save_program=True)`` (here or by DSPy 3.4.1).

    The file is a pickle: loading runs code from it, so ``allow_pickle=True`` is required.
    """
    if not allow_pickle:
        raise StateError(
            "Loading with pickle is not allowed. Please set `allow_pickle=True` if you are sure "
            "you trust the source of the model."
        )
    import cloudpickle

    path = Path(path)
    if not path.exists():
        raise StateError(f"The path '{path}' does not exist.")
    try:
        metadata = orjson.loads((path / "metadata.json").read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise StateError(f"{path} has no readable metadata.json: {exc}") from exc
    warn_version_mismatch(metadata.get("dependency_versions") or {})
    with open(path / "program.pkl", "rb") as fh:
        return cloudpickle.load(fh)
