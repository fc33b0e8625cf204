"""Compact JSON forms of fleet facts for the Redis registry.

Positional arrays rather than objects: a load blob is written on every heartbeat and read by
every routing refresh, so fewer bytes and fewer keys to parse matter more than readability.
Change a layout only together with ``VERSION`` (old blobs then decode as absent).
"""

from __future__ import annotations

import json
from typing import Any

from dispatcher.fleet.model import (
    ClusterInfo,
    ClusterLoad,
    Lane,
    LaneCapacity,
    LaneLoad,
    VersionCounters,
)

VERSION = 1
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def encode_info(info: ClusterInfo) -> str:
    lanes = [[lane.lane.value, lane.slots] for lane in info.lanes]
    return _dumps(
        [
            VERSION,
            info.id,
            info.region,
            info.endpoint,
            info.slots,
            info.cores,
            info.memory_bytes,
            lanes,
            info.versions,
            info.backends,
            info.pool_ids,
            info.agent_build,
        ]
    )


def decode_info(raw: str | bytes) -> ClusterInfo | None:
    data: list[Any] = json.loads(raw)
    if data[0] != VERSION:
        return None
    _, cid, region, endpoint, slots, cores, memory, lanes, versions, backends, pools, build = data
    return ClusterInfo(
        id=cid,
        region=region,
        endpoint=endpoint,
        slots=slots,
        cores=cores,
        memory_bytes=memory,
        lanes=tuple(LaneCapacity(Lane(name), n) for name, n in lanes),
        versions=tuple(versions),
        backends=tuple(backends),
        pool_ids=tuple(pools),
        agent_build=build,
    )


def encode_load(load: ClusterLoad) -> str:
    return _dumps(
        [
            VERSION,
            load.cpu,
            load.mem,
            load.app_utilization,
            load.rps,
            load.eps,
            load.in_flight,
            load.queue_depth,
            [[lane.lane.value, lane.in_flight, lane.queued] for lane in load.lanes],
            [
                [v.version, v.started, v.succeeded, v.failed, v.slow, v.in_flight]
                for v in load.versions
            ],
            load.named_metrics,
        ]
    )


def decode_load(raw: str | bytes, reported_at: float) -> ClusterLoad | None:
    data: list[Any] = json.loads(raw)
    if data[0] != VERSION:
        return None
    _, cpu, mem, app, rps, eps, in_flight, queue, lanes, versions, named = data
    return ClusterLoad(
        cpu=cpu,
        mem=mem,
        app_utilization=app,
        rps=rps,
        eps=eps,
        in_flight=in_flight,
        queue_depth=queue,
        lanes=tuple(LaneLoad(Lane(name), n, q) for name, n, q in lanes),
        versions=tuple(VersionCounters(*row) for row in versions),
        named_metrics=named,
        reported_at=reported_at,
    )


def encode_counters(counters: dict[str, tuple[int, int, int, int]]) -> str:
    return _dumps(counters)


def decode_counters(raw: str | bytes) -> dict[str, tuple[int, int, int, int]]:
    data: dict[str, list[float]] = json.loads(raw) if raw else {}
    # Lua writes numbers back as doubles ("1e+14"); counters are integers.
    return {k: (int(v[0]), int(v[1]), int(v[2]), int(v[3])) for k, v in data.items()}
