"""LM call history: the process-wide record behind ``dspex.inspect_history(n)``, bounded, and
the printer that shows the last calls the way DSPy prints them."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, TextIO

from dspex import settings

__all__ = [
    "GLOBAL_HISTORY",
    "MAX_HISTORY_SIZE",
    "inspect_history",
    "pretty_print_history",
    "record_history",
]

MAX_HISTORY_SIZE = 10_000
"""How many LM calls the process-wide history keeps (the oldest are dropped)."""

GLOBAL_HISTORY: list[dict[str, Any]] = []
"""Every LM call of the process, oldest first (at most ``MAX_HISTORY_SIZE``)."""
_lock = threading.Lock()


def record_history(owner: Any, entry: dict[str, Any]) -> None:
    """Remember one LM call globally, in ``owner.history`` and in the history of each module
    the call is made under (``caller_modules``); nothing when ``disable_history`` is set.
    Per-owner histories keep at most ``max_history_size`` entries."""
    now = settings.current()
    if now.disable_history:
        return
    with _lock:
        _append(GLOBAL_HISTORY, entry, MAX_HISTORY_SIZE)
        if now.max_history_size == 0:
            return
        for holder in (owner, *(now.caller_modules or ())):
            history = getattr(holder, "history", None)
            if history is not None:
                _append(history, entry, now.max_history_size)


def _append(history: Any, entry: dict[str, Any], bound: int) -> None:
    excess = len(history) + 1 - bound
    if excess > 0:
        if isinstance(history, list):
            del history[:excess]
        else:
            for _ in range(excess):
                history.popleft()
    history.append(entry)


def _color(text: str, code: int, on: bool, end: str = "\n") -> str:
    """DSPy's printer adds a newline after each colored piece (so a blank line follows)."""
    if code == 32:
        text = text.lstrip()
    return f"\x1b[{code}m{text}\x1b[0m{end}" if on else f"{text}{end}"


def _content_lines(content: Any, colors: bool) -> list[str]:
    if isinstance(content, str):
        return [content.strip()]
    lines: list[str] = []
    for part in content if isinstance(content, list) else ():
        kind = part.get("type")
        if kind == "text":
            lines.append(part["text"].strip())
        elif kind == "image_url":
            url = part["image_url"].get("url", "")
            if "base64" in url:
                head, _, data = url.partition("base64,")
                shown = f"<{head}base64,<IMAGE BASE 64 ENCODED({len(data)!s})>"
            else:
                shown = f"<image_url: {url}>"
            lines.append(_color(shown.strip(), 34, colors))
        elif kind == "input_audio":
            audio = part["input_audio"]
            shown = (
                f"<audio format='{audio['format']}' base64-encoded, length={len(audio['data'])}>"
            )
            lines.append(_color(shown, 34, colors))
        elif kind in ("file", "input_file"):
            info = part.get("file", part.get("input_file", {}))
            shown = (
                f"<file: name:{info.get('filename', '')}, id:{info.get('file_id', '')}, "
                f"data_length:{len(info.get('file_data', ''))}>"
            )
            lines.append(_color(shown, 34, colors))
    return lines


def _tool_call_lines(calls: Any, colors: bool) -> list[str]:
    lines = [_color("Tool calls:", 31, colors)] if calls else []
    for call in calls or ():
        function = call.get("function") or {}
        args = function.get("arguments")
        if args is None:
            args = call.get("args", call.get("arguments", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        shown = json.dumps(args, ensure_ascii=False) if isinstance(args, dict | list) else str(args)
        name = function.get("name") or call.get("name", "<unknown>")
        lines.append(_color(f"{name}: {shown}", 32, colors))
    return lines


def pretty_print_history(history: Any, n: int = 1, file: TextIO | None = None) -> None:
    """Print the last ``n`` calls of ``history``: each message, then the response (colored
    on a terminal, plain when written to ``file``)."""
    out = file or sys.stdout
    colors = file is None
    for item in list(history)[-n:] if n > 0 else []:
        messages = item.get("messages") or [{"role": "user", "content": item.get("prompt")}]
        outputs = item.get("outputs") or [""]
        print("\n\n\n", file=out)
        print(_color(f"[{item.get('timestamp', 'Unknown time')}]", 34, colors), file=out)
        for msg in messages:
            print(_color(f"{msg['role'].capitalize()} message:", 31, colors), file=out)
            for line in _content_lines(msg.get("content"), colors):
                print(line, file=out)
            for line in _tool_call_lines(msg.get("tool_calls"), colors):
                print(line, file=out)
            print("\n", file=out)
        first = outputs[0]
        if isinstance(first, dict):
            if first.get("text"):
                print(_color("Response:", 31, colors), file=out)
                print(_color(first["text"].strip(), 32, colors), file=out)
            for line in _tool_call_lines(first.get("tool_calls"), colors):
                print(line, file=out)
        else:
            print(_color("Response:", 31, colors), file=out)
            print(_color(str(first).strip(), 32, colors), file=out)
        if len(outputs) > 1:
            note = f" \t (and {len(outputs) - 1} other completions)"
            print(_color(note, 31, colors, end=""), file=out)
    print("\n\n\n", file=out)


def inspect_history(n: int = 1, file: TextIO | None = None) -> None:
    """Print the last ``n`` LM calls made in this process (any LM), like ``dspy.inspect_history``."""
    pretty_print_history(GLOBAL_HISTORY, n, file=file)
