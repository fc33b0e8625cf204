"""The memory journal as a JournalSource: at-least-once, ordered, acked, and awaitable."""

from __future__ import annotations

import asyncio

from dispatcher.ledger.events import EventKind
from dispatcher.ledger.journal import JournalSource, MemoryJournal


async def test_read_returns_unacked_in_order_until_acked() -> None:
    journal = MemoryJournal()
    source: JournalSource = journal
    first = journal.append(EventKind.RESERVED, 1.0, "r1", ("p1",), {"cost": {}})
    second = journal.append(EventKind.SETTLED, 2.0, "r1", ("p1",))
    assert await source.read(10, 0) == [first, second]
    assert await source.read(1, 0) == [first]  # not acked: delivered again
    await source.ack([second.event_id, "unknown"])
    assert await source.pending() == 1
    assert await source.read(10, 0) == [first]
    await source.ack([first.event_id])
    assert await source.pending() == 0
    assert await source.read(10, 0) == []


async def test_has_unacked_agrees_with_unacked_through_out_of_order_acks() -> None:
    journal = MemoryJournal()
    assert not journal.has_unacked()
    events = [journal.append(EventKind.RESERVED, float(i), f"r{i}") for i in range(3)]
    # Acked out of order (a later event first), twice, and with ids it never held.
    for acked in ([events[2].event_id, "unknown"], [events[2].event_id], [events[0].event_id]):
        await journal.ack(acked)
        assert journal.has_unacked() == bool(journal.unacked()) is True
    await journal.ack([events[1].event_id])
    assert journal.has_unacked() == bool(journal.unacked()) is False


async def test_event_ids_are_unique_and_prefixed() -> None:
    journal = MemoryJournal("replica-a")
    ids = {journal.append(EventKind.USAGE, 1.0).event_id for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("replica-a/") for i in ids)


async def test_two_journals_never_issue_the_same_id() -> None:
    """A restarted process must not reissue "mem/1": SQL stores an id once and would
    silently drop the second process's event as a duplicate."""
    before_restart, after_restart = MemoryJournal(), MemoryJournal()
    first = before_restart.append(EventKind.RESERVED, 1.0, "r1")
    again = after_restart.append(EventKind.RESERVED, 2.0, "r2")
    assert first.event_id != again.event_id


async def test_blocking_read_wakes_on_append() -> None:
    journal = MemoryJournal()
    reader = asyncio.create_task(journal.read(10, block_ms=10_000))
    await asyncio.sleep(0)  # let the reader start waiting
    event = journal.append(EventKind.RESERVED, 1.0, "r1")
    assert await asyncio.wait_for(reader, 5) == [event]


async def test_blocking_read_times_out_empty() -> None:
    assert await MemoryJournal().read(10, block_ms=10) == []
