"""The batcher alone (pure asyncio, no Redis): coalescing, order, failures and deadlines."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from dispatcher.ledger.batcher import Batcher

pytestmark = pytest.mark.both_loops


class Recorder:
    """A ``run`` that records each batch (and its deadline) and waits for ``release`` before
    answering, giving up at the deadline as the batcher requires of it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.deadlines: list[float | None] = []
        self.release = asyncio.Event()

    async def run(self, items: Sequence[int], deadline: float | None) -> list[int]:
        self.batches.append(list(items))
        self.deadlines.append(deadline)
        async with asyncio.timeout_at(deadline):
            await self.release.wait()
        return [item * 10 for item in items]


async def test_a_call_on_a_free_wire_goes_alone_and_those_behind_it_share_the_next_batch() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.run, max_batch=128, max_inflight=1)
    calls = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
    await asyncio.sleep(0)  # every task has submitted: the first is on the wire
    assert recorder.batches == [[0]]
    recorder.release.set()
    assert await asyncio.gather(*calls) == [0, 10, 20, 30, 40]
    assert recorder.batches == [[0], [1, 2, 3, 4]]


async def test_batches_never_exceed_max_batch_nor_max_inflight() -> None:
    in_flight, most = 0, 0

    async def run(items: Sequence[int], deadline: float | None) -> list[int]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        assert len(items) <= 8
        return [item + 1 for item in items]

    batcher = Batcher(run, max_batch=8, max_inflight=2)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(200)))
    assert results == [i + 1 for i in range(200)]
    assert most == 2


async def test_a_failed_batch_fails_each_of_its_callers() -> None:
    async def broken(items: Sequence[int], deadline: float | None) -> list[int]:
        raise ConnectionError("down")

    batcher: Batcher[int, int] = Batcher(broken)
    results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_caller_past_its_deadline_gets_timeout_and_its_item_is_never_sent() -> None:
    """Queued behind a batch that does not answer, the caller gives up at its deadline
    (queueing included); its item is dropped instead of being sent later."""
    recorder = Recorder()
    batcher = Batcher(recorder.run, max_inflight=1)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first batch is on the wire, waiting for ``release``
    with pytest.raises(TimeoutError):
        await batcher.submit(2, timeout=0.01)
    recorder.release.set()
    assert await first == 10
    await batcher.aclose()
    assert recorder.batches == [[1]]


async def test_queued_callers_time_out_each_at_its_own_deadline_on_the_queues_one_timer() -> None:
    """A short timeout queued behind a long one still ends first; once it has, the queue's
    timer re-arms for the next deadline; a caller without one waits for its batch."""
    recorder = Recorder()
    batcher = Batcher(recorder.run, max_inflight=1)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first batch is on the wire, waiting for ``release``
    patient = asyncio.create_task(batcher.submit(2, timeout=30.0))
    soon = asyncio.create_task(batcher.submit(3, timeout=0.01))
    later = asyncio.create_task(batcher.submit(4, timeout=0.05))
    unlimited = asyncio.create_task(batcher.submit(5))
    with pytest.raises(TimeoutError):
        await soon
    assert not later.done()
    assert not patient.done()
    with pytest.raises(TimeoutError):
        await later
    assert not patient.done()
    assert not unlimited.done()
    recorder.release.set()
    assert await asyncio.gather(first, patient, unlimited) == [10, 20, 50]
    assert recorder.batches == [[1], [2, 5]]  # the timed-out items were never sent


async def test_a_caller_giving_up_on_the_wire_frees_it_for_those_behind() -> None:
    """The call that went out alone times out: whoever queued behind it still gets sent
    (the wire is not left counted as busy), and the late caller sees only its timeout."""
    recorder = Recorder()
    batcher = Batcher(recorder.run, max_inflight=1)
    with pytest.raises(TimeoutError):
        await batcher.submit(1, timeout=0.01)  # alone on the wire; no answer comes
    recorder.release.set()
    assert await batcher.submit(2, timeout=1.0) == 20
    assert recorder.batches == [[1], [2]]


async def test_shutdown_cancels_the_queued_callers() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder.run, max_inflight=1)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)  # on the wire
    queued = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0)
    await batcher.aclose()
    with pytest.raises(asyncio.CancelledError):
        await queued
    first.cancel()


async def test_run_gets_the_deadline_of_the_most_patient_caller_of_its_batch() -> None:
    """A lone call carries its own deadline; a queued batch the latest of its callers'
    (none if one of them set none), so no caller's wait is cut short by another's."""
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def batch_behind_a_lone_call(timeouts: Sequence[float | None]) -> Recorder:
        recorder = Recorder()
        batcher = Batcher(recorder.run, max_inflight=1)
        lone = asyncio.create_task(batcher.submit(0, timeout=5.0))
        await asyncio.sleep(0)  # on the wire: the others queue behind it
        queued = [asyncio.create_task(batcher.submit(i, t)) for i, t in enumerate(timeouts, 1)]
        await asyncio.sleep(0)
        recorder.release.set()
        assert await asyncio.gather(lone, *queued) == [10 * i for i in range(len(timeouts) + 1)]
        assert recorder.batches == [[0], list(range(1, len(timeouts) + 1))]
        return recorder

    lone, queued = (await batch_behind_a_lone_call([1.0, 9.0])).deadlines
    assert lone is not None
    assert 5.0 <= lone - began < 6.0
    assert queued is not None
    assert 9.0 <= queued - began < 10.0
    assert (await batch_behind_a_lone_call([1.0, None])).deadlines[1] is None


def test_a_batcher_outlives_its_first_loop() -> None:
    """The loop is looked up once and kept, but a batcher whose loop closed (a test's, or a
    tool's ``asyncio.run``) serves the next one rather than failing with a dead loop."""

    async def answer(items: Sequence[int], deadline: float | None) -> list[int]:
        await asyncio.sleep(0)  # on the wire a moment: the burst's others queue behind it
        return [item + 1 for item in items]

    batcher = Batcher(answer, max_inflight=1)

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(batcher.submit(i, timeout=5.0) for i in range(4))))

    assert asyncio.run(burst()) == [1, 2, 3, 4]
    assert asyncio.run(burst()) == [1, 2, 3, 4]
