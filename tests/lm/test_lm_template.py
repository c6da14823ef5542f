"""The LM's request template (its default options, computed once) sends exactly the bytes of
the general path, and never outlives a change of the options it was built from."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.testing import LMServer

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "héllo \u2028"}]


@pytest.fixture(scope="module")
def server() -> Iterator[LMServer]:
    with LMServer() as srv:
        yield srv


def _lm(server: LMServer, **kwargs: Any) -> dspex.LM:
    return dspex.LM(
        "openai/test", api_base=server.url, api_key="k", cache=False, num_retries=0, **kwargs
    )


def _sent(server: LMServer, lm: dspex.LM, **kwargs: Any) -> bytes:
    lm(messages=MSGS, **kwargs)
    return server.requests[-1].body


def _general(server: LMServer, lm: dspex.LM) -> bytes:
    """The same call through the general path: an option repeated per call takes it (the
    merged options are the same dict, in the same order)."""
    key = next(iter(lm.kwargs), None)
    if key is None:
        return _sent(server, lm, rollout_id=None)
    return _sent(server, lm, **{key: lm.kwargs[key]})


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"temperature": 0.0, "max_tokens": 4000},
        {"temperature": 1, "n": 1, "stop": "##", "top_p": None},
        {"tool_choice": "auto", "temperature": 0.5, "parallel_tool_calls": False},
        {"temperature": 0.7, "rollout_id": 3, "cache": True, "seed": 7, "user": "ü"},
        {"stop": ["a", "b"], "response_format": {"type": "json_object"}},  # not templated
    ],
)
def test_template_sends_the_general_paths_bytes(server: LMServer, options: dict[str, Any]) -> None:
    lm = _lm(server)
    lm.kwargs.update(options)  # ``cache`` too, as an option (the constructor takes it apart)
    fast = _sent(server, lm)
    assert fast == _general(server, lm)
    assert lm.history[-1]["kwargs"] == lm.history[-2]["kwargs"]


def test_template_follows_every_change_of_the_options(server: LMServer) -> None:
    lm = _lm(server, temperature=0.5)
    assert server.requests and _sent(server, lm).endswith(b',"temperature":0.5}')
    lm.kwargs["temperature"] = 0.25  # set in place
    assert _sent(server, lm).endswith(b',"temperature":0.25}')
    lm.kwargs["temperature"] = 1  # equal values of other types are other bytes
    assert _sent(server, lm).endswith(b',"temperature":1}')
    lm.kwargs["temperature"] = 1.0
    assert _sent(server, lm).endswith(b',"temperature":1.0}')
    lm.kwargs["temperature"] = True
    assert _sent(server, lm).endswith(b',"temperature":true}')
    lm.kwargs["max_tokens"] = 9  # added
    assert _sent(server, lm).endswith(b',"temperature":true,"max_tokens":9}')
    del lm.kwargs["temperature"]  # removed, then put back last
    lm.kwargs["temperature"] = 0.5
    assert _sent(server, lm).endswith(b',"max_tokens":9,"temperature":0.5}')
    lm.kwargs = {"temperature": 0.125}  # a new dict
    assert _sent(server, lm).endswith(b',"temperature":0.125}')
    lm.kwargs["stop"] = ["x"]  # a list: sent, and followed when it changes in place
    assert _sent(server, lm).endswith(b',"stop":["x"]}')
    lm.kwargs["stop"].append("y")
    assert _sent(server, lm).endswith(b',"stop":["x","y"]}')
    del lm.kwargs["stop"]
    assert _sent(server, lm).endswith(b',"temperature":0.125}')
    lm.kwargs["model"] = "other"  # an option named like a body key: the general path
    assert server.requests[-1].json["model"] == "test"
    _sent(server, lm)
    assert server.requests[-1].json["model"] == "other"


def test_template_and_copies_state_history_and_cache_key(server: LMServer, tmp_path: Any) -> None:
    lm = _lm(server, temperature=0.5)
    _sent(server, lm)
    copy = lm.copy(temperature=0.75)
    assert _sent(server, copy).endswith(b',"temperature":0.75}')
    assert _sent(server, lm).endswith(b',"temperature":0.5}')
    loaded = dspex.LM.load_state(lm.dump_state())
    loaded.kwargs["temperature"] = 0.0625
    assert _sent(server, loaded).endswith(b',"temperature":0.0625}')
    # each call's history keeps its own options dict: changing one changes no later request
    lm.history[-1]["kwargs"]["temperature"] = 9
    assert _sent(server, lm).endswith(b',"temperature":0.5}')
    assert lm.history[-1]["kwargs"] == {"temperature": 0.5}
    # the cache key follows the options too: a changed option is a miss, not an old answer
    cached = _lm(server, temperature=0.5)
    cached.cache = True
    unique = [{"role": "user", "content": f"cache me {tmp_path}"}]
    before = len(server.requests)
    cached(messages=unique)
    cached(messages=unique)
    assert len(server.requests) == before + 1
    cached.kwargs["temperature"] = 0.25
    cached(messages=unique)
    assert len(server.requests) == before + 2
    assert server.requests[-1].json["temperature"] == 0.25
    cached.kwargs["cache"] = False  # an option turning the cache off for this LM's calls
    cached(messages=unique)
    assert len(server.requests) == before + 3


async def test_async_calls_use_the_template_too(server: LMServer) -> None:
    lm = _lm(server, temperature=0.5, max_tokens=7)
    await lm.acall(messages=MSGS)
    fast = server.requests[-1].body
    await lm.acall(messages=MSGS, temperature=0.5)
    assert fast == server.requests[-1].body
    lm.kwargs["max_tokens"] = 8
    await lm.acall(messages=MSGS)
    assert server.requests[-1].json["max_tokens"] == 8
