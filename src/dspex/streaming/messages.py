"""What a streamed program yields besides its final ``Prediction``: field chunks
(:class:`StreamResponse`) and progress notes (:class:`StatusMessage`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dspex import settings
from dspex.utils.callback import BaseCallback

__all__ = ["StatusMessage", "StatusMessageProvider", "StatusStreamingCallback", "StreamResponse"]


@dataclass
class StreamResponse:
    """A piece of one output field of one predictor, as the LM writes it."""

    predict_name: str | None
    signature_field_name: str
    chunk: str
    is_last_chunk: bool


@dataclass
class StatusMessage:
    """A progress note (``"Calling tool search..."``) streamed between chunks."""

    message: str


class StatusMessageProvider:
    """Override these to choose the status messages ``streamify`` sends (``None``: none)."""

    def tool_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        return f"Calling tool {instance.name}..."

    def tool_end_status_message(self, outputs: Any) -> str | None:
        return "Tool calling finished! Querying the LLM with tool calling results..."

    def module_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        return None

    def module_end_status_message(self, outputs: Any) -> str | None:
        return None

    def lm_start_status_message(self, instance: Any, inputs: dict[str, Any]) -> str | None:
        return None

    def lm_end_status_message(self, outputs: Any) -> str | None:
        return None


def _send(message: str | None) -> None:
    stream = settings.current().send_stream
    if stream is not None and message:
        stream.send(StatusMessage(message))


class StatusStreamingCallback(BaseCallback):
    """Turns module/LM/tool start and end events into :class:`StatusMessage` items."""

    def __init__(self, status_message_provider: StatusMessageProvider | None = None) -> None:
        self.status_message_provider = status_message_provider or StatusMessageProvider()

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if getattr(instance, "name", None) != "finish":
            _send(self.status_message_provider.tool_start_status_message(instance, inputs))

    def on_tool_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        if outputs != "Completed.":
            _send(self.status_message_provider.tool_end_status_message(outputs))

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        _send(self.status_message_provider.lm_start_status_message(instance, inputs))

    def on_lm_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        _send(self.status_message_provider.lm_end_status_message(outputs))

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        _send(self.status_message_provider.module_start_status_message(instance, inputs))

    def on_module_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        _send(self.status_message_provider.module_end_status_message(outputs))
