"""The memory registry and the fleet view hand out what did not change again, unrebuilt:
every replica re-reads the whole fleet each refresh, and most clusters have not reported."""

from __future__ import annotations

from dispatcher.fleet.memory import MemoryClusterRegistry
from dispatcher.fleet.registry import RegistrySettings
from dispatcher.router.view import FleetView
from tests.clock import FakeClock
from tests.fleet.conftest import report

SETTINGS = RegistrySettings(interval=5.0, stale_after_intervals=3, min_report_gap=0)


async def test_an_unchanged_cluster_reads_as_the_same_state_until_it_changes() -> None:
    clock = FakeClock()
    registry = MemoryClusterRegistry(SETTINGS, clock=clock)
    await registry.record(report("c1", announce=True))
    await registry.record(report("c2", announce=True))
    first = {s.id: s for s in await registry.list()}
    clock.advance(1.0)
    again = {s.id: s for s in await registry.list()}
    assert again["c1"] is first["c1"]
    await registry.record(report("c1", in_flight=3))
    await registry.set_drain("c2", True, "maintenance")
    changed = {s.id: s for s in await registry.list()}
    assert changed["c1"] is not first["c1"]
    assert changed["c1"].load is not None
    assert changed["c1"].load.in_flight == 3
    assert changed["c2"].drained
    clock.advance(20.0)  # past stale_after: the same entry, but no longer live
    aged = {s.id: s for s in await registry.list()}
    assert not aged["c1"].live


async def test_the_view_rebuilds_a_candidate_only_when_its_state_changed() -> None:
    clock = FakeClock()
    registry = MemoryClusterRegistry(SETTINGS, clock=clock)
    await registry.record(report("c1", announce=True))
    view = FleetView()
    (first,) = view.candidates(await registry.list(), clock())
    (again,) = view.candidates(await registry.list(), clock())
    assert again is first
    await registry.record(report("c1", cpu=0.9))
    (changed,) = view.candidates(await registry.list(), clock())
    assert changed is not first
    assert changed.cpu == 0.9
    await registry.forget("c1")
    assert view.candidates(await registry.list(), clock()) == []
