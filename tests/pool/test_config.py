"""PoolConfig validation, the settings-driven registry, and the `dspex pool status` CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest

import dspex
from conftest import HERE, TARGET
from dspex.errors import ConfigurationError, PoolUnhealthy
from dspex.pool import PoolConfig, get_pool, running_pools, shutdown_pools
from dspex.pool.cli import main


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", 0),
        ("size", "2"),
        ("target", "no_colon"),
        ("target", "bad module:x"),
        ("request_timeout", -1),
        ("queue_timeout", 0),
        ("max_queue", -1),
        ("memory_limit_kind", "virtual"),
        ("memory_limit_mb", 0),
        ("cpu_limit_s", 0),
        ("env", {"A": 1}),
        ("preload", "dspy"),
        ("fork_server", "yes"),
        ("kill_grace", -0.1),
        ("codec", "nocolon"),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any) -> None:
    spec: dict[str, Any] = {"target": TARGET, field: value}
    with pytest.raises(ConfigurationError, match=field) as info:
        PoolConfig.from_mapping(spec)
    assert info.value.field == field


def test_unknown_and_missing_options() -> None:
    with pytest.raises(ConfigurationError, match="sise"):
        PoolConfig.from_mapping({"target": TARGET, "sise": 2})
    with pytest.raises(ConfigurationError, match="target"):
        PoolConfig.from_mapping({"size": 2})
    config = PoolConfig(target=TARGET, preload=["json"])
    assert config.preload == ("json",)
    assert config.replace(size=5).size == 5
    with pytest.raises(ConfigurationError):
        config.replace(colour="red")


def test_registry_builds_pools_lazily_from_settings() -> None:
    dspex.configure(
        pools={
            "general": {"target": TARGET, "size": 1, "pythonpath": [HERE]},
            "typed": PoolConfig(target=TARGET, size=1, pythonpath=(HERE,)),
        }
    )
    try:
        pool = get_pool("general")
        assert pool.state == "new"  # nothing started yet
        assert get_pool("general") is pool
        assert pool.call_sync("add", 1, 2) == 3
        assert get_pool("typed").call_sync("ping") == "pong"
        assert set(running_pools()) == {"general", "typed"}
        with pytest.raises(ConfigurationError, match="nope"):
            get_pool("nope")
    finally:
        shutdown_pools()
    assert pool.state == "closed"
    assert running_pools() == {}


def test_cli_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 0
    assert "no pools configured" in capsys.readouterr().out
    dspex.configure(
        pools={
            "general": {"target": TARGET, "size": 1, "pythonpath": [HERE]},
            "broken": {"target": "handlers:broken", "size": 1, "pythonpath": [HERE]},
        }
    )
    try:
        assert main(["status"]) == 0
        out = capsys.readouterr().out
        assert "general" in out and "not started" in out
        assert main(["status", "--json", "--start"]) == 0
        rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
        assert rows["general"]["workers"] == 1
        assert "factory exploded" in rows["broken"]["last_error"]
        get_pool("general").call_sync("ping")
        assert main(["status"]) == 0
        assert "running" in capsys.readouterr().out
        assert main(["frobnicate"]) == 2
    finally:
        shutdown_pools()


def test_unhealthy_registry_pool_is_replaced_after_shutdown() -> None:
    dspex.configure(
        pools={"broken": {"target": "handlers:broken", "size": 1, "pythonpath": [HERE]}}
    )
    try:
        with pytest.raises(PoolUnhealthy):
            get_pool("broken").call_sync("ping")
    finally:
        shutdown_pools()
