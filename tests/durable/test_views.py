"""Dashboard views (migration 0002) on PostgreSQL and SQLite, and the read-only role.

The journal rows come from the code that writes them in production, never by hand: the
memory ledger (on a hand-moved clock, for exact minute buckets) drained by the real
``JournalConsumer``, and a whole dispatcher (Route, Settle, Release, interim usage, a
breaker trip and a session handover) whose embedded consumer writes into the database under
test. So a change to an event's shape that the views do not follow fails here.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from dispatcher.fleet.model import UsageReport
from dispatcher.ledger import Candidate, PoolSpec, ReserveRequest, TokenEstimate, Usage
from dispatcher.ledger.journal import MemoryJournal
from dispatcher.ledger.memory import MemoryLedger
from dispatcher.ledger.sql import migrate
from dispatcher.ledger.sql.consumer import JournalConsumer
from dispatcher.ledger.sql.engine import DurableLedger, open_engine
from dispatcher.ledger.sql.models import Base
from dispatcher.router import encode_choice
from dispatcher.routing.model import Choice
from dispatcher.rpc.convert import LANE_FROM_PB
from dispatcher.server import DispatcherServer
from dispatcher.v1 import common_pb2, routing_pb2
from tests.clock import FakeClock
from tests.conftest import admin_dsn
from tests.durable.conftest import _truncate, eventually, sqlite_url
from tests.rpc.route_helpers import FakeAgent, route_request, routing, running

VIEWS = (
    "v_route_choices",
    "v_decisions_per_cluster",
    "v_spillovers",
    "v_usage_per_pool_minute",
    "v_breaker_events",
    "v_handovers",
)
READONLY = "dispatcher_readonly"
# A whole minute (tests.clock.T0), so the buckets below are known exactly.
T0 = 1_700_000_040.0


# -- reading views the same way on both dialects ----------------------------------------------


TIME_COLUMNS = frozenset({"at", "minute", "open_until"})


def _value(column: str, value: Any) -> Any:
    """PostgreSQL numeric -> float; SQLite's UTC text (time columns) -> aware datetime."""
    if isinstance(value, Decimal):
        return float(value)
    if column in TIME_COLUMNS and isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value


async def view_rows(url: str, sql: str) -> list[dict[str, Any]]:
    """Rows of ``sql`` as dicts, with values alike on both dialects."""
    engine = open_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(sql))
            return [{k: _value(k, v) for k, v in row.items()} for row in result.mappings()]
    finally:
        await engine.dispose()


def minute(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds - seconds % 60, tz=UTC)


async def drain(journal: MemoryJournal, url: str) -> None:
    """Copy every journalled event into ``url`` with the real consumer."""
    durable = DurableLedger(open_engine(url))
    consumer = JournalConsumer(journal, durable, block_ms=0)
    try:
        while await journal.pending():
            await consumer.step()
    finally:
        await durable.aclose()


# -- the memory ledger on a hand-moved clock --------------------------------------------------

EAST, WEST = "openai/east", "openai/west"
VERSION = "auditor@16.4"
TO_EAST = encode_choice(Choice("east", "gpt-4o", VERSION, "standard"))
TO_WEST = encode_choice(Choice("west", "gpt-4o", VERSION, "standard"))
ESTIMATE = TokenEstimate(input_tokens=100, max_output_tokens=50)


def _request(request_id: str) -> ReserveRequest:
    return ReserveRequest(
        request_id, (Candidate(TO_EAST, (EAST,), ESTIMATE), Candidate(TO_WEST, (WEST,), ESTIMATE))
    )


