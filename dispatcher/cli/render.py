"""How dispatchctl shows replies: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.progress_bar import ProgressBar
from rich.table import Table

__all__ = [
    "Table",
    "as_json",
    "breakers_table",
    "clusters_table",
    "explain_table",
    "print_table",
    "quota_table",
    "sessions_table",
]
from rich.text import Text

from dispatcher.v1 import admin_pb2, common_pb2, routing_pb2

BAR_WIDTH = 20


def as_json(message: Message) -> str:
    return json.dumps(
        MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        ),
        indent=2,
    )


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:,.2f}"


def _seconds(value: float) -> str:
    return "full" if value <= 0 else f"{value:.1f}s"


def _share_used(dim: admin_pb2.QuotaDimension) -> float:
    """How full the bar is: the share of the effective limit not available right now."""
    if dim.effective_limit <= 0:
        return 1.0
    return min(1.0, max(0.0, 1.0 - dim.remaining / dim.effective_limit))


def quota_table(pools: Iterable[admin_pb2.PoolQuota]) -> Table:
    table = Table(title="quota", title_justify="left")
    # Pool ids are what operators grep for: never wrap them, shrink the bar instead.
    table.add_column("pool", no_wrap=True)
    table.add_column("dim", no_wrap=True)
    for column in ("limit", "used", "reserved", "remaining"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("")
    table.add_column("refill", justify="right", no_wrap=True)
    for pool in pools:
        label = Text(pool.pool_id)
        if pool.degraded:
            label.append(" (degraded)", style="yellow")
        if pool.HasField("blocked_until"):
            label.append(" (blocked)", style="red")
        for dim in pool.dimensions:
            used = (
                min(1.0, max(0.0, 1.0 - dim.remaining / dim.effective_limit))
                if dim.effective_limit
                else 1.0
            )
            table.add_row(
                label,
                dim.name,
                _number(dim.limit),
                _number(dim.used),
                _number(dim.reserved),
                Text(_number(dim.remaining), style="red" if dim.remaining < 0 else ""),
                ProgressBar(total=1.0, completed=used, width=BAR_WIDTH),
                _seconds(dim.time_to_refill.ToTimedelta().total_seconds()),
            )
            label = Text("")
    return table


ADMIN_STATES = {
    common_pb2.ADMIN_STATE_READY: "ready",
    common_pb2.ADMIN_STATE_DRAIN: "drain",
    common_pb2.ADMIN_STATE_MAINT: "maint",
}


def clusters_table(clusters: Iterable[admin_pb2.ClusterStatus]) -> Table:
    table = Table(title="clusters", title_justify="left")
    for column in (
        "cluster",
        "region",
        "state",
        "live",
        "in flight",
        "slots",
        "cpu",
        "mem",
        "heartbeat",
    ):
        table.add_column(
            column, justify="left" if column in ("cluster", "region", "state") else "right"
        )
    for c in clusters:
        table.add_row(
            c.cluster.id,
            c.cluster.region,
            ADMIN_STATES.get(c.admin_state, "?"),
            Text("yes", style="green") if c.live else Text("stale", style="red"),
            str(c.in_flight),
            str(c.slots),
            f"{c.cpu_utilization:.0%}",
            f"{c.mem_utilization:.0%}",
            f"{c.heartbeat_age.ToTimedelta().total_seconds():.1f}s ago",
        )
    return table


BREAKER_STATES = {
    admin_pb2.BREAKER_STATE_CLOSED: Text("closed", style="green"),
    admin_pb2.BREAKER_STATE_HALF_OPEN: Text("half-open", style="yellow"),
    admin_pb2.BREAKER_STATE_OPEN: Text("open", style="red"),
}


def breakers_table(breakers: Iterable[admin_pb2.BreakerStatus]) -> Table:
    table = Table(title="breakers", title_justify="left")
    for column in (
        "agent version",
        "state",
        "failures",
        "slow",
        "calls",
        "trips at",
        "opens until",
    ):
        table.add_column(
            column, justify="left" if column in ("agent version", "state") else "right"
        )
    for b in breakers:
        until = b.open_until.ToDatetime().strftime("%H:%M:%S") if b.HasField("open_until") else ""
        table.add_row(
            b.agent_version,
            BREAKER_STATES.get(b.state, Text("?")),
            f"{b.failure_rate:.1%}",
            f"{b.slow_call_rate:.1%}",
            f"{b.calls}/{b.settings.window}",
            f"{b.settings.failure_rate:.0%} of >= {b.settings.min_calls}",
            until,
        )
    return table


def sessions_table(sessions: Iterable[admin_pb2.Session]) -> Table:
    table = Table(title="sessions", title_justify="left")
    for column in ("session", "cluster", "boot id", "pinned (UTC)", "last used (UTC)", "handovers"):
        table.add_column(column, justify="right" if column == "handovers" else "left")
    for s in sessions:
        table.add_row(
            s.session_key,
            s.cluster_id,
            s.boot_id,
            s.pinned_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
            s.last_used_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
            str(s.handovers),
        )
    return table


def explain_table(explanation: admin_pb2.Explanation) -> Table:
    decision = explanation.decision
    title = (
        f"explain: backend {explanation.backend or '-'}, "
        f"{routing_pb2.RouteOutcome.Name(decision.outcome).removeprefix('ROUTE_OUTCOME_')}"
        f" -> {decision.cluster.id or 'none'}"
        + (f" ({decision.reason})" if decision.reason else "")
    )
    table = Table(title=title, title_justify="left")
    for column in ("cluster", "region", "version", "filtered", "score", "chosen"):
        table.add_column(column, justify="right" if column == "score" else "left")
    for c in explanation.candidates:
        table.add_row(
            c.cluster.id,
            c.cluster.region,
            c.agent_version,
            Text(c.filter_reason, style="red") if c.filter_reason else Text("eligible"),
            f"{c.score:.3f}" if not c.filter_reason else "",
            Text("first", style="green") if c.chosen else "",
        )
    return table


def print_table(table: Table) -> None:
    Console().print(table)
