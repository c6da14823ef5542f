"""The wire protocol between a pool and its workers: one serializer, tagged unions, frames.

A frame is a 4-byte big-endian length followed by that many bytes of msgpack. Every message
is a tuple whose first element is a literal ``kind``; :func:`decode` turns it back into the
matching ``NamedTuple``. Bytes travel as msgpack ``bin`` (no base64); other values need a
codec (``PoolConfig.codec``) whose ``default``/``ext_hook`` map them to msgpack ext types.

This module (like :mod:`dspex.pool.worker`) needs only the standard library and ``msgpack``,
so workers run in a virtualenv with nothing else installed.
"""

from __future__ import annotations

import importlib
import struct
import threading
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import msgpack

from dspex.errors import CallError, DSPexError, ProtocolError

__all__ = [
    "MAX_FRAME",
    "Call",
    "Cancel",
    "Codec",
    "Credit",
    "DropSession",
    "End",
    "Error",
    "FrameBuffer",
    "InitFailed",
    "Item",
    "Message",
    "ParentCall",
    "ParentReply",
    "Ready",
    "Result",
    "Shutdown",
    "call_frame",
    "decode",
    "exception_payload",
    "fs_decode",
    "fs_encode",
    "load_codec",
    "pack_args",
    "payload_error",
]

MAX_FRAME = 1 << 30
_HEADER = struct.Struct(">I")

# ------------------------------------------------------------------ parent -> worker


class Call(NamedTuple):
    kind: Literal["call"]
    id: int
    method: str
    args: list[Any]
    kwargs: dict[str, Any]
    timeout: float | None  # seconds left until the call's deadline
    session: str | None
    stream: int  # 0: plain call; > 0: a stream with this initial credit window


class Cancel(NamedTuple):
    kind: Literal["cancel"]
    id: int


class Credit(NamedTuple):
    kind: Literal["credit"]
    id: int
    n: int


class ParentReply(NamedTuple):
    kind: Literal["parent_reply"]
    id: int  # the callback request id
    ok: bool
    value: Any  # the result, or the error payload when not ok (see exception_payload)


class DropSession(NamedTuple):
    kind: Literal["drop_session"]
    session: str


class Shutdown(NamedTuple):
    kind: Literal["shutdown"]


# ------------------------------------------------------------------ worker -> parent


class Ready(NamedTuple):
    kind: Literal["ready"]
    pid: int
    info: dict[str, Any]


class InitFailed(NamedTuple):
    kind: Literal["init_failed"]
    type: str
    message: str
    traceback: str


class Result(NamedTuple):
    kind: Literal["result"]
    id: int
    value: Any


class Error(NamedTuple):
    kind: Literal["error"]
    id: int
    type: str
    message: str
    traceback: str
    limit: str | None  # "memory" / "files" when a resource limit caused it
    cancelled: bool
    payload: dict[str, Any] | None  # a typed error from the handler (see payload_error)


class Item(NamedTuple):
    kind: Literal["item"]
    id: int
    value: Any


class End(NamedTuple):
    kind: Literal["end"]
    id: int


class ParentCall(NamedTuple):
    kind: Literal["parent_call"]
    id: int  # the running call
    cbid: int
    name: str
    args: list[Any]
    kwargs: dict[str, Any]


Message = (
    Call
    | Cancel
    | Credit
    | ParentReply
    | DropSession
    | Shutdown
    | Ready
    | InitFailed
    | Result
    | Error
    | Item
    | End
    | ParentCall
)

_KINDS: dict[str, Any] = {
    "call": Call,
    "cancel": Cancel,
    "credit": Credit,
    "parent_reply": ParentReply,
    "drop_session": DropSession,
    "shutdown": Shutdown,
    "ready": Ready,
    "init_failed": InitFailed,
    "result": Result,
    "error": Error,
    "item": Item,
    "end": End,
    "parent_call": ParentCall,
}


_tuple_new = tuple.__new__
_ARITY: dict[str, tuple[Any, int]] = {kind: (cls, len(cls._fields)) for kind, cls in _KINDS.items()}


def decode(raw: Any) -> Message:
    """The typed message for a decoded msgpack array (``ProtocolError`` if it is not one)."""
    try:
        cls, arity = _ARITY[raw[0]]
        if len(raw) == arity:
            message: Message = _tuple_new(cls, raw)  # (``cls._make`` without its Python frame)
            return message
    except (KeyError, IndexError, TypeError) as exc:
        raise ProtocolError(f"malformed message {raw!r:.200}") from exc
    raise ProtocolError(f"malformed message {raw!r:.200}")


