"""One error channel: a handler's typed error travels in the pool's Error frame (payload)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dspex.errors import CallError, ConfigurationError, RemoteError
from dspex.pool import Pool


@pytest.mark.parametrize("sync", [False, True])
async def test_handler_payload_is_raised_typed(make_pool: Callable[..., Pool], sync: bool) -> None:
    pool = make_pool(target="handlers:make_typed", size=1)
    await pool.start()
    for _ in range(3):  # sync calls take the direct path once the worker is parked
        with pytest.raises(ConfigurationError) as info:
            if sync:
                pool.call_sync("fail", "password hunter2 rejected")
            else:
                await pool.call("fail", "password hunter2 rejected")
        assert str(info.value).startswith("password *** rejected")
        assert "hunter2" not in str(info.value)
        assert info.value.fields["field"] == "demo"
    with pytest.raises(RemoteError, match="KeyError"):  # not described: RemoteError
        await pool.call("missing")
    with pytest.raises(CallError):  # the hook is private: not callable from the parent
        await pool.call("_error_payload", None)


async def test_parent_callback_error_arrives_typed_in_the_worker(
    make_pool: Callable[..., Pool],
) -> None:
    """A parent callback's error travels as a typed payload in the reply (no envelope)."""
    pool = make_pool(size=1)

    def typed() -> None:
        raise ConfigurationError("bad knob", field="knob")

    def plain() -> None:
        raise ValueError("nope")

    pool.register_callback("typed", typed)
    pool.register_callback("plain", plain)
    kind, message, fields = await pool.call("parent_error", "typed")
    assert (kind, message, fields["field"]) == ("ConfigurationError", "bad knob", "knob")
    kind, message, fields = await pool.call("parent_error", "plain")
    assert (kind, message) == ("RemoteError", "ValueError: nope")
    assert fields["remote_type"] == "builtins.ValueError"
    assert "nope" in fields["remote_traceback"]
    kind, message, _ = await pool.call("parent_error", "missing")
    assert kind == "RemoteError" and "no parent callback named 'missing'" in message
