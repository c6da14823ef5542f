"""One optimizer run: its budget, per-phase progress and summary, and resumable checkpoints.

Every native optimizer's ``compile`` opens a :class:`Run`::

    run = Run("BootstrapFewShot", self.budget, run_dir=self.run_dir,
              identity={"args": {...}, "trainset": trainset, "student": student})
    with run:
        state = run.restore("bootstrap")          # None on a fresh run
        with run.phase("bootstrap", total=len(trainset)) as bar:
            ...                                   # LM calls here are booked to "bootstrap"
            bar.advance()
            run.checkpoint("bootstrap", {...})    # JSON; written atomically
            if run.spent: ...                     # max_lm_calls / max_cost reached
    compiled.run_summary = run.summary

With ``run_dir=None`` nothing is written and :meth:`Run.restore` always returns ``None``.
A run directory holds ``run.json`` (format version, optimizer, one hash per identity part)
and ``checkpoints/<key>.json``; a run started again with the same directory and the same
identity resumes, a different identity raises :class:`~dspex.errors.RunDirMismatch` naming
the parts that differ. Checkpoints hold the optimizer's own state; the LM calls between the
last checkpoint and the crash are made again, and the on-disk LM cache answers those
(``settings.cache_dir``, on by default), so they are not paid twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from dspex.errors import OptimizerError, RunDirError, RunDirMismatch, RunNotFound
from dspex.teleprompt.budget import CallBudget, RunSummary, counting

__all__ = [
    "FORMAT_VERSION",
    "PhaseProgress",
    "Run",
    "RunDir",
    "dump_program",
    "identity_hash",
    "load_program",
    "numpy_rng_state",
    "restore_numpy_rng",
]

FORMAT_VERSION = 1


# ---------------------------------------------------------------------- identity
def _describe(value: Any) -> Any:
    """A JSON-able picture of ``value`` for hashing: examples by content, programs by state,
    LMs by model and options, functions by qualified name."""
    if hasattr(value, "dump_state") and hasattr(value, "named_predictors"):
        return {"program": type(value).__qualname__, "state": value.dump_state()}
    model = getattr(value, "model", None)
    if isinstance(model, str) and isinstance(getattr(value, "kwargs", None), dict):
        return {"lm": model, "kwargs": _describe(value.kwargs)}  # an LM and its options
    if hasattr(value, "toDict") and hasattr(value, "with_inputs"):
        keys = getattr(value, "_input_keys", None)
        return {"example": value.toDict(), "inputs": sorted(keys) if keys else None}
    if isinstance(value, Mapping):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_describe(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if callable(value):
        name = getattr(value, "__qualname__", None) or type(value).__qualname__
        return f"{getattr(value, '__module__', '?')}.{name}"
    return type(value).__qualname__


def identity_hash(value: Any) -> str:
    """SHA-256 of a value's description (see :class:`Run`'s ``identity``)."""
    blob = orjson.dumps(_describe(value), option=orjson.OPT_SORT_KEYS, default=repr)
    return hashlib.sha256(blob).hexdigest()


# ---------------------------------------------------------------------- optimizer state
def dump_program(program: Any) -> dict[str, Any]:
    """What an optimizer changes in a program, for a checkpoint: each predictor's signature
    state and demos, with which demos are :class:`~dspex.Example` objects (and their input
    keys) so that :func:`load_program` gives back demos of the same types."""
    from dspex.primitives.example import Example

    out: dict[str, Any] = {}
    for name, predictor in program.named_predictors():
        state = predictor.dump_state()
        kinds = [
            (sorted(d._input_keys) if d._input_keys is not None else True)
            if isinstance(d, Example)
            else False
            for d in predictor.demos
        ]
        out[name] = {"signature": state["signature"], "demos": state["demos"], "kinds": kinds}
    return out


def load_program(template: Any, saved: Mapping[str, Any]) -> Any:
    """A copy of ``template`` with the signatures and demos :func:`dump_program` saved
    (everything else, the predictors' LMs included, is the template's)."""
    from dspex.primitives.example import Example

    program = template.deepcopy()
    for name, predictor in program.named_predictors():
        entry = saved[name]
        predictor.signature = predictor.signature.load_state(entry["signature"])
        demos: list[Any] = []
        for demo, kind in zip(entry["demos"], entry["kinds"], strict=True):
            if kind is False:
                demos.append(dict(demo))
                continue
            example = Example(**demo)
            demos.append(example.with_inputs(*kind) if isinstance(kind, list) else example)
        predictor.demos = demos
    return program


def numpy_rng_state(generator: Any) -> Any:
    """A numpy ``Generator``'s bit-generator state as JSON (its 128-bit integers as strings)."""

    def enc(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: enc(v) for k, v in value.items()}
        if isinstance(value, int) and not isinstance(value, bool):
            return {"int": str(value)}
        return value

    return enc(generator.bit_generator.state)


