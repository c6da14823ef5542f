"""DSPy's training/launch provider interface (``dspy.clients.provider``).

A :class:`Provider` launches, kills and fine-tunes the models of an LM (``LM(...,
provider=...)``); the base class does nothing on launch/kill and cannot fine-tune, which is
right for hosted APIs. :class:`TrainingJob` is the ``concurrent.futures.Future`` that
``LM.finetune`` returns: its result is the fine-tuned LM (or the exception, as DSPy sets it).
Subclasses written for DSPy 3.4.1 (static ``finetune(job, model, train_data, ...)``,
``is_provider_model``, ``launch``/``kill``) work unchanged.
"""

from __future__ import annotations

from concurrent.futures import Future
from threading import Thread
from typing import TYPE_CHECKING, Any

from dspex.clients.utils_finetune import TrainDataFormat

if TYPE_CHECKING:
    from dspex.lm.client import LM

__all__ = ["Provider", "ReinforceJob", "TrainingJob"]


class TrainingJob(Future):  # type: ignore[type-arg]
    """A running fine-tune: a future of the fine-tuned LM, with the job's inputs."""

    def __init__(
        self,
        thread: Thread | None = None,
        model: str | None = None,
        train_data: list[dict[str, Any]] | None = None,
        train_data_format: TrainDataFormat | str | None = None,
        train_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.thread = thread
        self.model = model
        self.train_data = train_data
        self.train_data_format = train_data_format
        self.train_kwargs = train_kwargs or {}
        super().__init__()

    def cancel(self) -> bool:
        """Cancel the future (a provider's job class also cancels the remote job first)."""
        return super().cancel()

    def status(self) -> Any:
        """The provider's status of the job (a provider's job class defines it)."""
        raise NotImplementedError(f"{type(self).__name__} does not report a status")


class ReinforceJob:
    """A reinforcement-learning job (DSPy's interface; no built-in provider implements it)."""

    def __init__(self, lm: LM, train_kwargs: dict[str, Any] | None = None) -> None:
        self.lm = lm
        self.train_kwargs = train_kwargs or {}
        self.checkpoints: dict[str, Any] = {}
        self.last_checkpoint: str | None = None

    def initialize(self) -> None:
        raise NotImplementedError

    def step(
        self,
        train_data: list[dict[str, Any]],
        train_data_format: TrainDataFormat | str | None = None,
    ) -> None:
        raise NotImplementedError

    def terminate(self) -> None:
        raise NotImplementedError

    def save_checkpoint(self, checkpoint_name: str) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    def status(self) -> Any:
        raise NotImplementedError


class Provider:
    """Launches, kills and fine-tunes an LM's models; the base does nothing and cannot train."""

    def __init__(self) -> None:
        self.finetunable = False
        self.reinforceable = False
        self.TrainingJob: type[TrainingJob] = TrainingJob
        self.ReinforceJob: type[ReinforceJob] = ReinforceJob

    @staticmethod
    def is_provider_model(model: str) -> bool:
        """Whether ``model`` belongs to this provider (for ``LM.infer_provider``)."""
        return False

    @staticmethod
    def launch(lm: Any, launch_kwargs: dict[str, Any] | None = None) -> None:
        """Start serving ``lm`` (may be called when it already runs)."""

    @staticmethod
    def kill(lm: Any, launch_kwargs: dict[str, Any] | None = None) -> None:
        """Stop serving ``lm`` (may be called when it does not run)."""

    @staticmethod
    def finetune(
        job: TrainingJob,
        model: str,
        train_data: list[dict[str, Any]],
        train_data_format: TrainDataFormat | str | None,
        train_kwargs: dict[str, Any] | None = None,
    ) -> str:
        """Train ``model`` on ``train_data``; the fine-tuned model's id is returned."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