async def _minute_story(url: str) -> None:
    """Three reservations over three minutes (see the test for what each does)."""
    clock = FakeClock(T0)
    pools = [
        # Room for two requests a minute; keeps the estimate charged (like Azure).
        PoolSpec(EAST, "openai", rpm=2, safety_factor=1.0, refund_unused=False),
        # Charges output tokens twice.
        PoolSpec(WEST, "openai", rpm=100, safety_factor=1.0, output_weight=2.0),
    ]
    ledger = MemoryLedger(pools, clock=clock)
    clock.now = T0 + 1
    r1 = await ledger.reserve(_request("q1"))
    clock.now = T0 + 2
    r2 = await ledger.reserve(_request("q2"))
    clock.now = T0 + 3
    r3 = await ledger.reserve(_request("q3"))  # east is full: spills to west
    ids = [getattr(r, "reservation_id", None) for r in (r1, r2, r3)]
    assert [getattr(r, "candidate_id", None) for r in (r1, r2, r3)] == [TO_EAST, TO_EAST, TO_WEST]
    clock.now = T0 + 61
    await ledger.ack_dispatched(ids[0])
    clock.now = T0 + 62
    await ledger.report_usage(ids[0], Usage(1, 40, 10))  # superseded by the settle below
    clock.now = T0 + 65
    await ledger.release(ids[1])
    clock.now = T0 + 70
    await ledger.report_usage(ids[2], Usage(1, 30, 20))
    clock.now = T0 + 75
    await ledger.report_usage(ids[2], Usage(1, 30, 20))  # never settled: this total counts
    clock.now = T0 + 125
    await ledger.settle(ids[0], Usage(2, 80, 30), "success")
    await drain(ledger.journal, url)


async def test_usage_per_pool_minute_counts_reservations_and_each_final_usage_once(
    ledger_url: str,
) -> None:
    await _minute_story(ledger_url)
    rows = await view_rows(
        ledger_url, "SELECT * FROM v_usage_per_pool_minute ORDER BY minute, pool_id"
    )
    zero = dict.fromkeys(
        (
            "reservations",
            "reserved_requests",
            "reserved_tokens",
            "settled_reservations",
            "used_requests",
            "used_input_tokens",
            "used_output_tokens",
            "used_tokens",
            "charged_tokens",
        ),
        0,
    )
    assert rows == [
        # Minute 0: two reservations held 100 + 50 tokens each on east, one spilled to west
        # (100 + 2 x 50 tokens there).
        {
            **zero,
            "minute": minute(T0),
            "pool_id": EAST,
            "reservations": 2,
            "reserved_requests": 2,
            "reserved_tokens": 300,
        },
        {
            **zero,
            "minute": minute(T0),
            "pool_id": WEST,
            "reservations": 1,
            "reserved_requests": 1,
            "reserved_tokens": 200,
        },
        # Minute 1: the spilled one's latest interim total (it was never settled), charged at
        # least its estimate. r1's interim report is not here: its settle supersedes it;
        # the released r2 used nothing.
        {
            **zero,
            "minute": minute(T0 + 60),
            "pool_id": WEST,
            "used_requests": 2,
            "used_input_tokens": 60,
            "used_output_tokens": 40,
            "used_tokens": 100,
            "charged_tokens": 200,
        },
        # Minute 2: r1's settle; east does not refund, so it keeps 150 charged for 110 used.
        {
            **zero,
            "minute": minute(T0 + 120),
            "pool_id": EAST,
            "settled_reservations": 1,
            "used_requests": 2,
            "used_input_tokens": 80,
            "used_output_tokens": 30,
            "used_tokens": 110,
            "charged_tokens": 150,
        },
    ]


async def test_decisions_and_spillovers_split_the_candidate_id(ledger_url: str) -> None:
    await _minute_story(ledger_url)
    decisions = await view_rows(
        ledger_url, "SELECT * FROM v_decisions_per_cluster ORDER BY minute, cluster_id"
    )
    spills = await view_rows(ledger_url, "SELECT * FROM v_spillovers")
    choices = await view_rows(ledger_url, "SELECT * FROM v_route_choices ORDER BY at")
    common = {"minute": minute(T0), "backend": "gpt-4o", "agent_version": VERSION}
    assert decisions == [
        {**common, "cluster_id": "east", "lane": "standard", "decisions": 2, "spilled": 0},
        {**common, "cluster_id": "west", "lane": "standard", "decisions": 1, "spilled": 1},
    ]
    (spill,) = spills
    assert spill == {
        "at": datetime.fromtimestamp(T0 + 3, tz=UTC),
        "reservation_id": choices[2]["reservation_id"],
        "request_id": "q3",
        "from_cluster": "east",
        "to_cluster": "west",
        "from_candidate_id": TO_EAST,
        "to_candidate_id": TO_WEST,
        "pool_ids": WEST,
    }
    assert [(c["request_id"], c["candidate_index"], c["pool_ids"]) for c in choices] == [
        ("q1", 0, EAST),
        ("q2", 0, EAST),
        ("q3", 1, WEST),
    ]


