"""The OpenAI fine-tuning API on :class:`~dspex.testing.LMServer` (``server.finetuning``).

Routes (under ``/v1``): ``POST /files`` (multipart, ``purpose`` + ``file``), ``GET``/``DELETE
/files/{id}``, ``POST /fine_tuning/jobs`` (``model``, ``training_file``, ``hyperparameters``),
``GET /fine_tuning/jobs/{id}``, ``POST /fine_tuning/jobs/{id}/cancel`` and ``GET
/fine_tuning/jobs/{id}/events``. A training file must be chat JSONL (every line an object with
a ``messages`` list of ``role``/``content`` messages) or the job is refused with HTTP 400, as
OpenAI validates it.

Jobs move one step per ``GET`` of the job — ``validating_files``, ``queued``, ``running`` (for
``running_polls`` polls), then ``succeeded`` with ``fine_tuned_model`` =
``ft:<model>:dspex::<job id>`` — so tests advance them by polling, never by time.
``fail_next(message)`` makes the next created job end ``failed`` with that error, and
``hold_jobs`` keeps jobs ``running`` until it is cleared. ``files`` (id -> bytes) and ``jobs``
(id -> the job object) are what the server holds.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import threading
import time
from typing import Any

import orjson

__all__ = ["FineTuningAPI"]

Reply = tuple[int, bytes]
_STEPS = ("validating_files", "queued", "running")
_TERMINAL = ("succeeded", "failed", "cancelled")


def _error(status: int, message: str) -> Reply:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": status}}
    return status, orjson.dumps(body)


def _ok(payload: Any) -> Reply:
    return 200, orjson.dumps(payload)


class FineTuningAPI:
    """Files and fine-tuning jobs held in memory; thread-safe."""

    def __init__(self, running_polls: int = 1) -> None:
        self.running_polls = running_polls
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.hold_jobs = False
        self._polls: dict[str, int] = {}
        self._fail: list[str] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def fail_next(self, message: str = "training failed") -> None:
        """The next created job ends ``failed`` with ``message``."""
        with self._lock:
            self._fail.append(message)

    def training_data(self, job_id: str) -> list[Any]:
        """The records of a job's training file, parsed."""
        with self._lock:
            data = self.files[self.jobs[job_id]["training_file"]]
        return [orjson.loads(line) for line in data.splitlines() if line.strip()]

    # ------------------------------------------------------------------ routing
    def respond(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        """The reply for a fine-tuning route, or ``None`` when ``path`` is not one."""
        parts = path.strip("/").split("/")
        if parts and parts[0] == "v1":
            parts = parts[1:]
        if not parts or parts[0] not in ("files", "fine_tuning"):
            return None
        with self._lock:
            if parts[0] == "files":
                return self._files(method, parts[1:], headers, body)
            if parts[1:2] != ["jobs"]:
                return _error(404, f"no route {method} {path}")
            return self._jobs(method, parts[2:], body)

    def _files(self, method: str, rest: list[str], headers: dict[str, str], body: bytes) -> Reply:
        if not rest and method == "POST":
            fields = _multipart(headers.get("content-type", ""), body)
            if fields is None or "file" not in fields:
                return _error(400, "expected multipart/form-data with a 'file' part")
            if fields.get("purpose", (None, b""))[1] != b"fine-tune":
                return _error(400, "purpose must be 'fine-tune'")
            name, data = fields["file"]
            file_id = f"file-{next(self._ids)}"
            self.files[file_id] = data
            return _ok(_file_object(file_id, name or "data.jsonl", len(data)))
        if len(rest) == 1 and rest[0] in self.files:
            if method == "GET":
                return _ok(_file_object(rest[0], "data.jsonl", len(self.files[rest[0]])))
            if method == "DELETE":
                del self.files[rest[0]]
                return _ok({"id": rest[0], "object": "file", "deleted": True})
        return _error(404, f"no such file: {'/'.join(rest)}")

    def _jobs(self, method: str, rest: list[str], body: bytes) -> Reply:
        if not rest and method == "POST":
            return self._create(body)
        job = self.jobs.get(rest[0]) if rest else None
        if job is None:
            return _error(404, f"no such fine-tuning job: {'/'.join(rest)}")
        if len(rest) == 1 and method == "GET":
            self._advance(job)
            return _ok(job)
        if rest[1:] == ["cancel"] and method == "POST":
            if job["status"] in _TERMINAL:
                return _error(400, f"job {job['id']} is already {job['status']}")
            job["status"] = "cancelled"
            return _ok(job)
        if rest[1:] == ["events"] and method == "GET":
            events = [
                {"id": f"{job['id']}-{i}", "created_at": job["created_at"], "message": step}
                for i, step in enumerate(job["history"])
            ]
            return _ok({"object": "list", "data": events[::-1], "has_more": False})
        return _error(404, f"no route {method} fine_tuning/jobs/{'/'.join(rest)}")

    def _create(self, body: bytes) -> Reply:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, "request body must be JSON")
        if not isinstance(request, dict) or not isinstance(request.get("model"), str):
            return _error(400, "'model' is required")
        training_file = request.get("training_file")
        if training_file not in self.files:
            return _error(400, f"invalid training_file: {training_file}")
        problem = _chat_jsonl_problem(self.files[training_file])
        if problem:
            return _error(400, f"invalid training file {training_file}: {problem}")
        job_id = f"ftjob-{next(self._ids)}"
        job = {
            "id": job_id,
            "object": "fine_tuning.job",
            "model": request["model"],
            "training_file": training_file,
            "hyperparameters": request.get("hyperparameters") or {},
            "status": "validating_files",
            "fine_tuned_model": None,
            "error": None,
            "created_at": int(time.time()),
            "estimated_finish": None,
            "history": ["validating_files"],
        }
        if self._fail:
            job["_fail"] = self._fail.pop(0)
        self.jobs[job_id] = job
        self._polls[job_id] = 0
        return _ok(job)

    def _advance(self, job: dict[str, Any]) -> None:
        status = job["status"]
        if status in _TERMINAL:
            return
        if status != "running":
            job["status"] = _STEPS[_STEPS.index(status) + 1]
        else:
            self._polls[job["id"]] += 1
            if self._polls[job["id"]] >= self.running_polls and not self.hold_jobs:
                if "_fail" in job:
                    job["status"] = "failed"
                    job["error"] = {"code": "training_failed", "message": job["_fail"]}
                else:
                    job["status"] = "succeeded"
                    job["fine_tuned_model"] = f"ft:{job['model']}:dspex::{job['id']}"
        if job["history"][-1] != job["status"]:
            job["history"].append(job["status"])


def _file_object(file_id: str, name: str, size: int) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "filename": name,
        "purpose": "fine-tune",
        "created_at": int(time.time()),
    }


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]] | None:
    """``{field: (filename, bytes)}`` of a multipart/form-data body, or ``None``."""
    if not content_type.startswith("multipart/form-data"):
        return None
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        return None
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (part.get_filename(), payload)
    return fields


def _chat_jsonl_problem(data: bytes) -> str | None:
    lines = [line for line in data.splitlines() if line.strip()]
    if not lines:
        return "the file is empty"
    for number, line in enumerate(lines, 1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            return f"line {number} is not JSON"
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list) or not messages:
            return f"line {number} has no 'messages' list"
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                return f"line {number} has a message without string content"
            if message.get("role") not in ("system", "user", "assistant"):
                return f"line {number} has a message with role {message.get('role')!r}"
    return None
