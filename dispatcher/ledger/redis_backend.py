"""Redis hot store: one Lua script per operation, keys hash-tagged by quota family
(layout in ``redis_codec``).

Every script names all its keys in KEYS, takes its time from ``TIME`` (never the caller) and
appends its journal entry itself, so a decision and its record are one atomic step. A
reservation id is derived from the family and request id, so a retried reserve finds the
first reservation by key. Concurrent reserves of one family are batched (see ``batcher``).

The client is a single node or a Redis Cluster (``dispatcher.redis_client``); the code is the
same for both because every script's keys share their family's hash tag (one slot), EVALSHA
goes to the node owning that slot, and a NOSCRIPT there loads the script again.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from dispatcher.errors import (
    BackendUnavailable,
    DispatcherError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from dispatcher.ledger import bucket
from dispatcher.ledger.admission import check_limits, check_outcome, pool_spec, request_family
from dispatcher.ledger.batcher import Batcher
from dispatcher.ledger.events import EventKind, JournalEvent
from dispatcher.ledger.model import (
    Cost,
    Denial,
    Observation,
    PoolSnapshot,
    PoolSpec,
    Reservation,
    ReserveRequest,
    SettleResult,
    Usage,
    check_number,
    family_of,
    reservation_id_for,
)
from dispatcher.ledger.redis_codec import (
    RedisKeys,
    decision,
    pool_state,
    replayable,
    reservation_from_record,
)
from dispatcher.ledger.redis_pipe import ScriptPipe
from dispatcher.redis_client import (
    REDIS_ERRORS,
    SERVER_TIME_LUA,
    AnyRedis,
    client_from_url,
    is_cluster_url,
    seconds,
)

_SCRIPTS = (
    "reserve", "dispatch", "extend", "usage", "settle", "release", "expire", "reconcile",
    "set_limits", "init", "record",
)  # fmt: skip
#: Journal family of events that belong to no pool (breaker transitions, handovers).
EVENTS_FAMILY = "events"
_EXPIRE_BATCH = 100
#: A script argument: text, or JSON as orjson writes it (bytes; several times faster than
#: the json module on the Route path, where every reservation is encoded and decoded once).
ScriptArg = str | bytes


@dataclass(frozen=True, slots=True)
class _FamilyKeys:
    """A family's fixed keys and pool list, built once: every Route and Release names them,
    and formatting them again on each call was a measurable share of the call."""

    journal: str
    leases: str
    pools: tuple[str, ...]  # the pools' keys, in the family's pool order
    pool_ids: tuple[str, ...]  # the pool ids in that order
    pool_index: Mapping[str, int]  # a pool's place in that order, from 1 (Lua's first index)
    pool_ids_json: bytes  # the pool ids in that order: ARGV of the single-reservation scripts

    @classmethod
    def of(cls, keys: RedisKeys, family: str, pool_ids: Sequence[str]) -> _FamilyKeys:
        return cls(
            journal=keys.journal(family),
            leases=keys.leases(family),
            pools=tuple(keys.pool(family, p) for p in pool_ids),
            pool_ids=tuple(pool_ids),
            pool_index={p: i for i, p in enumerate(pool_ids, start=1)},
            pool_ids_json=orjson.dumps(list(pool_ids)),
        )


def _lua(name: str) -> str:
    folder = resources.files("dispatcher.ledger") / "lua"
    return (folder / "lib.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


class RedisLedger:
    """The ledger in Redis. Build it with :meth:`open`.

    At most ``max_calls`` calls run at once; one more waits up to ``wait_s`` for its turn.
    ``test_clock`` is a test hook: when set, scripts use its time instead of ``TIME``.
    """

    def __init__(
        self,
        client: AnyRedis,
        pools: Sequence[PoolSpec],
        *,
        keys: RedisKeys | None = None,
        test_clock: Callable[[], float] | None = None,
        max_batch: int = 128,
        max_inflight: int = 2,
        max_calls: int = 32,
        wait_s: float = 0.25,
        pipe: ScriptPipe | None = None,
    ) -> None:
        self._client = client
        self._pipe = pipe
        # A cluster client refuses a connection beyond its cap instead of waiting for one,
        # and a refusal would open the failover breaker under a mere burst: queue here.
        self._gate = asyncio.Semaphore(max_calls)
        self._wait_s = wait_s
        self._keys = keys or RedisKeys()
        self._specs = {p.id: p for p in pools}
        if len(self._specs) != len(pools):
            raise InvalidArgument("pools", "duplicate pool id")
        self._families: dict[str, list[str]] = {}
        for p in pools:
            self._families.setdefault(p.family, []).append(p.id)
        self._family_keys = {
            family: _FamilyKeys.of(self._keys, family, pids)
            for family, pids in self._families.items()
        }
        self._test_clock = test_clock
        self._texts = {n: _lua(n) for n in _SCRIPTS}
        self._scripts: dict[str, AsyncScript] = {
            n: client.register_script(text) for n, text in self._texts.items()
        }

        def per_family(run: Callable[..., Any]) -> dict[str, Batcher[Any, Any]]:
            return {
                family: Batcher(
                    functools.partial(run, family), max_batch=max_batch, max_inflight=max_inflight
                )
                for family in self._families
            }

        self._batchers: dict[str, Batcher[ReserveRequest, Reservation | Denial]]
        self._batchers = per_family(self._reserve_batch)
        # Release is the other call every routed task makes: batched the same way.
        self._release_batchers: dict[str, Batcher[str, dict[str, Any]]]
        self._release_batchers = per_family(self._release_batch)

    @classmethod
    async def open(
        cls,
        url: str,
        pools: Sequence[PoolSpec],
        *,
        max_connections: int = 32,
        timeout_s: float = 0.25,
        connect_timeout_s: float = 3.0,
        **kwargs: Any,
    ) -> RedisLedger:
        """Connect to a single node or a cluster (see ``dispatcher.redis_client``) with at
        most ``max_connections`` connections; every call (and wait for a connection) fails
        after ``timeout_s`` as BackendUnavailable. The first contact (a cluster's slot
        discovery included) gets ``connect_timeout_s``: it is not a routing call."""
        client = client_from_url(url, timeout_s=timeout_s, max_connections=max_connections)
        kwargs = {"max_calls": max_connections, "wait_s": timeout_s, **kwargs}
        if not is_cluster_url(url):
            kwargs.setdefault("pipe", ScriptPipe.from_url(url))
        ledger = cls(client, pools, **kwargs)
        try:
            await ledger._first_contact(connect_timeout_s)
            await ledger.seed_pools()
        except BaseException:
            await ledger.aclose()
            raise
        return ledger

    async def _first_contact(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                if isinstance(self._client, RedisCluster):
                    await self._client.initialize()
                else:
                    await self._client.ping()
        except REDIS_ERRORS as exc:  # (builtin TimeoutError is an OSError)
            raise BackendUnavailable("redis", f"{type(exc).__name__}: {exc}") from exc

    @property
    def call_timeout(self) -> float:
        """Seconds a call may wait for its turn (and, via the client, for Redis)."""
        return self._wait_s

    async def seed_pools(self) -> None:
        """Create configured pools Redis does not hold yet; register the journal streams."""
        async with self._redis():
            await self._client.sadd(self._keys.streams, self._keys.journal(EVENTS_FAMILY))
        for family, pids in self._families.items():
            # One deadline per family, not one for all: a config with many families must
            # not fail its start on a Redis a few milliseconds away.
            async with self._redis():
                await self._client.sadd(self._keys.streams, self._keys.journal(family))
                specs = [self._spec_json(self._specs[p]) for p in pids]
                keys = [self._keys.pool(family, p) for p in pids]
                await self._scripts["init"](keys=keys, args=[self._now_arg(), orjson.dumps(specs)])

    @staticmethod
    def _spec_json(spec: PoolSpec) -> dict[str, Any]:
        return {
            "id": spec.id, "mode": spec.mode.value, "burst": spec.burst,
            "sf": spec.safety_factor, "ow": spec.output_weight, "refund": spec.refund_unused,
            "limits": [[d, v] for d, v in spec.limits().items()],
        }  # fmt: skip

    def _now_arg(self) -> str:
        return repr(self._test_clock()) if self._test_clock else ""

    @asynccontextmanager
    async def _redis(self, deadline: float | None = None) -> AsyncIterator[None]:
        """Wait for a turn (see ``max_calls``), then run the body; both by ``deadline`` (a
        loop time; default ``call_timeout`` from now), so a call never outlives its deadline
        however long it queued. Redis failures (and the deadline) leave only as
        BackendUnavailable."""
        deadline = self._deadline() if deadline is None else deadline
        try:
            async with asyncio.timeout_at(deadline):
                await self._gate.acquire()
        except TimeoutError:
            raise BackendUnavailable("redis", f"no free connection in {self._wait_s}s") from None
        try:
            async with asyncio.timeout_at(deadline):
                yield
        except REDIS_ERRORS as exc:  # (builtin TimeoutError, the deadline's, is an OSError)
            raise BackendUnavailable("redis", f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._gate.release()

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._wait_s

    async def _call(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[ScriptArg],
        deadline: float | None = None,
    ) -> Any:
        """Run a script by ``deadline`` (see ``_redis``); a missing pool is seeded again and
        the call retried once, within the same deadline."""
        deadline = self._deadline() if deadline is None else deadline
        for attempt in (1, 2):
            try:
                return await self._run_script(name, keys, [self._now_arg(), *args], deadline)
            except ResponseError as exc:
                code, _, detail = str(exc).partition(" ")
                if code in ("NORES", "STATE"):
                    raise _Refused(code, detail) from exc
                if code != "NOPOOL" or attempt == 2:
                    raise BackendUnavailable("redis", f"{name}: {exc}") from exc
            await self.seed_pools()
        raise AssertionError("unreachable")

    async def _run_script(
        self, name: str, keys: Sequence[str], args: Sequence[ScriptArg], deadline: float
    ) -> Any:
        script = self._scripts[name]
        if self._pipe is None:  # a cluster: redis-py's client sends it to the slot's node
            async with self._redis(deadline):
                try:
                    return await script(keys=keys, args=args)
                except ResponseError as exc:  # the script's own reply: its caller reads it,
                    reply = exc  # not ``_redis``, which would call it an outage
            raise reply
        # The pipelined connection has no pool to wait for: only the call's own deadline.
        try:
            return await self._pipe.call(script.sha, self._texts[name], keys, args, deadline)
        except ResponseError:
            raise
        except REDIS_ERRORS as exc:  # (the deadline's TimeoutError is an OSError)
            raise BackendUnavailable("redis", f"{name}: {type(exc).__name__}: {exc}") from exc

    # -- reservations ---------------------------------------------------------------------

    async def reserve(self, request: ReserveRequest) -> Reservation | Denial:
        family = request_family(request, self._specs)
        try:
            # One deadline for queueing behind earlier batches and for this batch's call.
            return await self._batchers[family].submit(request, timeout=self._wait_s)
        except TimeoutError:
            raise BackendUnavailable("redis", f"reserve: no answer in {self._wait_s}s") from None

    async def _reserve_batch(
        self, family: str, requests: Sequence[ReserveRequest], deadline: float | None
    ) -> list[Reservation | Denial]:
        # The family's pools, all of them and in their fixed order, as every other script
        # gets them: the script reads only those a candidate it reaches draws on, and the
        # batch is not scanned for its pools first (a fifth of this method's time).
        fk, k = self._family_keys[family], self._keys
        index = fk.pool_index
        rids = [reservation_id_for(family, r.request_id) for r in requests]
        batch = {
            "pools": fk.pool_ids,
            "reqs": [
                {"rid": rid, "req": r.request_id, "lease": r.lease_s, "cands": [
                    {"id": c.candidate_id, "p": [index[p] for p in c.pool_ids],
                     "i": c.estimate.input_tokens, "o": c.estimate.max_output_tokens}
                    for c in r.candidates
                ]}
                for r, rid in zip(requests, rids, strict=True)
            ],
        }  # fmt: skip
        keys = [fk.journal, fk.leases, *fk.pools, *(k.res(family, rid) for rid in rids)]
        raw = await self._call("reserve", keys, [orjson.dumps(batch)], deadline)
        return [decision(item) for item in orjson.loads(raw)]

    def _family(self, reservation_id: str) -> str:
        family = family_of(reservation_id)
        if family is None or family not in self._families:
            raise NotFound("reservation", reservation_id)
        return family

    async def _op(self, name: str, reservation_id: str, *args: ScriptArg) -> dict[str, Any]:
        family = self._family(reservation_id)
        fk = self._family_keys[family]
        keys = [fk.journal, fk.leases, self._keys.res(family, reservation_id), *fk.pools]
        try:
            raw = await self._call(name, keys, [fk.pool_ids_json, *args])
        except _Refused as exc:
            raise refusal(name, reservation_id, exc.code, exc.detail) from None
        result: dict[str, Any] = orjson.loads(raw)
        return result

    async def get(self, reservation_id: str) -> Reservation:
        family = self._family(reservation_id)
        async with self._redis():
            raw = await self._client.get(self._keys.res(family, reservation_id))
        if raw is None:
            raise NotFound("reservation", reservation_id)
        return reservation_from_record(orjson.loads(raw))

    async def ack_dispatched(self, reservation_id: str) -> Reservation:
        return replayable(await self._op("dispatch", reservation_id))

    async def extend(self, reservation_id: str, lease_s: float) -> Reservation:
        check_number(lease_s, "lease_s", positive=True)
        return reservation_from_record(
            (await self._op("extend", reservation_id, repr(lease_s)))["ok"]
        )

    async def report_usage(self, reservation_id: str, delta: Usage) -> Reservation:
        out = await self._op("usage", reservation_id, orjson.dumps(delta.to_dict()))
        return reservation_from_record(out["ok"])

    async def settle(self, reservation_id: str, usage: Usage, outcome: str) -> SettleResult:
        check_outcome(outcome)
        out = await self._op("settle", reservation_id, orjson.dumps(usage.to_dict()), outcome)
        rec = out.get("ok") or out["replay"]
        settled = rec["settled"]
        return SettleResult(
            reservation=reservation_from_record(rec),
            outcome=settled["outcome"],
            charged={p: Cost.from_dict(c) for p, c in settled["charged"].items()},
            adjustment={p: Cost.from_dict(c) for p, c in settled["adjustment"].items()},
            late=bool(settled["late"]),
            replayed="replay" in out,
        )

    async def release(self, reservation_id: str) -> Reservation:
        family = self._family(reservation_id)
        try:
            out = await self._release_batchers[family].submit(reservation_id, timeout=self._wait_s)
        except TimeoutError:
            raise BackendUnavailable("redis", f"release: no answer in {self._wait_s}s") from None
        if "err" in out:
            code, _, detail = str(out["err"]).partition(" ")
            raise refusal("release", reservation_id, code, detail)
        return replayable(out)

    async def _release_batch(
        self, family: str, reservation_ids: Sequence[str], deadline: float | None
    ) -> list[dict[str, Any]]:
        fk, k = self._family_keys[family], self._keys
        keys = [fk.journal, fk.leases, *(k.res(family, rid) for rid in reservation_ids)]
        keys += fk.pools
        args: list[ScriptArg] = [fk.pool_ids_json, str(len(reservation_ids))]
        raw = await self._call("release", keys, args, deadline)
        out: list[dict[str, Any]] = orjson.loads(raw)
        return out

    async def expire_due(self, limit: int = 1000) -> list[str]:
        done: list[str] = []
        for family in self._families:
            while len(done) < limit and await self._expire_some(family, limit - len(done), done):
                pass
        return done

    async def _expire_some(self, family: str, room: int, done: list[str]) -> bool:
        """Abandon due leases among the earliest few; True if there may be more due."""
        fk, k = self._family_keys[family], self._keys
        async with self._redis():
            raw_ids = await self._client.zrange(fk.leases, 0, min(room, _EXPIRE_BATCH) - 1)
        rids = [r.decode() if isinstance(r, bytes) else str(r) for r in raw_ids]
        if not rids:
            return False
        keys = [fk.journal, fk.leases, *fk.pools, *(k.res(family, rid) for rid in rids)]
        args: list[ScriptArg] = [fk.pool_ids_json, str(len(rids)), *rids]
        out = orjson.loads(await self._call("expire", keys, args))
        done.extend(out["abandoned"] or [])
        return bool(out["due"] == len(rids))

    # -- pools ----------------------------------------------------------------------------

    async def reconcile(self, pool_id: str, observation: Observation) -> bool:
        spec = pool_spec(self._specs, pool_id)
        o = observation
        obs: dict[str, Any] = {"at": o.observed_at, "rl": o.rate_limited}
        for unit in ("requests", "tokens"):
            for ours, theirs in (("lim", "limit"), ("rem", "remaining")):
                if (value := o.known(f"{theirs}_{unit}")) is not None:
                    obs[f"{ours}_{unit}"] = value
        if (retry_after := o.known("retry_after_s")) is not None:
            obs["ra"] = retry_after
        keys = [self._keys.journal(spec.family), self._keys.pool(spec.family, pool_id)]
        return bool(await self._call("reconcile", keys, [pool_id, orjson.dumps(obs)]))

    async def snapshot(self, pool_id: str) -> PoolSnapshot:
        spec = pool_spec(self._specs, pool_id)
        key = self._keys.pool(spec.family, pool_id)
        async with self._redis(), self._client.pipeline(transaction=True) as pipe:
            pipe.eval(SERVER_TIME_LUA, 1, key)  # the pool's own node's clock
            pipe.hgetall(key)
            server_time, raw = await pipe.execute()
        if not raw:
            raise BackendUnavailable("redis", f"pool {pool_id} is missing; restart to seed it")
        now = self._test_clock() if self._test_clock else seconds(server_time)
        return bucket.snapshot(pool_state(spec, raw), now)

    async def set_limits(self, pool_id: str, limits: Mapping[str, float | None]) -> PoolSnapshot:
        spec = pool_spec(self._specs, pool_id)
        changes = [[d, -1 if v is None else v] for d, v in check_limits(limits).items()]
        keys = [self._keys.journal(spec.family), self._keys.pool(spec.family, pool_id)]
        await self._call("set_limits", keys, [pool_id, orjson.dumps(changes)])
        return await self.snapshot(pool_id)

    async def append_journal(self, events: Sequence[JournalEvent]) -> None:
        """Copy events journalled elsewhere (a replica's outage journal) into the streams of
        their families; ``origin`` keeps the id they had there."""
        async with self._redis(), self._client.pipeline(transaction=False) as pipe:
            for event in events:
                family = self._family_of(event.pool_ids)
                fields = {**event.to_fields(), "origin": event.event_id}
                pipe.xadd(self._keys.journal(family), fields)  # type: ignore[arg-type]
            await pipe.execute()

    def _family_of(self, pool_ids: Sequence[str]) -> str:
        return pool_spec(self._specs, pool_ids[0]).family if pool_ids else EVENTS_FAMILY

    async def record(
        self,
        kind: EventKind,
        reservation_id: str | None,
        pool_ids: Sequence[str],
        data: Mapping[str, Any],
    ) -> None:
        key = self._keys.journal(self._family_of(pool_ids))
        args = [kind.value, reservation_id or "", ",".join(pool_ids), orjson.dumps(data)]
        async with self._redis():
            await self._scripts["record"](keys=[key], args=[self._now_arg(), *args])

    async def aclose(self) -> None:
        for batchers in (self._batchers, self._release_batchers):
            for batcher in batchers.values():
                await batcher.aclose()
        if self._pipe is not None:
            await self._pipe.aclose()
        await self._client.aclose()


def refusal(op: str, reservation_id: str, code: str, detail: str) -> DispatcherError:
    """A script's on-purpose refusal (``NORES`` / ``STATE <state>``) as the caller's error."""
    if code == "NORES":
        return NotFound("reservation", reservation_id)
    return FailedPrecondition(f"cannot {op} reservation {reservation_id}: {detail}")


class _Refused(Exception):
    """A script refused on purpose (``NORES`` / ``STATE <state>``); _op maps it."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail
