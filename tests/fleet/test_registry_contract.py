"""What every ClusterRegistry backend promises (DESIGN §2a, §6 step 2, §7.5)."""

from __future__ import annotations

import asyncio

import pytest

from dispatcher.errors import InvalidArgument, NotFound
from dispatcher.fleet.model import AdminState, ClusterReport, VersionDelta
from dispatcher.fleet.registry import RegistrySettings
from tests.fleet.conftest import Backend, counters, info, report

NO_FLOOD = RegistrySettings(interval=0.2, min_report_gap=0)


async def test_first_report_must_announce(backend: Backend) -> None:
    registry = backend.make(NO_FLOOD)
    with pytest.raises(InvalidArgument) as caught:
        await registry.record(report())
    assert caught.value.field == "announce"
    assert await registry.list() == []


async def test_announced_cluster_is_listed_live_with_its_load(backend: Backend) -> None:
    registry = backend.make(NO_FLOOD)
    outcome = await registry.record(report(announce=True, cpu=0.5, in_flight=3, queue_depth=1))
    await registry.record(report("c2", announce=True, mem=0.25))
    state = await registry.get("c1")
    assert state.info == info("c1")
    assert state.live
    assert state.load is not None
    assert (state.load.cpu, state.load.in_flight, state.load.queue_depth) == (0.5, 3, 1)
    assert state.load.reported_at == pytest.approx(outcome.reported_at, abs=0.002)
    assert state.admin_state is AdminState.READY
    assert state.routable
    listed = {s.id: s for s in await registry.list()}
    assert set(listed) == {"c1", "c2"}
    assert listed["c1"] == state


async def test_unknown_cluster_is_not_found(backend: Backend) -> None:
    registry = backend.make(NO_FLOOD)
    with pytest.raises(NotFound):
        await registry.get("nope")
    with pytest.raises(NotFound):
        await registry.set_drain("nope", True)


async def test_unknown_pool_is_rejected_when_pools_are_known(backend: Backend) -> None:
    registry = backend.make(RegistrySettings(known_pools=frozenset({"openai/org-x"})))
    with pytest.raises(InvalidArgument) as caught:
        await registry.record(report(announce=True))
    assert caught.value.field == "announce.pool_ids[0]"


async def test_counter_deltas_come_from_cumulative_counters(backend: Backend) -> None:
    registry = backend.make(NO_FLOOD)
    first = await registry.record(report(announce=True, versions=(counters("v@1", 10, 8, 1, 0),)))
    assert first.deltas == (VersionDelta("v@1", 10, 8, 1, 0),)
    second = await registry.record(report(versions=(counters("v@1", 15, 12, 2, 1),)))
    assert second.deltas == (VersionDelta("v@1", 5, 4, 1, 1),)
    same = await registry.record(report(versions=(counters("v@1", 15, 12, 2, 1),)))
    assert same.deltas == ()


async def test_a_counter_going_backwards_without_a_reboot_is_rejected(backend: Backend) -> None:
    registry = backend.make(NO_FLOOD)
    await registry.record(report(announce=True, versions=(counters("v@1", 10, 8, 2, 0),)))
    with pytest.raises(InvalidArgument) as caught:
        await registry.record(report(cpu=0.9, versions=(counters("v@1", 11, 9, 1, 0),)))
    assert caught.value.field == "versions[v@1].failed"
    state = await registry.get("c1")
    assert state.load is not None
    assert state.load.cpu == 0.0, "a rejected report stores nothing"


async def test_a_version_left_out_keeps_its_counters(backend: Backend) -> None:
    registry = backend.make(NO_FLOOD)
    await registry.record(report(announce=True, versions=(counters("v@1", 10, 10, 0, 0),)))
    await registry.record(report(versions=(counters("v@2", 1, 1, 0, 0),)))
    with pytest.raises(InvalidArgument):
        await registry.record(report(versions=(counters("v@1", 5, 5, 0, 0),)))


