"""The Redis cluster registry, shared by every dispatcher replica.

Layout (every key carries the ``{namespace}`` hash tag, so the whole fleet lives in one Redis
Cluster slot: a batch of heartbeats is one script call and the fleet is listed in one round
trip; 10,000 clusters are a few MB)::

    {ns}:info      hash  cluster id -> announced facts (codec JSON)
    {ns}:load      hash  cluster id -> last load report (codec JSON)
    {ns}:meta      hash  cluster id -> [boot, previous boot, boot changes, admin, weight,
                                        last seen ms, load at ms]
    {ns}:counters  hash  cluster id -> {version: [started, succeeded, failed, slow]}
    {ns}:drain     hash  cluster id -> operator's reason (present = drained)
    {ns}:live:<id> key   refreshed with a TTL of stale_after by every heartbeat

The same code runs on one server or a Redis Cluster (``dispatcher.redis_client``): one slot
means every pipeline below goes to one node, and MULTI is allowed there.

Heartbeats that arrive while a script call is in flight are sent together in the next one
(group commit): the Python client, not Redis, is the cost per call (DESIGN §10).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from dispatcher.errors import BackendUnavailable, InvalidArgument, NotFound
from dispatcher.fleet import codec
from dispatcher.fleet.model import AdminState, ClusterReport, ClusterState, ReportOutcome
from dispatcher.fleet.registry import (
    RegistrySettings,
    backwards,
    check_report,
    counters_of,
    deltas,
)
from dispatcher.redis_client import REDIS_ERRORS, SERVER_TIME_LUA, AnyRedis

DEFAULT_NAMESPACE = "dispatcher:fleet"
MAX_BATCH = 256
_RECORD_LUA = resources.files("dispatcher.fleet").joinpath("lua/record.lua").read_text()


@dataclass
class _Pending:
    report: ClusterReport
    args: list[str]
    done: asyncio.Future[ReportOutcome]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisClusterRegistry:
    """``ClusterRegistry`` on a ``redis.asyncio`` client it does not own."""

    def __init__(
        self,
        client: AnyRedis,
        settings: RegistrySettings | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        self.settings = settings or RegistrySettings()
        self._client = client
        self._script = client.register_script(_RECORD_LUA)
        tag = "{" + namespace + "}"
        self._live_prefix = f"{tag}:live:"
        self._hashes = [f"{tag}:{name}" for name in ("info", "load", "meta", "counters", "drain")]
        # Counters are the script's business; readers need the other four.
        self._read_hashes = [self._hashes[i] for i in (0, 1, 2, 4)]
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def record(self, report: ClusterReport) -> ReportOutcome:
        # Whether the cluster is known is the script's call (atomic with the write).
        check_report(report, self.settings, known=True)
        done: asyncio.Future[ReportOutcome] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(report, self._args(report), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    def _args(self, report: ClusterReport) -> list[str]:
        load = report.load
        weight = report.weight_percent
        return [
            report.cluster_id,
            report.boot_id,
            codec.encode_info(report.info) if report.info else "",
            codec.encode_load(load) if load else "",
            codec.encode_counters(counters_of(load.versions)) if load else "",
            report.admin_state.value if report.admin_state else "",
            "" if weight is None else str(weight or -1),
            "1" if report.info is not None else "0",
        ]

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                replies = await self._run_batch(batch)
            except Exception as exc:
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc)
                continue
            except BaseException:
                for item in (*batch, *self._pending):
                    item.done.cancel()
                raise
            for item, reply in zip(batch, replies, strict=True):
                if not item.done.done():
                    self._settle(item, reply)

    async def _run_batch(self, batch: Sequence[_Pending]) -> list[list[Any]]:
        keys = self._hashes + [self._live_prefix + item.report.cluster_id for item in batch]
        gap_ms, ttl_ms = self.settings.report_gap * 1000, self.settings.stale_after * 1000
        args: list[str] = [str(int(gap_ms)), str(max(1, int(ttl_ms)))]
        for item in batch:
            args.extend(item.args)
        try:
            replies: list[list[Any]] = await self._script(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            raise BackendUnavailable("redis", str(exc) or type(exc).__name__) from exc
        return replies

    def _settle(self, item: _Pending, reply: list[Any]) -> None:
        status, now_ms, changed, previous, drain = (_text(x) for x in reply)
        report = item.report
        if status != "ok":
            item.done.set_exception(_rejection(status))
            return
        current = counters_of(report.load.versions) if report.load else {}
        outcome = ReportOutcome(
            cluster_id=report.cluster_id,
            reported_at=int(now_ms) / 1000,
            boot_changed=changed == "1",
            deltas=deltas(codec.decode_counters(previous), current),
            drained=bool(drain),
            drain_reason=drain[1:],
        )
        item.done.set_result(outcome)

    async def get(self, cluster_id: str) -> ClusterState:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in self._read_hashes:
                    pipe.hget(key, cluster_id)
                pipe.exists(self._live_prefix + cluster_id)
                info, load, meta, drain, live = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise BackendUnavailable("redis", str(exc) or type(exc).__name__) from exc
        state = _state(info, load, meta, drain, bool(live))
        if state is None:
            raise NotFound("cluster", cluster_id)
        return state

    async def list(self) -> list[ClusterState]:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in self._read_hashes:
                    pipe.hgetall(key)
                # The clock of the node holding the fleet, which the record script uses.
                pipe.eval(SERVER_TIME_LUA, 1, self._hashes[2])
                infos, loads, metas, drains, (sec, usec) = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise BackendUnavailable("redis", str(exc) or type(exc).__name__) from exc
        # Same rule as the live key's TTL, by the same clock, without reading 10,000 keys.
        now_ms = int(sec) * 1000 + int(usec) // 1000
        horizon_ms = self.settings.stale_after * 1000
        states = []
        for cid, info in infos.items():
            meta = metas.get(cid)
            live = meta is not None and now_ms - json.loads(meta)[5] < horizon_ms
            state = _state(info, loads.get(cid), meta, drains.get(cid), live)
            if state is not None:
                states.append(state)
        return states

    async def set_drain(self, cluster_id: str, drain: bool, reason: str = "") -> ClusterState:
        drains = self._hashes[4]
        try:
            if not await self._client.hexists(self._hashes[2], cluster_id):
                raise NotFound("cluster", cluster_id)
            if drain:
                await self._client.hset(drains, cluster_id, reason)
            else:
                await self._client.hdel(drains, cluster_id)
        except REDIS_ERRORS as exc:
            raise BackendUnavailable("redis", str(exc) or type(exc).__name__) from exc
        return await self.get(cluster_id)

    async def forget(self, cluster_id: str) -> bool:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for key in self._hashes:
                    pipe.hdel(key, cluster_id)
                pipe.delete(self._live_prefix + cluster_id)
                removed = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise BackendUnavailable("redis", str(exc) or type(exc).__name__) from exc
        return bool(removed[2])

    async def aclose(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)


def _rejection(status: str) -> InvalidArgument:
    if status == "unknown":
        return InvalidArgument("announce", "required on the first report of a cluster")
    if status == "flood":
        return InvalidArgument("seq", "reports faster than half the heartbeat interval")
    _, name, version = status.split(":", 2)
    return backwards(version, name)


def _state(info: Any, load: Any, meta: Any, drain: Any, live: bool) -> ClusterState | None:
    if info is None or meta is None:
        return None
    cluster = codec.decode_info(info)
    if cluster is None:
        return None
    boot, previous, changes, admin, weight, last_seen_ms, load_at_ms = json.loads(meta)
    return ClusterState(
        info=cluster,
        load=codec.decode_load(load, load_at_ms / 1000) if load is not None else None,
        boot_id=boot,
        previous_boot_id=previous,
        boot_changes=int(changes),
        agent_admin_state=AdminState(admin),
        drained=drain is not None,
        drain_reason=_text(drain) if drain is not None else "",
        weight_percent=int(weight) if weight > 0 else None,
        last_seen=last_seen_ms / 1000,
        live=live,
    )