# -- a whole dispatcher ------------------------------------------------------------------------

POOLS = [
    # east is roomy (the engine prefers it) but its pool holds three requests a minute.
    {"id": EAST, "family": "openai", "rpm": 3, "safety_factor": 1.0},
    {"id": WEST, "family": "openai", "rpm": 1000, "safety_factor": 1.0},
    {"id": "local/gpu", "family": "local", "rpm": 1000, "safety_factor": 1.0},
]
ROUTES = {
    "chat-default": {"backends": [{"name": "gpt-4o", "weight": 100}]},
    "sessions": {"backends": [{"name": "llama3-local", "weight": 100}]},
}
BREAKER = {"failure_rate": 0.05, "window": 100, "min_calls": 20, "open_for": "60s"}
AGENTS = {
    "auditor": {"breaker": BREAKER, "fallback": "auditor-basic"},
    "auditor-basic": {"breaker": BREAKER},
    "scribe": {"breaker": BREAKER},
}
LANE_NAMES = {pb: lane.value for pb, lane in LANE_FROM_PB.items()}


@dataclass
class Story:
    """What the dispatcher answered, to hold the views against."""

    decisions: list[routing_pb2.RouteDecision] = field(default_factory=list)
    settled: dict[str, Usage] = field(default_factory=dict)  # reservation id -> total
    interim: dict[str, Usage] = field(default_factory=dict)  # never settled: running total
    released: list[str] = field(default_factory=list)
    sessions: dict[str, str] = field(default_factory=dict)  # request id -> session key
    started: float = 0.0
    ended: float = 0.0

    def pools_of(self, reservation_id: str) -> list[str]:
        (decision,) = [d for d in self.decisions if d.reservation_id == reservation_id]
        return [charge.pool_id for charge in decision.reserved]


@asynccontextmanager
async def _dispatcher(tmp_path: Path, url: str) -> AsyncIterator[DispatcherServer]:
    async with running(
        tmp_path, pools=POOLS, routes=ROUTES, agents=AGENTS, **{"durable.database_url": url}
    ) as server:
        yield server


