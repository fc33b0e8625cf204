"""Host load collection: cgroup v2 limits win over host figures when present."""

from __future__ import annotations

from pathlib import Path

from regional_agent.collectors import HostCollector, cgroup_cpu_limit, cgroup_memory_limit


def write_cgroup(root: Path, cpu_max: str, memory_max: str, current: int, usage: int) -> None:
    (root / "cpu.max").write_text(cpu_max + "\n")
    (root / "memory.max").write_text(memory_max + "\n")
    (root / "memory.current").write_text(f"{current}\n")
    (root / "cpu.stat").write_text(f"usage_usec {usage}\nuser_usec 1\n")


def test_cgroup_limits_are_read(tmp_path: Path) -> None:
    write_cgroup(tmp_path, "200000 100000", str(4 << 30), 1 << 30, 0)
    assert cgroup_cpu_limit(tmp_path) == 2.0
    assert cgroup_memory_limit(tmp_path) == 4 << 30
    collector = HostCollector(tmp_path)
    assert collector.capacity().cores == 2.0
    assert collector.sample().mem == 0.25


def test_unlimited_cgroup_falls_back_to_the_host(tmp_path: Path) -> None:
    write_cgroup(tmp_path, "max 100000", "max", 1, 0)
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_memory_limit(tmp_path) is None
    sample = HostCollector(tmp_path).sample()
    assert 0.0 <= sample.cpu <= 1.0
    assert 0.0 < sample.mem <= 1.0


def test_no_cgroup_files_means_host_figures(tmp_path: Path) -> None:
    collector = HostCollector(tmp_path / "absent")
    assert collector.capacity().cores >= 1
    assert 0.0 <= collector.sample().cpu <= 1.0