class Codec:
    """msgpack packing/unpacking with optional extension hooks (one per connection end)."""

    def __init__(
        self,
        default: Callable[[Any], Any] | None = None,
        ext_hook: Callable[[int, bytes], Any] | None = None,
    ) -> None:
        self.packer = msgpack.Packer(use_bin_type=True, default=default, autoreset=True)
        self.default = default
        self.ext_hook = ext_hook

    def frame(self, message: tuple[Any, ...]) -> bytes:
        """One length-prefixed frame."""
        body: bytes = self.packer.pack(message)
        return _HEADER.pack(len(body)) + body

    def loads(self, body: bytes | memoryview) -> Any:
        """The msgpack value of a frame body, not yet typed (see :func:`decode`)."""
        try:
            if self.ext_hook is None:
                return msgpack.unpackb(body, raw=False, strict_map_key=False)
            return msgpack.unpackb(body, raw=False, strict_map_key=False, ext_hook=self.ext_hook)
        except Exception as exc:
            raise ProtocolError(f"undecodable frame: {exc}") from exc

    def unpack(self, body: bytes | memoryview) -> Message:
        return decode(self.loads(body))


def exception_payload(exc: BaseException, context: str = "") -> dict[str, Any]:
    """The error payload (``{"type", "message", "fields"}``) :func:`payload_error` turns back
    into an exception: a DSPex error keeps its class and simple fields; anything else becomes
    ``RemoteError`` naming the original type. ``context`` prefixes the message."""
    import traceback

    cls = type(exc)
    qualname = f"{cls.__module__}.{cls.__qualname__}"
    fields: dict[str, Any] = {}
    if isinstance(exc, DSPexError):
        name, message = cls.__name__, exc.message
        fields = {
            k: v
            for k, v in exc.fields.items()
            if v is None or isinstance(v, str | int | float | bool)
        }
    else:
        name, message = "RemoteError", f"{cls.__qualname__}: {exc}"
    fields.setdefault("remote_type", qualname)
    fields.setdefault("remote_traceback", "".join(traceback.format_exception(exc)))
    return {"type": name, "message": f"{context}{message}", "fields": fields}


def payload_error(payload: dict[str, Any]) -> DSPexError:
    """The DSPex error a handler described as ``{"type", "message", "fields"}``: a class of
    :mod:`dspex.errors` by name (anything else becomes ``RemoteError``)."""
    from dspex import errors

    name = payload.get("type")
    cls = getattr(errors, name, None) if name in errors.__all__ else None
    if not (isinstance(cls, type) and issubclass(cls, errors.DSPexError)):
        cls = errors.RemoteError
    return cls(str(payload.get("message", "")), **dict(payload.get("fields") or {}))


def load_codec(spec: str | None) -> Codec:
    """The codec named by ``"module:object"`` (an object with ``default`` and ``ext_hook``)."""
    if spec is None:
        return Codec()
    module, _, attr = spec.partition(":")
    obj = getattr(importlib.import_module(module), attr)
    return Codec(getattr(obj, "default", None), getattr(obj, "ext_hook", None))


def is_lone_frame(data: bytes) -> bool:
    """Whether ``data`` is exactly one whole frame (what a read usually returns)."""
    return len(data) > 4 and _HEADER.unpack_from(data)[0] == len(data) - 4


