"""``OpenAIProvider``: fine-tuning over the OpenAI-compatible HTTP API (``dspy.clients.openai``).

A job uploads the training data as a JSONL file (``POST {api_base}/files``, purpose
``fine-tune``), creates ``POST {api_base}/fine_tuning/jobs`` and polls ``GET
.../fine_tuning/jobs/{id}`` every ``poll_interval`` seconds until the job is terminal or
``timeout`` seconds have passed (:class:`~dspex.errors.FinetuneTimeout`; the remote job is
left running and its id is in the error). A failed or cancelled job, an HTTP error or an
unreachable server is a :class:`~dspex.errors.FinetuneError` naming the job; the API key never
appears in an error. The base URL and key are the provider's own (``OpenAIProvider(api_base=,
api_key=)``), else the fine-tuned LM's (``LM(..., api_base=, api_key=)``), else
``OPENAI_BASE_URL``/``OPENAI_API_BASE`` and ``OPENAI_API_KEY``.

Differences from DSPy 3.4.1 (which calls the ``openai`` SDK's global client): the HTTP calls
are made here with ``requests``, the endpoint follows the LM, polling has a deadline, and
progress goes to the ``dspex.clients.openai`` logger instead of ``print``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from dspex.clients.provider import Provider, TrainingJob
from dspex.clients.utils_finetune import TrainDataFormat, TrainingStatus, save_data

__all__ = ["OpenAIProvider", "TrainingJobOpenAI"]

logger = logging.getLogger(__name__)

_STATUS = {
    "validating_files": TrainingStatus.pending,
    "queued": TrainingStatus.pending,
    "running": TrainingStatus.running,
    "succeeded": TrainingStatus.succeeded,
    "failed": TrainingStatus.failed,
    "cancelled": TrainingStatus.cancelled,
}
_TERMINAL = (TrainingStatus.succeeded, TrainingStatus.failed, TrainingStatus.cancelled)
DEFAULT_TIMEOUT = 24 * 3600.0


class TrainingJobOpenAI(TrainingJob):
    """A fine-tune on an OpenAI-compatible server: its file and job ids, and the endpoint."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.provider_file_id: str | None = None
        self.provider_job_id: str | None = None
        self.api_base: str | None = None
        self.api_key: str | None = None
        self.provider: OpenAIProvider | None = None
        self.stopped = threading.Event()

    def _api(self) -> _API:
        return (self.provider or OpenAIProvider())._api(self)

    def cancel(self) -> bool:
        """Cancel the remote job (refused once it is done) and delete its file; the future
        is cancelled first, so the polling thread's outcome is dropped."""
        api = self._api()
        if self.provider_job_id is not None:
            status = self.status()
            if status in _TERMINAL:
                from dspex.errors import FinetuneError

                raise FinetuneError(
                    f"Jobs that are complete cannot be canceled. Job with ID "
                    f"{self.provider_job_id} is done.",
                    job_id=self.provider_job_id,
                    status=status.value,
                )
        cancelled = super().cancel()
        self.stopped.set()
        if self.provider_job_id is not None:
            api.request("POST", f"fine_tuning/jobs/{self.provider_job_id}/cancel")
            self.provider_job_id = None
        if self.provider_file_id is not None:
            api.request("DELETE", f"files/{self.provider_file_id}", missing_ok=True)
            self.provider_file_id = None
        return cancelled

    def status(self) -> TrainingStatus:
        if self.provider_job_id is None:
            return TrainingStatus.not_started
        job = self._api().request("GET", f"fine_tuning/jobs/{self.provider_job_id}")
        return _status_of(job, self.provider_job_id)