def restore_numpy_rng(generator: Any, saved: Any) -> None:
    """Set ``generator`` to the state :func:`numpy_rng_state` saved."""

    def dec(value: Any) -> Any:
        if isinstance(value, Mapping):
            if set(value) == {"int"}:
                return int(value["int"])
            return {k: dec(v) for k, v in value.items()}
        return value

    generator.bit_generator.state = dec(saved)


# ---------------------------------------------------------------------- directory
_KEY = re.compile(r"[^A-Za-z0-9_.-]+")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader (or a crash) sees the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _check_resumable(path: Path) -> None:
    """``path`` holds a run to resume (its manifest), else :class:`RunNotFound`."""
    if not path.is_dir():
        raise RunNotFound(f"resume={str(path)!r}: no such run directory", path=str(path))
    if not (path / "run.json").is_file():
        raise RunNotFound(
            f"resume={str(path)!r}: the directory holds no run (none has saved a checkpoint "
            "there yet); start one with run_dir=",
            path=str(path),
        )


def _jsonable(value: Any) -> Any:
    """Scalars that know their Python value (``numpy.float64(0.5).item()``) and dict-likes
    (a ``Prediction`` a metric returned) are written as those; anything else is an error."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, Mapping):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    to_dict = getattr(value, "toDict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


class RunDir:
    """A run directory: the manifest (``run.json``) and one JSON file per checkpoint key."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        optimizer: str,
        parts: Mapping[str, str],
        *,
        must_exist: bool = False,
    ):
        self.path = Path(path)
        self.optimizer = optimizer
        self.parts = dict(parts)
        if must_exist:
            _check_resumable(self.path)
        try:
            (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(
                f"cannot use run_dir {self.path}: {exc}", path=str(self.path)
            ) from exc
        self._manifest = self.path / "run.json"
        self._claimed = self._manifest.exists()
        if self._claimed:
            self._check(self._read(self._manifest))

    def _check(self, found: Any) -> None:
        if not isinstance(found, dict) or found.get("version") != FORMAT_VERSION:
            version = found.get("version") if isinstance(found, dict) else None
            raise RunDirError(
                f"run_dir {self.path} was written by run format {version!r}; "
                f"this DSPex reads format {FORMAT_VERSION}",
                path=str(self.path),
            )
        if found.get("optimizer") != self.optimizer:
            raise RunDirMismatch(
                f"run_dir {self.path} holds a {found.get('optimizer')} run, not a "
                f"{self.optimizer} run; use another directory",
                path=str(self.path),
                parts=["optimizer"],
            )
        theirs = found.get("parts") or {}
        differ = sorted(
            name for name in {*theirs, *self.parts} if theirs.get(name) != self.parts.get(name)
        )
        if differ:
            raise RunDirMismatch(
                f"run_dir {self.path} holds a {self.optimizer} run with different "
                f"{', '.join(differ)}; resume it with the same ones or use another directory",
                path=str(self.path),
                parts=differ,
            )

    def _file(self, key: str) -> Path:
        return self.path / "checkpoints" / f"{_KEY.sub('_', key)}.json"

    def _read(self, path: Path) -> Any:
        try:
            return orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise RunDirError(f"cannot read {path}: {exc}", path=str(self.path)) from exc

    def _write(self, path: Path, value: Any) -> None:
        try:
            data = orjson.dumps(
                value,
                default=_jsonable,
                option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY,
            )
        except TypeError as exc:
            raise RunDirError(
                f"checkpoint {path.name} is not JSON-serializable: {exc}", path=str(self.path)
            ) from exc
        _atomic_write(path, data)

    def save(self, key: str, state: Any) -> None:
        if not self._claimed:  # written with the first checkpoint: a run that failed before
            # saving anything (bad arguments, no price...) leaves the directory free
            manifest = {"version": FORMAT_VERSION, "optimizer": self.optimizer, "parts": self.parts}
            self._write(self._manifest, manifest)
            self._claimed = True
        self._write(self._file(key), {"version": FORMAT_VERSION, "key": key, "state": state})

    def load(self, key: str) -> Any | None:
        path = self._file(key)
        if not path.exists():
            return None
        found = self._read(path)
        if not isinstance(found, dict) or found.get("key") != key:
            raise RunDirError(f"checkpoint {path} is not a checkpoint of {key!r}", path=str(path))
        return found.get("state")


# ---------------------------------------------------------------------- progress
_bar_lock = threading.Lock()
_bar_active = False


def _claim_bar() -> bool:
    """Take the one progress-bar slot of the process (rich shows one live display at a time):
    optimizers running inside optimizers, or side by side, show only the first bar."""
    global _bar_active
    with _bar_lock:
        if _bar_active:
            return False
        _bar_active = True
        return True


def _release_bar() -> None:
    global _bar_active
    with _bar_lock:
        _bar_active = False


class PhaseProgress:
    """A rich progress bar for one phase (``phase: 3/10``), shown only on a terminal, and only
    when no other bar of ours is showing (then this one counts silently)."""

    def __init__(self, name: str, total: int | None, enabled: bool) -> None:
        self.name = name
        self.total = total
        self.done = 0
        self._progress: Any = None
        self._task: Any = None
        if enabled and _claim_bar():
            try:
                self._start(name, total)
            except Exception:  # another live display (an Evaluate bar) is showing: no bar
                self._progress = None
                _release_bar()

    def _start(self, name: str, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=sys.stdout),
        )
        self._progress.start()
        self._task = self._progress.add_task(name, total=total)

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        if self._progress is not None:
            self._progress.update(self._task, advance=steps)

    def close(self) -> None:
        if self._progress is not None:
            try:
                self._progress.stop()
            finally:
                self._progress = None
                _release_bar()