async def run_dispatcher_story(tmp_path: Path, url: str) -> Story:
    """Route, spill, trip a breaker, hand a session over, settle and release on a real
    dispatcher whose embedded journal consumer writes into ``url``; returns its answers."""
    story = Story(started=datetime.now(UTC).timestamp())
    async with (
        _dispatcher(tmp_path, url) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        router, stub = server.runtime.router, routing(channel)
        agents = {
            "east": FakeAgent(channel, "east", slots=1000, pool_ids=[EAST], backends=["gpt-4o"]),
            "west": FakeAgent(channel, "west", slots=1, pool_ids=[WEST], backends=["gpt-4o"]),
            "s1": FakeAgent(channel, "s1", pool_ids=["local/gpu"], backends=["llama3-local"]),
            "s2": FakeAgent(channel, "s2", pool_ids=["local/gpu"], backends=["llama3-local"]),
        }
        for agent in agents.values():
            await agent.connect()
        await router.refresh()  # also the baseline of the version counters

        async def route(request_id: str, **fields: Any) -> routing_pb2.RouteDecision:
            decision: routing_pb2.RouteDecision = await stub.Route(
                route_request(request_id, **fields)
            )
            story.decisions.append(decision)
            if fields.get("session_key"):
                story.sessions[request_id] = fields["session_key"]
            return decision

        # A session, then its cluster reboots: the next turn is handed over.
        home = await route("turn-0", route="sessions", agent="scribe", session_key="conv-1")
        await agents[home.cluster.id].restart()
        await router.refresh()
        await route("turn-1", route="sessions", agent="scribe", session_key="conv-1")
        # Four tasks: east's pool holds three, the fourth spills to west.
        for i in range(4):
            await route(f"task-{i}")
        await route("heavy-0", task_class=common_pb2.TASK_CLASS_HEAVY)
        # 10 % of auditor's calls failed since the last heartbeat: its breaker opens, and the
        # next auditor task runs the fallback version.
        await agents["east"].report(counters={"auditor": (90, 10)})
        await router.refresh()
        await route("after-trip")
        # Outcomes: two settles, one release, one task still running with interim usage.
        by_id = {d.request_id: d.reservation_id for d in story.decisions}
        for request_id, usage in (("task-0", Usage(2, 70, 30)), ("task-3", Usage(1, 20, 5))):
            await stub.Settle(
                routing_pb2.SettleRequest(
                    reservation_id=by_id[request_id],
                    usage=common_pb2.Usage(
                        requests=int(usage.requests),
                        input_tokens=int(usage.input_tokens),
                        output_tokens=int(usage.output_tokens),
                    ),
                    outcome=common_pb2.TASK_OUTCOME_SUCCESS,
                    duration={"seconds": 3},
                )
            )
            story.settled[by_id[request_id]] = usage
        await stub.Release(routing_pb2.ReleaseRequest(reservation_id=by_id["task-1"]))
        story.released.append(by_id["task-1"])
        running_task = by_id["turn-1"]
        cluster = next(d.cluster.id for d in story.decisions if d.request_id == "turn-1")
        for n in range(2):
            report = UsageReport(
                f"u{n}", running_task, requests=1, input_tokens=11, output_tokens=4
            )
            assert await server.runtime.apply_usage(cluster, [report]) == [f"u{n}"]
        story.interim[running_task] = Usage(2, 22, 8)
        # Everything journalled is in SQL once the consumer has acked it all.
        journal = server.runtime.consumer.source

        async def drained() -> bool:
            return await journal.pending() == 0

        await eventually(drained, what="the journal consumer to ack every event")
    story.ended = datetime.now(UTC).timestamp()
    return story


def _lane(decision: routing_pb2.RouteDecision) -> str:
    return LANE_NAMES[decision.lane]


def _sum_by(
    rows: Iterable[Mapping[str, Any]], keys: tuple[str, ...], values: tuple[str, ...]
) -> dict[tuple[Any, ...], tuple[float, ...]]:
    """Rows added up over their minutes."""
    out: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0.0] * len(values))
    for row in rows:
        acc = out[tuple(row[k] for k in keys)]
        for i, v in enumerate(values):
            acc[i] += row[v]
    return {k: tuple(v) for k, v in out.items()}


def _assert_whole_minutes_within(rows: Iterable[Mapping[str, Any]], story: Story) -> None:
    for row in rows:
        stamp: datetime = row["minute"]
        assert (stamp.second, stamp.microsecond) == (0, 0), row
        assert minute(story.started) <= stamp <= minute(story.ended), row