class FrameBuffer:
    """Accumulates bytes and yields complete frame bodies."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return the bodies of the frames now complete."""
        buf = self._buf
        if not buf and is_lone_frame(data):
            return [data[4:]]  # exactly one whole frame (the usual reply): no buffering
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            if size > MAX_FRAME:
                raise ProtocolError(f"frame of {size} bytes exceeds the {MAX_FRAME} byte limit")
            if end - pos - 4 < size:
                break
            out.append(bytes(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out

    def take(self) -> bytes:
        """The bytes of an incomplete frame held so far (the buffer is emptied)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def __len__(self) -> int:
        return len(self._buf)


# ------------------------------------------------------------------ the call fast path
# A Call frame is assembled from pre-packed parts: fixarray(8) + "call" + id + method + the
# caller-packed args/kwargs + the last three fields (a packed 3-tuple minus its array header).
_CALL_PREFIX = b"\x98" + msgpack.packb("call")


_NO_ARGS = msgpack.packb([]) + msgpack.packb({})
_packers = threading.local()  # one Packer per (thread, codec): building one costs more than packing


def _packer(default: Callable[[Any], Any] | None) -> msgpack.Packer:
    cache: dict[Any, msgpack.Packer] | None = getattr(_packers, "cache", None)
    if cache is None:
        cache = _packers.cache = {}
    packer = cache.get(default)
    if packer is None:
        packer = cache[default] = msgpack.Packer(use_bin_type=True, default=default, autoreset=True)
    return packer


def pack_args(args: tuple[Any, ...], kwargs: dict[str, Any], codec: Codec) -> bytes:
    """The ``args`` and ``kwargs`` fields of a Call, packed once by the caller."""
    if not args and not kwargs:
        return _NO_ARGS
    pack = _packer(codec.default).pack
    try:
        packed: bytes = pack(list(args)) + pack(kwargs)
        return packed
    except (TypeError, ValueError, OverflowError) as exc:
        _packers.cache = {}  # (a failed pack may leave a packer's buffer dirty)
        raise CallError(
            f"arguments cannot be sent to a worker ({exc}); pass msgpack-compatible values "
            "or configure a codec (PoolConfig.codec)"
        ) from exc


_U32 = struct.Struct(">BI")
_U64 = struct.Struct(">BQ")
_F64 = struct.Struct(">Bd")
_CALL_HEAD = struct.Struct(">I6sBI")  # frame length, fixarray(8) + "call", uint32 id
_methods: dict[str, bytes] = {}  # packed method names (bounded, see call_frame)
_last_tail: tuple[tuple[float | None, str | None, int], bytes] = ((None, None, 0), b"\xc0\xc0\x00")
"""The packed last three fields of the latest Call (a sync caller repeats the same ones)."""


def _pack_uint(n: int) -> bytes:
    if n < 128:
        return bytes((n,))
    if n < 1 << 32:
        return _U32.pack(0xCE, n)
    return _U64.pack(0xCF, n)


def call_frame(
    req_id: int,
    method: str,
    args_bytes: bytes,
    timeout: float | None,
    session: str | None,
    stream: int,
) -> bytes:
    """A complete length-prefixed :class:`Call` frame around pre-packed arguments (the
    msgpack of the small fields is written here directly: this runs once per call)."""
    global _last_tail
    name = _methods.get(method)
    if name is None:
        name = msgpack.packb(method)
        if len(_methods) < 1024:
            _methods[method] = name
    key = (timeout, session, stream)
    last = _last_tail  # (one read: other threads may replace it meanwhile)
    if last[0] == key:
        tail = last[1]
    else:
        tail = b"".join(
            (
                b"\xc0" if timeout is None else _F64.pack(0xCB, timeout),
                b"\xc0" if session is None else msgpack.packb(session),
                _pack_uint(stream),
            )
        )
        _last_tail = (key, tail)
    if req_id < 1 << 32:  # (the id always as a uint32: any msgpack reader takes it)
        size = 11 + len(name) + len(args_bytes) + len(tail)
        head: bytes = _CALL_HEAD.pack(size, _CALL_PREFIX, 0xCE, req_id)
        return head + name + args_bytes + tail
    body = b"".join((_CALL_PREFIX, _U64.pack(0xCF, req_id), name, args_bytes, tail))
    return _HEADER.pack(len(body)) + body


# ------------------------------------------------------------------ fork-server control channel
# One msgpack array per SOCK_SEQPACKET packet (no length prefix).
# parent -> template: ["fork", token] (with the worker's socket as SCM_RIGHTS), ["stop"]
# template -> parent: ["ready", pid], ["init_failed", type, message, traceback],
#                     ["forked", token, pid], ["exited", pid, wait status]


def fs_encode(*fields: Any) -> bytes:
    """One fork-server control packet."""
    packed: bytes = msgpack.packb(list(fields), use_bin_type=True)
    return packed


def fs_decode(data: bytes) -> list[Any]:
    """The fields of a fork-server control packet (``ProtocolError`` if it is not one)."""
    try:
        msg = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise ProtocolError(f"undecodable fork-server packet: {exc}") from exc
    if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
        raise ProtocolError(f"malformed fork-server packet {msg!r:.200}")
    return msg
