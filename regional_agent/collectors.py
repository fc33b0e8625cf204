"""Host load: CPU and memory in use, as fractions of what the workers may use.

In a container the host's numbers lie (a pod limited to 2 cores on a 64-core node looks idle
while it throttles), so cgroup v2 limits win when ``/sys/fs/cgroup`` has them: CPU from
``cpu.stat`` usage against ``cpu.max``, memory from ``memory.current`` against ``memory.max``.
Otherwise psutil's host-wide figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True, slots=True)
class HostSample:
    cpu: float
    mem: float


@dataclass(frozen=True, slots=True)
class Capacity:
    cores: float
    memory_bytes: int


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """Cores allowed by ``cpu.max`` (``"200000 100000"`` -> 2.0); None when unlimited."""
    text = _read(root / "cpu.max")
    if not text:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max" or not period:
        return None
    return int(quota) / int(period)


def cgroup_memory_limit(root: Path = CGROUP_ROOT) -> int | None:
    text = _read(root / "memory.max")
    return int(text) if text and text != "max" else None


def _cgroup_cpu_usec(root: Path) -> int | None:
    text = _read(root / "cpu.stat")
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    return None


class HostCollector:
    """Samples host or cgroup load; each ``sample()`` covers the time since the last one."""

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self._root = root
        self._cpu_limit = cgroup_cpu_limit(root)
        self._mem_limit = cgroup_memory_limit(root)
        self._last: tuple[float, int] | None = None
        psutil.cpu_percent(interval=None)  # primes psutil's delta; the first call says 0.0

    def capacity(self) -> Capacity:
        cores = self._cpu_limit or float(psutil.cpu_count() or 1)
        memory = self._mem_limit or psutil.virtual_memory().total
        return Capacity(cores=cores, memory_bytes=int(memory))

    def sample(self) -> HostSample:
        return HostSample(cpu=_fraction(self._cpu()), mem=_fraction(self._mem()))

    def _cpu(self) -> float:
        usage = _cgroup_cpu_usec(self._root) if self._cpu_limit else None
        if usage is None or self._cpu_limit is None:
            return psutil.cpu_percent(interval=None) / 100
        now = time.monotonic()
        last, self._last = self._last, (now, usage)
        if last is None or now <= last[0]:
            return 0.0
        return (usage - last[1]) / 1e6 / (now - last[0]) / self._cpu_limit

    def _mem(self) -> float:
        if self._mem_limit:
            current = _read(self._root / "memory.current")
            if current:
                return int(current) / self._mem_limit
        return psutil.virtual_memory().percent / 100


def _fraction(value: float) -> float:
    # The wire contract wants 0..1; throttling bursts and rounding can overshoot slightly.
    return min(1.0, max(0.0, value))