async def test_the_views_show_what_a_running_dispatcher_did(
    ledger_url: str, tmp_path: Path
) -> None:
    story = await run_dispatcher_story(tmp_path, ledger_url)
    routed = story.decisions

    # The scenario did what it is meant to exercise.
    spilled = [d for d in routed if d.spilled_from]
    handed = [d for d in routed if d.handover_from]
    assert [(d.request_id, d.spilled_from, d.cluster.id) for d in spilled][:1] == [
        ("task-3", "east", "west")
    ]
    assert [d.request_id for d in handed] == ["turn-1"]
    after_trip = routed[-1]
    assert (after_trip.outcome, after_trip.agent_version) == (
        routing_pb2.ROUTE_OUTCOME_FALLBACK,
        "auditor-basic",
    )
    assert {_lane(d) for d in routed} >= {"standard", "heavy"}

    decisions = await view_rows(ledger_url, "SELECT * FROM v_decisions_per_cluster")
    _assert_whole_minutes_within(decisions, story)
    keys = ("cluster_id", "backend", "agent_version", "lane")
    expected_decisions: Counter[tuple[str, ...]] = Counter()
    expected_spills: Counter[tuple[str, ...]] = Counter()
    for d in routed:
        key = (d.cluster.id, d.backend, d.agent_version, _lane(d))
        expected_decisions[key] += 1
        expected_spills[key] += bool(d.spilled_from)
    assert _sum_by(decisions, keys, ("decisions", "spilled")) == {
        k: (float(n), float(expected_spills[k])) for k, n in expected_decisions.items()
    }

    spills = await view_rows(
        ledger_url,
        "SELECT reservation_id, request_id, from_cluster, to_cluster, from_candidate_id,"
        " to_candidate_id, pool_ids FROM v_spillovers",
    )
    assert sorted(
        (s["reservation_id"], s["request_id"], s["from_cluster"], s["to_cluster"], s["pool_ids"])
        for s in spills
    ) == sorted(
        (
            d.reservation_id,
            d.request_id,
            d.spilled_from,
            d.cluster.id,
            ",".join(story.pools_of(d.reservation_id)),
        )
        for d in spilled
    )
    for s in spills:  # full candidate ids: cluster|backend|version|lane
        decision = next(d for d in routed if d.reservation_id == s["reservation_id"])
        assert s["to_candidate_id"] == "|".join(
            (decision.cluster.id, decision.backend, decision.agent_version, _lane(decision))
        )
        assert s["from_candidate_id"].split("|")[0] == decision.spilled_from

    handovers = await view_rows(
        ledger_url, "SELECT session_key, from_cluster, to_cluster, at FROM v_handovers"
    )
    assert [(h["session_key"], h["from_cluster"], h["to_cluster"]) for h in handovers] == [
        (story.sessions[d.request_id], d.handover_from, d.cluster.id) for d in handed
    ]
    assert story.started <= handovers[0]["at"].timestamp() <= story.ended

    breakers = await view_rows(ledger_url, "SELECT * FROM v_breaker_events")
    assert [
        (b["agent_version"], b["from_state"], b["to_state"], b["failure_rate"]) for b in breakers
    ] == [("auditor", "closed", "open", pytest.approx(0.1))]
    (trip,) = breakers
    assert story.started <= trip["at"].timestamp() <= trip["open_until"].timestamp()
    assert trip["open_until"].timestamp() == pytest.approx(trip["at"].timestamp() + 60, abs=1)
    assert trip["slow_rate"] == 0

    usage = await view_rows(ledger_url, "SELECT * FROM v_usage_per_pool_minute")
    _assert_whole_minutes_within(usage, story)
    expected: dict[tuple[str], list[float]] = defaultdict(lambda: [0.0] * 7)
    for d in routed:
        for charge in d.reserved:
            acc = expected[(charge.pool_id,)]
            acc[0] += 1
            acc[1] += charge.cost.requests
            acc[2] += charge.cost.tokens
    for finals, settled in ((story.settled, 1), (story.interim, 0)):
        for reservation_id, total in finals.items():
            for pool_id in story.pools_of(reservation_id):
                acc = expected[(pool_id,)]
                acc[3] += settled
                acc[4] += total.requests
                acc[5] += total.input_tokens
                acc[6] += total.output_tokens
    assert _sum_by(
        usage,
        ("pool_id",),
        (
            "reservations",
            "reserved_requests",
            "reserved_tokens",
            "settled_reservations",
            "used_requests",
            "used_input_tokens",
            "used_output_tokens",
        ),
    ) == {k: tuple(v) for k, v in expected.items()}
    for row in usage:
        assert row["used_tokens"] == row["used_input_tokens"] + row["used_output_tokens"]


# -- downgrade and upgrade ---------------------------------------------------------------------


@pytest.fixture(
    params=[pytest.param("postgresql", marks=pytest.mark.postgres), pytest.param("sqlite")]
)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "ledger.db")
    return str(request.getfixturevalue("fresh_pg_url"))


async def _view_names(url: str) -> set[str]:
    engine = open_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_view_names()))
    finally:
        await engine.dispose()