# ---------------------------------------------------------------------- run
class Run:
    """A compile's budget accounting, phases, progress and checkpoints (see the module doc).

    ``identity``: what a resumed run must share with the run that wrote ``run_dir`` (the
    optimizer's arguments, the student, the datasets); each part is hashed on its own so a
    mismatch names the parts that differ.
    """

    def __init__(
        self,
        optimizer: str,
        budget: CallBudget,
        *,
        run_dir: str | os.PathLike[str] | None = None,
        identity: Mapping[str, Any] | None = None,
        display_progress: bool = True,
        resume: bool = False,
    ) -> None:
        self.optimizer = optimizer
        self.budget = budget
        self.display_progress = display_progress and _is_terminal()
        self.resumed: list[str] = []
        self.dir: RunDir | None = None
        if run_dir is not None:
            parts = {name: identity_hash(value) for name, value in (identity or {}).items()}
            self.dir = RunDir(run_dir, optimizer, parts, must_exist=resume)
        self._counting: contextlib.ExitStack | None = None
        self._stopped: str | None = None

    def __enter__(self) -> Run:
        self.budget.reset()
        stack = contextlib.ExitStack()
        stack.enter_context(counting(self.budget))
        self._counting = stack
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._counting is not None:
            self._counting.close()
            self._counting = None

    @contextlib.contextmanager
    def phase(self, name: str, total: int | None = None) -> Iterator[PhaseProgress]:
        """Book the LM calls of this block (and the tasks it starts) to phase ``name``; with
        ``total``, a progress bar of that many steps (one bar at a time: don't nest them)."""
        with self.progress(name, total) as bar, self.budget.in_phase(name):
            yield bar

    @contextlib.contextmanager
    def progress(self, name: str, total: int | None) -> Iterator[PhaseProgress]:
        """A progress bar named ``name`` (shown with a ``total``, on a terminal only)."""
        bar = PhaseProgress(name, total, self.display_progress and total is not None)
        try:
            yield bar
        finally:
            bar.close()

    @property
    def spent(self) -> bool:
        """A budget is spent: stop starting new work (remembered for the summary)."""
        stopped = self.budget.stopped_by
        if stopped is not None:
            self._stopped = stopped
        return stopped is not None

    def checkpoint(self, key: str, state: Any) -> None:
        """Save ``state`` (JSON-able) under ``key``; nothing without a run directory."""
        if self.dir is not None:
            self.dir.save(key, state)

    def peek(self, key: str) -> Any | None:
        """The state saved under ``key``, like :meth:`restore` but not counted as resumed."""
        return self.dir.load(key) if self.dir is not None else None

    def restore(self, key: str) -> Any | None:
        """The state last saved under ``key`` by this run (before a crash), else ``None``."""
        if self.dir is None:
            return None
        state = self.dir.load(key)
        if state is not None:
            self.resumed.append(key)
        return state

    @property
    def summary(self) -> RunSummary:
        summary = self.budget.summary(self.optimizer)
        summary.stopped = self._stopped
        summary.resumed = list(self.resumed)
        return summary


