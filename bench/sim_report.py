"""Summaries, the text table and the optional plot of a simulator run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.sim import SimResult
from bench.sim_workload import LONG

METRICS = ("p50_s", "p99_s", "p999_s", "interactive_p99_s", "wait_p99_s", "wait_over_60s_pct")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, int(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def summarise(result: SimResult) -> dict[str, float]:
    latencies = sorted(result.latencies)
    interactive = sorted(
        lat for lat, kind in zip(result.latencies, result.kinds, strict=True) if kind != LONG
    )
    waits = sorted(result.waits)
    over = sum(1 for w in waits if w > 60.0)
    return {
        "p50_s": percentile(latencies, 0.50),
        "p99_s": percentile(latencies, 0.99),
        "p999_s": percentile(latencies, 0.999),
        "interactive_p99_s": percentile(interactive, 0.99),
        "wait_p99_s": percentile(waits, 0.99),
        "wait_over_60s_pct": 100.0 * over / len(waits) if waits else 0.0,
        "tasks": float(len(latencies)),
    }


def average(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}


def table(report: dict[str, Any]) -> str:
    policies: dict[str, dict[str, float]] = report["policies"]
    jsq = policies.get("jsq_bound", {}).get("interactive_p99_s")
    head = f"{'policy':<22}" + "".join(f"{m:>19}" for m in METRICS) + f"{'inter/jsq':>11}"
    lines = [str(report["setup"]), head, "-" * len(head)]
    for name, row in policies.items():
        ratio = f"{row['interactive_p99_s'] / jsq:>11.2f}" if jsq else ""
        lines.append(f"{name:<22}" + "".join(f"{row[m]:>19.3f}" for m in METRICS) + ratio)
    lines.append(f"ratios: {report['ratios']}  wall: {report.get('wall_s', '?')} s")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> str | None:
    """Write a bar chart of interactive p99 and p99 per policy; a reason if it cannot."""
    try:
        import matplotlib  # type: ignore[import-not-found]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found]
    except ImportError:
        return f"--plot {path}: matplotlib is not installed; skipped (the JSON has the numbers)"
    policies: dict[str, dict[str, float]] = report["policies"]
    names = list(policies)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("interactive_p99_s", "p99_s"), strict=True):
        ax.bar(names, [policies[n][metric] for n in names])
        ax.set_yscale("log")
        ax.set_title(metric)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(str(report["setup"]), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return None