async def test_a_new_boot_id_resets_counters_and_is_recorded(backend: Backend) -> None:
    registry = backend.make(NO_FLOOD)
    await registry.record(report(announce=True, versions=(counters("v@1", 10, 10, 0, 0),)))
    outcome = await registry.record(report(boot_id="boot-b", versions=(counters("v@1", 2, 1),)))
    assert outcome.boot_changed
    assert outcome.deltas == (VersionDelta("v@1", 2, 1, 0, 0),)
    state = await registry.get("c1")
    assert (state.boot_id, state.previous_boot_id, state.boot_changes) == ("boot-b", "boot-a", 1)
    again = await registry.record(report(boot_id="boot-b", versions=(counters("v@1", 3, 2),)))
    assert not again.boot_changed
    assert again.deltas == (VersionDelta("v@1", 1, 1, 0, 0),)


async def test_reports_faster_than_half_the_interval_are_a_flood(backend: Backend) -> None:
    registry = backend.make(RegistrySettings(interval=0.2))
    await registry.record(report(announce=True))
    with pytest.raises(InvalidArgument) as caught:
        await registry.record(report())
    assert caught.value.field == "seq"
    await registry.record(report(announce=True))  # a reconnect re-announces at once
    drain = ClusterReport("c1", "boot-a", admin_state=AdminState.DRAIN)
    await registry.record(drain)  # so does a state change (SIGTERM)
    with pytest.raises(InvalidArgument):
        await registry.record(drain)
    await backend.advance(0.12)
    await registry.record(report())


async def test_a_cluster_goes_stale_after_the_configured_intervals(backend: Backend) -> None:
    # Wide margins: on Redis this is real time, and a shared CI machine can stall 100 ms.
    registry = backend.make(RegistrySettings(interval=0.2, stale_after_intervals=3))
    await registry.record(report(announce=True))
    assert (await registry.get("c1")).live
    await backend.advance(0.75)
    assert not (await registry.get("c1")).live
    assert not (await registry.list())[0].live
    await registry.record(report())
    assert (await registry.get("c1")).live


async def test_operator_drain_overrides_a_ready_agent_and_reaches_the_stream(
    backend: Backend,
) -> None:
    registry = backend.make(NO_FLOOD)
    await registry.record(report(announce=True))
    state = await registry.set_drain("c1", True, "kernel upgrade")
    assert state.drained
    assert state.admin_state is AdminState.DRAIN
    assert not state.routable
    outcome = await registry.record(report())
    assert outcome.drained
    assert outcome.drain_reason == "kernel upgrade"
    assert not (await registry.set_drain("c1", False)).drained
    assert not (await registry.record(report())).drained


async def test_agent_admin_state_and_weight_override(backend: Backend) -> None:
    registry = backend.make(NO_FLOOD)
    await registry.record(report(announce=True))
    await registry.record(
        ClusterReport("c1", "boot-a", admin_state=AdminState.MAINT, weight_percent=50)
    )
    state = await registry.get("c1")
    assert (state.admin_state, state.weight_percent) == (AdminState.MAINT, 50)
    assert state.load is not None, "a report without load keeps the last one"
    await registry.record(ClusterReport("c1", "boot-a", weight_percent=0))
    assert (await registry.get("c1")).weight_percent is None


async def test_re_announce_replaces_the_facts(backend: Backend) -> None:
    registry = backend.make(NO_FLOOD)
    await registry.record(report(announce=True))
    await registry.record(ClusterReport("c1", "boot-a", info=info("c1", slots=64)))
    assert (await registry.get("c1")).info.slots == 64


async def test_forget_removes_a_cluster(backend: Backend) -> None:
    registry = backend.make(NO_FLOOD)
    await registry.record(report(announce=True))
    assert await registry.forget("c1")
    assert not await registry.forget("c1")
    assert await registry.list() == []


async def test_concurrent_reports_of_many_clusters_are_all_recorded(backend: Backend) -> None:
    """The Redis backend batches concurrent heartbeats into one script call."""
    registry = backend.make(NO_FLOOD)
    ids = [f"c{i}" for i in range(300)]
    await asyncio.gather(*(registry.record(report(cid, announce=True)) for cid in ids))
    results = await asyncio.gather(
        *(registry.record(report(cid, cpu=0.5)) for cid in ids),
        registry.record(report("c1", versions=(counters("v@1", 1),))),
        registry.record(report("never-announced")),
        return_exceptions=True,
    )
    assert isinstance(results[-1], InvalidArgument)
    assert not any(isinstance(r, BaseException) for r in results[:-1])
    states = await registry.list()
    assert len(states) == 300
    assert all(s.load is not None and s.load.cpu == 0.5 for s in states if s.id != "c1")