async def _readonly_grants(url: str) -> dict[str, bool]:
    """Whether dispatcher_readonly is named in this database's and schema's ACLs."""
    conn = await asyncpg.connect(admin_dsn(url))
    try:
        database = await conn.fetchval(
            "SELECT datacl::text FROM pg_database WHERE datname = current_database()"
        )
        schema = await conn.fetchval(
            "SELECT nspacl::text FROM pg_namespace WHERE nspname = current_schema()"
        )
    finally:
        await conn.close()
    return {"database": READONLY in (database or ""), "schema": READONLY in (schema or "")}


async def test_downgrade_to_0001_drops_the_views_and_upgrade_restores_them(
    empty_url: str,
) -> None:
    postgres = make_url(empty_url).get_backend_name() == "postgresql"
    await migrate.upgrade(empty_url, "0002")
    assert await _view_names(empty_url) == set(VIEWS)
    if postgres:
        assert await _readonly_grants(empty_url) == {"database": True, "schema": True}
    await migrate.downgrade(empty_url, "0001")
    assert await migrate.current(empty_url) == "0001"
    assert await _view_names(empty_url) == set()
    if postgres:
        assert await _readonly_grants(empty_url) == {"database": False, "schema": False}
        # The role stays: other databases of the cluster may use it.
        assert await _role_exists(empty_url, READONLY)
    await migrate.upgrade(empty_url)
    assert await _view_names(empty_url) == set(VIEWS)
    rows = await view_rows(empty_url, "SELECT * FROM v_usage_per_pool_minute")
    assert rows == []
    assert await migrate.check(empty_url) == []  # the views do not read as model drift


# -- the read-only role (PostgreSQL) -----------------------------------------------------------


async def _role_exists(url: str, role: str) -> bool:
    conn = await asyncpg.connect(admin_dsn(url))
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role))
    finally:
        await conn.close()


@asynccontextmanager
async def readonly_login(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as a temporary LOGIN member of dispatcher_readonly (dropped after)."""
    user = f"dsp_ro_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn(url))
    try:
        await admin.execute(f'CREATE ROLE "{user}" LOGIN IN ROLE {READONLY}')
        conn = await asyncpg.connect(admin_dsn(url), user=user)
        try:
            yield conn
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{user}"')
        await admin.close()


REFUSED = [
    "SELECT count(*) FROM journal_events",
    "SELECT count(*) FROM reservations",
    "INSERT INTO journal_events (event_id, kind, at, pool_ids, data)"
    " VALUES ('x', 'handover', now(), '', '{}')",
    "UPDATE reservations SET state = 'settled'",
    "DELETE FROM pool_limits",
    "INSERT INTO v_handovers (at, event_id) VALUES (now(), 'x')",
    "CREATE TABLE sneaky (id int)",
]


@pytest.mark.postgres
async def test_the_readonly_role_reads_the_views_and_nothing_else(migrated_pg_url: str) -> None:
    await _truncate(migrated_pg_url)
    await _minute_story(migrated_pg_url)
    async with readonly_login(migrated_pg_url) as conn:
        counts = {v: await conn.fetchval(f"SELECT count(*) FROM {v}") for v in VIEWS}
        assert counts["v_usage_per_pool_minute"] == 4
        assert counts["v_spillovers"] == 1
        version = await conn.fetchval("SHOW server_version_num")
        for sql in REFUSED:
            if sql.startswith("CREATE") and int(version) < 150000:
                continue  # before 15, PUBLIC may create in schema public: not ours to grant
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    # And in the catalog: SELECT on every view, no privilege at all on any table.
    admin = await asyncpg.connect(admin_dsn(migrated_pg_url))
    try:
        for view in VIEWS:
            assert await admin.fetchval(
                "SELECT has_table_privilege($1, $2, 'SELECT')", READONLY, view
            ), view
        for table in Base.metadata.tables:
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"):
                assert not await admin.fetchval(
                    "SELECT has_table_privilege($1, $2, $3)", READONLY, table, privilege
                ), (table, privilege)
        assert not await admin.fetchval(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", READONLY
        )
    finally:
        await admin.close()
