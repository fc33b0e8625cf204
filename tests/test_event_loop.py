"""Which event loop the processes run on, and the config refusing one that is not there."""

from __future__ import annotations

import asyncio

import pytest

from dispatcher import event_loop
from dispatcher.config import load_config
from dispatcher.config import sections as config_sections
from dispatcher.errors import ConfigError


async def running_loop_name() -> str:
    await asyncio.sleep(0)  # a loop turn: the name comes from a loop that really ran
    return event_loop.loop_name()


def test_asyncio_runs_the_stock_loop() -> None:
    assert event_loop.run(running_loop_name(), "asyncio") == "asyncio"


def test_auto_runs_uvloop_where_it_is_installed() -> None:
    expected = "uvloop" if event_loop.uvloop_available() else "asyncio"
    assert event_loop.default_loop_name() == expected
    assert event_loop.run(running_loop_name(), "auto") == expected


def test_uvloop_runs_uvloop() -> None:
    if not event_loop.uvloop_available():
        pytest.skip("uvloop is not installed here")
    assert event_loop.run(running_loop_name(), "uvloop") == "uvloop"


def test_the_config_refuses_uvloop_where_it_is_not_installed_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config_sections, "uvloop_available", lambda: False)
    with pytest.raises(ConfigError) as caught:
        load_config(env={"DISPATCHER_EVENT_LOOP": "uvloop"})
    assert caught.value.field == "server.event_loop"
    assert "uvloop is not installed" in caught.value.reason
    assert load_config(env={"DISPATCHER_EVENT_LOOP": "auto"}).server.event_loop == "auto"


def test_an_unknown_loop_is_a_config_error_listing_the_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={"DISPATCHER_EVENT_LOOP": "trio"})
    assert caught.value.field == "server.event_loop"
    assert "'asyncio'" in caught.value.reason
