"""Launch, kill and fine-tune on :class:`~dspex.LM` (DSPy 3.4.1's ``LM`` lifecycle methods).

``lm.provider`` is the training/launch :class:`~dspex.clients.provider.Provider` (``LM(...,
provider=...)``, else inferred from the model: ``openai/...`` and ``ft:...`` get
:class:`~dspex.clients.openai.OpenAIProvider`, anything else the base ``Provider``, which
launches and kills nothing and cannot fine-tune). ``finetune`` starts the provider's job on a
thread and returns the :class:`~dspex.clients.provider.TrainingJob` future; its result is a
copy of the LM on the fine-tuned model, or the exception (DSPy sets it as the result too).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from concurrent.futures import InvalidStateError
from typing import Any

from dspex.clients.provider import Provider, ReinforceJob, TrainingJob
from dspex.clients.utils_finetune import TrainDataFormat

__all__ = ["FinetuneMixin", "infer_provider"]

logger = logging.getLogger(__name__)


def infer_provider(model: str) -> Provider:
    """The provider DSPy infers for ``model``."""
    from dspex.clients.openai import OpenAIProvider

    if OpenAIProvider.is_provider_model(model):
        return OpenAIProvider()
    return Provider()


class FinetuneMixin:
    """DSPy's ``launch``/``kill``/``finetune``/``reinforce`` for an LM with a ``provider``."""

    model: str
    provider: Provider
    finetuning_model: str | None
    launch_kwargs: dict[str, Any]
    train_kwargs: dict[str, Any]

    def copy(self, **overrides: Any) -> Any:  # pragma: no cover - the LM defines it
        raise NotImplementedError

    def infer_provider(self) -> Provider:
        return infer_provider(self.model)

    def launch(self, launch_kwargs: dict[str, Any] | None = None) -> None:
        self.provider.launch(self, launch_kwargs)

    def kill(self, launch_kwargs: dict[str, Any] | None = None) -> None:
        self.provider.kill(self, launch_kwargs)

    def finetune(
        self,
        train_data: list[dict[str, Any]],
        train_data_format: TrainDataFormat | str | None,
        train_kwargs: dict[str, Any] | None = None,
    ) -> TrainingJob:
        """Start fine-tuning on a thread; the job's result is the fine-tuned LM."""
        from dspex.errors import LMUnsupportedFeatureError

        if not self.provider.finetunable:
            raise LMUnsupportedFeatureError(
                f"Provider {self.provider} does not support fine-tuning, please specify your "
                "provider by explicitly setting `provider` when creating the `dspex.LM` "
                "instance. For example, `dspex.LM('openai/gpt-4.1-mini-2025-04-14', "
                "provider=dspex.clients.openai.OpenAIProvider())`.",
                model=self.model,
                features=["finetuning"],
            )
        thread = threading.Thread(target=lambda: self._run_finetune_job(job), daemon=True)
        job = self.provider.TrainingJob(
            thread=thread,
            model=self.finetuning_model or self.model,
            train_data=train_data,
            train_data_format=train_data_format,
            train_kwargs=train_kwargs or self.train_kwargs,
        )
        endpoint = getattr(self, "endpoint", None)
        if endpoint is not None:  # the provider may use the LM's server and key
            job.api_base = endpoint.api_base  # type: ignore[attr-defined]
            job.api_key = endpoint.api_key  # type: ignore[attr-defined]
        thread.start()
        return job

    def reinforce(self, train_kwargs: dict[str, Any]) -> ReinforceJob:
        from dspex.errors import LMUnsupportedFeatureError

        if not self.provider.reinforceable:
            raise LMUnsupportedFeatureError(
                f"Provider {self.provider} does not implement the reinforcement learning "
                "interface.",
                model=self.model,
                features=["reinforce"],
            )
        job = self.provider.ReinforceJob(lm=self, train_kwargs=train_kwargs)  # type: ignore[arg-type]
        job.initialize()
        return job

    def _run_finetune_job(self, job: TrainingJob) -> None:
        if job.cancelled():
            return
        try:
            model = self.provider.finetune(
                job=job,
                model=job.model or self.model,
                train_data=job.train_data or [],
                train_data_format=job.train_data_format,
                train_kwargs=job.train_kwargs,
            )
            result: Any = self.copy(model=self._with_provider_prefix(model))
        except Exception as err:  # DSPy's contract: the error is the job's result
            logger.error("fine-tuning %s failed: %s", job.model, err)
            result = err
        with contextlib.suppress(InvalidStateError):  # a cancelled job takes no result
            job.set_result(result)

    def _with_provider_prefix(self, model: str) -> str:
        """A provider's bare model id (``ft:gpt-4o-mini:...``) gets the LM's provider prefix
        (DSPex's LM needs ``provider/model``; DSPy's LiteLLM guesses it)."""
        endpoint = getattr(self, "endpoint", None)
        if "/" in model.split(":", 1)[0] or endpoint is None:
            return model
        return f"{endpoint.provider}/{model}"