def _is_terminal() -> bool:
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


# ---------------------------------------------------------------------- optimizer options
class RunOptions:
    """What the budgeted, resumable optimizers share: ``max_lm_calls``/``max_cost`` (one
    :class:`CallBudget`), ``run_dir``/``resume`` and ``display_progress``, and how a compile
    opens its :class:`Run` (identified by the optimizer's own ``_args()`` and the student).

    ``run_dir=path`` checkpoints into ``path`` and resumes what it finds there; ``resume=path``
    resumes the run in ``path`` and fails (:class:`~dspex.errors.RunNotFound`) when there is
    none; then ``run_dir`` is ``path`` too (giving both, they must name the same directory)."""

    budget: CallBudget
    run_dir: str | os.PathLike[str] | None
    resume: str | os.PathLike[str] | None = None
    display_progress: bool

    def _set_run_options(
        self,
        max_lm_calls: int | None,
        max_cost: float | None,
        run_dir: str | os.PathLike[str] | None,
        display_progress: bool = True,
        resume: str | os.PathLike[str] | None = None,
    ) -> None:
        self.budget = CallBudget(max_lm_calls, max_cost)
        if resume is not None:
            if run_dir is not None and Path(run_dir).resolve() != Path(resume).resolve():
                raise OptimizerError(
                    f"run_dir={str(run_dir)!r} and resume={str(resume)!r} name different "
                    "directories; give one of them (resume=path resumes the run in path)"
                )
            _check_resumable(Path(resume))
            run_dir = resume
        self.run_dir = run_dir
        self.resume = resume
        self.display_progress = display_progress

    def _args(self) -> dict[str, Any]:
        """The arguments a resumed run must share with the run that wrote ``run_dir``."""
        raise NotImplementedError

    def _open_run(
        self,
        optimizer: str,
        student: Any,
        *,
        display_progress: bool | None = None,
        **identity: Any,
    ) -> Run:
        """The :class:`Run` of one compile of ``student``; ``identity`` adds what else a
        resumed run must share (data, teacher, LM...)."""
        return Run(
            optimizer,
            self.budget,
            run_dir=self.run_dir,
            identity={"args": self._args(), "student": student, **identity},
            display_progress=self.display_progress
            if display_progress is None
            else display_progress,
            resume=self.resume is not None,
        )