class OpenAIProvider(Provider):
    """Fine-tunes ``openai/...`` (and ``ft:...``) models through the HTTP fine-tuning API."""

    def __init__(
        self,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        poll_interval: float = 20.0,
        timeout: float = DEFAULT_TIMEOUT,
        request_timeout: float = 60.0,
    ) -> None:
        super().__init__()
        from dspex.errors import ConfigurationError

        if poll_interval < 0 or timeout <= 0 or request_timeout <= 0:
            raise ConfigurationError("poll_interval must be >= 0, timeout and request_timeout > 0")
        self.finetunable = True
        self.TrainingJob = TrainingJobOpenAI
        self.api_base = api_base
        self.api_key = api_key
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.request_timeout = request_timeout

    @staticmethod
    def is_provider_model(model: str) -> bool:
        return model.startswith("openai/") or model.startswith("ft:")

    @staticmethod
    def _remove_provider_prefix(model: str) -> str:
        return model.replace("openai/", "")

    def _api(self, job: TrainingJob | None = None) -> _API:
        base = (
            self.api_base
            or getattr(job, "api_base", None)
            or os.environ.get("OPENAI_BASE_URL")
            or os.environ.get("OPENAI_API_BASE")
            or "https://api.openai.com/v1"
        )
        key = self.api_key or getattr(job, "api_key", None) or os.environ.get("OPENAI_API_KEY")
        return _API(base, key, self.request_timeout)

    def finetune(  # type: ignore[override]
        self,
        job: TrainingJob,
        model: str,
        train_data: list[dict[str, Any]],
        train_data_format: TrainDataFormat | str | None,
        train_kwargs: dict[str, Any] | None = None,
    ) -> str:
        """Upload, start, wait; the fine-tuned model's id (``ft:...``) is returned."""
        self.validate_data_format(train_data_format)
        if isinstance(job, TrainingJobOpenAI):
            job.provider = self
        api = self._api(job)
        path = save_data(train_data)
        logger.info("[OpenAI Provider] data saved to %s; uploading", path)
        with open(path, "rb") as f:
            uploaded = api.request(
                "POST",
                "files",
                data={"purpose": "fine-tune"},
                files={"file": (os.path.basename(path), f, "application/jsonl")},
            )
        file_id = str(uploaded["id"])
        if isinstance(job, TrainingJobOpenAI):
            job.provider_file_id = file_id
        created = api.request(
            "POST",
            "fine_tuning/jobs",
            json={
                "model": self._remove_provider_prefix(model),
                "training_file": file_id,
                "hyperparameters": dict(train_kwargs or {}),
            },
        )
        job_id = str(created["id"])
        if isinstance(job, TrainingJobOpenAI):
            job.provider_job_id = job_id
        logger.info("[OpenAI Provider] job %s started", job_id)
        final = self.wait_for_job(api, job_id, getattr(job, "stopped", None))
        return self.get_trained_model(final, job_id)

    def wait_for_job(
        self, api: _API, job_id: str, stopped: threading.Event | None = None
    ) -> dict[str, Any]:
        """Poll the job until it is terminal; its last state is returned."""
        from dspex.errors import FinetuneError, FinetuneTimeout

        deadline = time.monotonic() + self.timeout
        while True:
            remote = api.request("GET", f"fine_tuning/jobs/{job_id}")
            status = _status_of(remote, job_id)
            if status in _TERMINAL:
                return remote
            if stopped is not None and stopped.is_set():
                raise FinetuneError(f"fine-tuning job {job_id} was cancelled", job_id=job_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FinetuneTimeout(
                    f"fine-tuning job {job_id} did not finish within {self.timeout:g}s "
                    f"(last status {remote.get('status')!r}); it is still running remotely",
                    job_id=job_id,
                    status=remote.get("status"),
                )
            wait = min(self.poll_interval, remaining)
            if stopped is not None:
                stopped.wait(wait)
            elif wait:
                time.sleep(wait)

    @staticmethod
    def get_trained_model(remote: dict[str, Any], job_id: str) -> str:
        from dspex.errors import FinetuneError

        status = _status_of(remote, job_id)
        if status != TrainingStatus.succeeded:
            error = remote.get("error") or {}
            detail = error.get("message") if isinstance(error, dict) else None
            raise FinetuneError(
                f"fine-tuning job {job_id} ended {remote.get('status')}"
                + (f": {detail}" if detail else "")
                + f"; it must be {TrainingStatus.succeeded.value} to retrieve a model",
                job_id=job_id,
                status=remote.get("status"),
            )
        model = remote.get("fine_tuned_model")
        if not isinstance(model, str) or not model:
            raise FinetuneError(
                f"fine-tuning job {job_id} succeeded without a fine_tuned_model", job_id=job_id
            )
        return model

    @staticmethod
    def validate_data_format(data_format: TrainDataFormat | str | None) -> None:
        from dspex.errors import FinetuneDataError

        if data_format not in (TrainDataFormat.CHAT, TrainDataFormat.COMPLETION):
            raise FinetuneDataError(f"OpenAI does not support the data format {data_format}.")

    def __repr__(self) -> str:
        return f"OpenAIProvider(api_base={self.api_base!r})"


def _status_of(remote: Any, job_id: str) -> TrainingStatus:
    from dspex.errors import FinetuneError

    raw = remote.get("status") if isinstance(remote, dict) else None
    if raw not in _STATUS:
        raise FinetuneError(
            f"fine-tuning job {job_id} has an unknown status {raw!r}", job_id=job_id, status=raw
        )
    return _STATUS[raw]


class _API:
    """JSON requests to one OpenAI-compatible base URL; every failure a FinetuneError."""

    def __init__(self, base: str, key: str | None, timeout: float) -> None:
        self.base = base.rstrip("/")
        self.key = key
        self.timeout = timeout

    def request(
        self, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        import requests

        from dspex.errors import FinetuneError

        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        url = f"{self.base}/{path}"
        try:
            response = requests.request(
                method, url, headers=headers, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise FinetuneError(
                f"cannot reach the fine-tuning API at {self.base}: {type(exc).__name__}",
                url=url,
            ) from None
        if response.status_code == 404 and missing_ok:
            return {}
        try:
            body = response.json()
        except ValueError:
            body = None
        if not 200 <= response.status_code < 300 or not isinstance(body, dict):
            detail = ""
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                detail = str(body["error"].get("message", ""))
            raise FinetuneError(
                f"{method} {url} returned HTTP {response.status_code}"
                + (f": {detail}" if detail else ""),
                url=url,
                status=response.status_code,
            )
        return body
