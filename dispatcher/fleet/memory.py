"""The in-memory cluster registry: the embedded default, and the reference for the contract.

One process, so atomicity comes from doing each operation without an ``await`` in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dispatcher.errors import InvalidArgument, NotFound
from dispatcher.fleet.model import (
    AdminState,
    ClusterInfo,
    ClusterLoad,
    ClusterReport,
    ClusterState,
    ReportOutcome,
)
from dispatcher.fleet.registry import (
    RegistrySettings,
    check_progress,
    check_report,
    counters_of,
    deltas,
    merge_counters,
)


@dataclass
class _Entry:
    info: ClusterInfo
    boot_id: str
    last_seen: float
    load: ClusterLoad | None = None
    previous_boot_id: str = ""
    boot_changes: int = 0
    agent_admin_state: AdminState = AdminState.READY
    weight_percent: int | None = None
    counters: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    drain_reason: str | None = None
    #: The last state built from this entry; dropped whenever the entry changes.
    state: ClusterState | None = None


class MemoryClusterRegistry:
    """``ClusterRegistry`` in a dict. ``clock`` is injectable so tests can age heartbeats."""

    def __init__(
        self,
        settings: RegistrySettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or RegistrySettings()
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        # Operator state, kept apart from what agents report (as in the Redis layout).
        self._drains: dict[str, str] = {}

    async def record(self, report: ClusterReport) -> ReportOutcome:
        entry = self._entries.get(report.cluster_id)
        check_report(report, self.settings, known=entry is not None)
        now = self._clock()
        current = counters_of(report.load.versions) if report.load else {}
        if entry is None:
            assert report.info is not None  # check_report refused a first report without it
            entry = _Entry(info=report.info, boot_id=report.boot_id, last_seen=now)
            self._entries[report.cluster_id] = entry
            return self._store(entry, report, now, {}, current, boot_changed=False)
        boot_changed = report.boot_id != entry.boot_id
        previous = {} if boot_changed else entry.counters
        if not boot_changed:
            self._check_flood(entry, report, now)
            check_progress(previous, current)
        else:
            entry.previous_boot_id, entry.boot_id = entry.boot_id, report.boot_id
            entry.boot_changes += 1
        return self._store(entry, report, now, previous, current, boot_changed)

    def _check_flood(self, entry: _Entry, report: ClusterReport, now: float) -> None:
        state_change = report.admin_state not in (None, entry.agent_admin_state)
        if (
            report.info is None
            and not state_change
            and now - entry.last_seen < self.settings.report_gap
        ):
            raise InvalidArgument("seq", "reports faster than half the heartbeat interval")

    def _store(
        self,
        entry: _Entry,
        report: ClusterReport,
        now: float,
        previous: dict[str, tuple[int, int, int, int]],
        current: dict[str, tuple[int, int, int, int]],
        boot_changed: bool,
    ) -> ReportOutcome:
        entry.last_seen, entry.state = now, None
        if report.info is not None:
            entry.info = report.info
        if report.load is not None:
            entry.load = report.load.stamped(now)
        if report.admin_state is not None:
            entry.agent_admin_state = report.admin_state
        if report.weight_percent is not None:
            entry.weight_percent = report.weight_percent or None
        entry.counters = merge_counters(previous, current)
        reason = self._drains.get(report.cluster_id)
        return ReportOutcome(
            cluster_id=report.cluster_id,
            reported_at=now,
            boot_changed=boot_changed,
            deltas=deltas(previous, current),
            drained=reason is not None,
            drain_reason=reason or "",
        )

    async def get(self, cluster_id: str) -> ClusterState:
        entry = self._entries.get(cluster_id)
        if entry is None:
            raise NotFound("cluster", cluster_id)
        return self._state(entry, self._clock())

    async def list(self) -> list[ClusterState]:
        now = self._clock()
        return [self._state(entry, now) for entry in self._entries.values()]

    def _state(self, entry: _Entry, now: float) -> ClusterState:
        # Every replica re-reads the whole fleet on a timer; most clusters have not reported
        # since, so their last state is handed out again (the same object) unless it aged
        # into staleness.
        live = now - entry.last_seen < self.settings.stale_after
        if entry.state is not None and entry.state.live == live:
            return entry.state
        reason = self._drains.get(entry.info.id)
        entry.state = ClusterState(
            info=entry.info,
            load=entry.load,
            boot_id=entry.boot_id,
            previous_boot_id=entry.previous_boot_id,
            boot_changes=entry.boot_changes,
            agent_admin_state=entry.agent_admin_state,
            drained=reason is not None,
            drain_reason=reason or "",
            weight_percent=entry.weight_percent,
            last_seen=entry.last_seen,
            live=live,
        )
        return entry.state

    async def set_drain(self, cluster_id: str, drain: bool, reason: str = "") -> ClusterState:
        if cluster_id not in self._entries:
            raise NotFound("cluster", cluster_id)
        if drain:
            self._drains[cluster_id] = reason
        else:
            self._drains.pop(cluster_id, None)
        self._entries[cluster_id].state = None
        return await self.get(cluster_id)

    async def forget(self, cluster_id: str) -> bool:
        self._drains.pop(cluster_id, None)
        return self._entries.pop(cluster_id, None) is not None

    async def aclose(self) -> None:
        return None
