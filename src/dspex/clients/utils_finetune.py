"""DSPy's ``dspy.clients.utils_finetune``: training-data formats, job statuses, the data file.

``TrainDataFormat`` and ``TrainingStatus`` are DSPy 3.4.1's string enums (their values are
what providers and saved jobs read). ``save_data`` writes JSON lines under the fine-tune
directory (``DSPY_FINETUNEDIR``, else ``<settings.cache_dir>/finetune``) named by the data's
hash, so the same dataset is one file.
"""

from __future__ import annotations

import hashlib
import os
from enum import Enum
from typing import Any

import orjson

__all__ = [
    "TrainDataFormat",
    "TrainingStatus",
    "get_finetune_directory",
    "infer_data_format",
    "save_data",
    "validate_data_format",
]


class TrainingStatus(str, Enum):  # noqa: UP042 - DSPy's str() of a member
    not_started = "not_started"
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class TrainDataFormat(str, Enum):  # noqa: UP042 - DSPy's str() of a member
    CHAT = "chat"
    COMPLETION = "completion"
    GRPO_CHAT = "grpo_chat"


def infer_data_format(adapter: Any) -> TrainDataFormat:
    """``CHAT`` for a chat adapter (DSPy's rule: any ``ChatAdapter``); others are refused."""
    from dspex.adapters import ChatAdapter
    from dspex.errors import FinetuneDataError

    if isinstance(adapter, ChatAdapter):
        return TrainDataFormat.CHAT
    raise FinetuneDataError(f"Could not infer the data format for: {adapter}")


def get_finetune_directory() -> str:
    """Where training files are written (created if missing)."""
    from dspex import settings

    default = os.path.join(str(settings.current().cache_dir), "finetune")
    path = os.path.abspath(os.environ.get("DSPY_FINETUNEDIR") or default)
    os.makedirs(path, exist_ok=True)
    return path


def save_data(data: list[dict[str, Any]]) -> str:
    """Write ``data`` as JSON lines; the path (named by the content hash) is returned."""
    lines = b"".join(orjson.dumps(item) + b"\n" for item in data)
    name = hashlib.sha256(lines).hexdigest()[:32] + ".jsonl"
    path = os.path.join(get_finetune_directory(), name)
    with open(path, "wb") as f:
        f.write(lines)
    return path


def validate_data_format(data: Any, data_format: TrainDataFormat | str) -> None:
    """Raise :class:`~dspex.errors.FinetuneDataError` naming the first malformed records."""
    from dspex.errors import FinetuneDataError

    checks = {TrainDataFormat.CHAT: _chat_error, TrainDataFormat.COMPLETION: _completion_error}
    check = (
        checks.get(TrainDataFormat(data_format)) if data_format in set(TrainDataFormat) else None
    )
    if check is None:
        raise FinetuneDataError(f"Data format {data_format} is not supported.")
    if not isinstance(data, list):
        raise FinetuneDataError(f"Data is not a list. Found data type: {type(data)}")
    errors = []
    for index, item in enumerate(data):
        err = check(item) if isinstance(item, dict) else f"not a dictionary: {type(item)}"
        if err:
            errors.append(f"record {index}: {err}")
    if errors:
        shown = "; ".join(errors[:5]) + (f"; ... ({len(errors)} in all)" if len(errors) > 5 else "")
        raise FinetuneDataError(f"Data format errors found: {shown}", errors=errors)


def _completion_error(item: dict[str, Any]) -> str | None:
    if set(item) != {"prompt", "completion"}:
        return f"expected keys ['completion', 'prompt'], found {sorted(item)}"
    bad = [k for k in ("prompt", "completion") if not isinstance(item[k], str)]
    return f"`{bad[0]}` must be a str" if bad else None


def _chat_error(item: dict[str, Any]) -> str | None:
    if set(item) != {"messages"}:
        return f"expected keys ['messages'], found {sorted(item)}"
    if not isinstance(item["messages"], list):
        return f"`messages` must be a list, found {type(item['messages'])}"
    for index, message in enumerate(item["messages"]):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            return f"message {index} must have exactly the keys 'role' and 'content'"
        if message["role"] not in ("assistant", "system", "user"):
            return f"message {index} has role {message['role']!r}"
        if not isinstance(message["content"], str):
            return f"message {index} content must be a str"
    return None
