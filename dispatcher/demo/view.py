"""The demo's live terminal view (rich): clusters, pools, counts and the latest events."""

from __future__ import annotations

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table

from dispatcher.demo.run import Demo


def render(demo: Demo) -> Group:
    return Group(_counts(demo), _clusters(demo), _pools(demo), _events(demo))


def _counts(demo: Demo) -> Table:
    s = demo.summary()
    table = Table(title=f"dispatcher demo  {s['seconds']:.0f}s", title_justify="left")
    for column in ("decisions", "fallback", "spillovers", "breaker trips", "handovers", "errors"):
        table.add_column(column, justify="right")
    table.add_row(
        str(s["decisions"]),
        str(s["outcomes"].get("fallback", 0)),
        str(s["spillovers"]),
        str(s["breaker_trips"]),
        str(s["handovers"]),
        str(s["errors"]),
    )
    return table


def _clusters(demo: Demo) -> Table:
    table = Table(title="clusters", title_justify="left")
    for column in ("cluster", "slots", "in flight", "", "routed"):
        table.add_column(column, justify="left" if column == "cluster" else "right")
    for cid, cluster in demo.clusters.items():
        slots = cluster.plan.slots
        table.add_row(
            cid,
            str(slots),
            str(cluster.in_flight),
            ProgressBar(total=slots, completed=min(cluster.in_flight, slots), width=20),
            str(demo.load.stats.per_cluster[cid]),
        )
    return table


def _pools(demo: Demo) -> Table:
    table = Table(title="quota (tpm)", title_justify="left")
    for column in ("pool", "limit", "remaining", ""):
        table.add_column(column, justify="left" if column == "pool" else "right")
    for pool in demo.observed.quota:
        for dim in pool.dimensions:
            if dim.name != "tpm":
                continue
            full = 1.0 - dim.remaining / dim.effective_limit if dim.effective_limit else 1.0
            table.add_row(
                pool.pool_id,
                f"{dim.limit:,.0f}",
                f"{dim.remaining:,.0f}",
                ProgressBar(total=1.0, completed=min(1.0, max(0.0, full)), width=20),
            )
    return table


def _events(demo: Demo) -> Table:
    table = Table(title="latest", title_justify="left", show_header=False)
    table.add_column("event")
    for line in demo.observed.script[-3:]:
        table.add_row(f"[bold]script:[/bold] {line}")
    for line in demo.load.stats.recent[-6:]:
        table.add_row(line)
    return table
