"""Redis unreachable: each pool follows its failure mode, and the local journal is replayed
into Redis once it is back (DESIGN §7, failure behaviour). The outage is a cut TCP proxy."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from dispatcher.errors import BackendUnavailable
from dispatcher.ledger.fallback import FailoverLedger
from dispatcher.ledger.model import Denial, FailureMode, Reservation, Usage
from dispatcher.ledger.redis_backend import RedisLedger
from tests.ledger.conftest import FakeClock, read_redis_journal
from tests.ledger.helpers import cand, one, req, spec
from tests.ledger.proxy import Proxy

pytestmark = pytest.mark.redis

POOLS = [
    spec("share", tpm=1000, static_share=0.5),  # 2 replicas: 250 tokens each while down
    spec("closed", tpm=1000, failure_mode=FailureMode.CLOSED),
    spec("open", tpm=1000, failure_mode=FailureMode.OPEN),
]


@dataclass
class Setup:
    ledger: FailoverLedger
    proxy: Proxy
    clock: FakeClock


@pytest.fixture
async def setup(redis_db: str) -> AsyncIterator[Setup]:
    proxy = await Proxy(redis_db).start()
    clock = FakeClock()
    primary = await RedisLedger.open(proxy.url, POOLS)
    ledger = FailoverLedger(primary, POOLS, replicas=2, replica_id="r1", clock=clock)
    yield Setup(ledger, proxy, clock)
    await ledger.aclose()
    await proxy.cut()


async def test_static_share_admits_only_this_replicas_share(setup: Setup) -> None:
    lg = setup.ledger
    assert isinstance(await lg.reserve(one("up", "share", tokens=900)), Reservation)
    await setup.proxy.cut()
    assert isinstance(await lg.reserve(one("a", "share")), Reservation)
    assert lg.degraded
    assert isinstance(await lg.reserve(one("b", "share")), Reservation)
    denial = await lg.reserve(one("c", "share"))
    assert isinstance(denial, Denial)
    assert "tpm exhausted" in denial.reasons["c1"]


async def test_closed_denies_and_open_admits_without_counting(setup: Setup) -> None:
    await setup.proxy.cut()
    denial = await setup.ledger.reserve(one("c", "closed"))
    assert isinstance(denial, Denial)
    assert denial.retry_after == 1.0
    assert "failure mode closed" in denial.reasons["c1"]
    for i in range(3):
        assert isinstance(await setup.ledger.reserve(one(f"o{i}", "open", tokens=900)), Reservation)


async def test_closed_candidate_spills_to_an_allowed_one(setup: Setup) -> None:
    await setup.proxy.cut()
    res = await setup.ledger.reserve(req("r", cand("east", "closed"), cand("west", "share")))
    assert isinstance(res, Reservation)
    assert (res.candidate_index, res.candidate_id, res.spilled_from) == (1, "west", "east")


async def test_local_reservations_settle_locally_remote_ones_wait(setup: Setup) -> None:
    lg = setup.ledger
    remote = await lg.reserve(one("remote", "share"))
    assert isinstance(remote, Reservation)
    await setup.proxy.cut()
    local = await lg.reserve(one("local", "share"))
    assert isinstance(local, Reservation)
    assert (await lg.settle(local.reservation_id, Usage(1, 50, 0), "ok")).charged
    with pytest.raises(BackendUnavailable):
        await lg.settle(remote.reservation_id, Usage(1, 50, 0), "ok")


async def test_local_journal_is_replayed_into_redis_on_recovery(
    setup: Setup, redis_db: str
) -> None:
    lg = setup.ledger
    await setup.proxy.cut()
    local = await lg.reserve(one("local", "share"))
    assert isinstance(local, Reservation)
    await lg.settle(local.reservation_id, Usage(1, 50, 0), "ok")
    assert await lg.local.journal.pending() == 2
    await setup.proxy.start()
    assert isinstance(await lg.reserve(one("still-down", "share")), Reservation)  # breaker open
    assert await read_redis_journal(redis_db) == []
    setup.clock.advance(1.0)
    assert isinstance(await lg.reserve(one("back", "share")), Reservation)
    assert not lg.degraded
    await lg.replayed()
    events = await read_redis_journal(redis_db)
    replayed = [
        (e.kind.value, e.reservation_id) for e in events if e.reservation_id == local.reservation_id
    ]
    assert replayed == [("reserved", local.reservation_id), ("settled", local.reservation_id)]
    assert await lg.local.journal.pending() == 0


async def test_concurrent_callers_after_recovery_replay_the_outage_journal_once(
    setup: Setup, redis_db: str
) -> None:
    """Every caller's success starts the replay; one replay at a time copies each event once."""
    lg = setup.ledger
    await setup.proxy.cut()
    for i in range(20):
        assert isinstance(await lg.reserve(one(f"local-{i}", "open", tokens=1)), Reservation)
    await setup.proxy.start()
    setup.clock.advance(1.0)
    back = [lg.reserve(one(f"back-{i}", "open", tokens=1)) for i in range(50)]
    assert all(isinstance(r, Reservation) for r in await asyncio.gather(*back))
    await lg.replayed()
    assert await lg.local.journal.pending() == 0
    reserved = Counter(
        e.reservation_id for e in await read_redis_journal(redis_db) if e.kind.value == "reserved"
    )
    assert len(reserved) == 70
    assert set(reserved.values()) == {1}
