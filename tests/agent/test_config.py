"""The agent's config file: defaults, and errors naming file, field and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dispatcher.errors import ConfigError
from dispatcher.fleet.model import Lane
from regional_agent.config import load_agent_config

MINIMAL = """
cluster_id: westeurope-1
region: westeurope
endpoint: agents.westeurope.example:443
slots: 32
lanes: {heavy: 8}
token: s3cret-token
interval: 250ms
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_a_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, MINIMAL))
    assert config.interval == 0.25
    assert config.lanes == {Lane.HEAVY: 8}
    assert config.dispatcher == "127.0.0.1:50051"
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ("slots: 0", "slots", "greater than or equal to 1"),
        ("interval: soon", "interval", "duration"),
        ("local_api: 0.0.0.0:8787", "local_api", "loopback"),
        ("lanes: {huge: 1}", "lanes.huge", "invalid name"),
        ("colour: blue", "colour", "Extra inputs"),
        ("tls: {cert_file: /etc/hostname}", "tls", "go together"),
        ("tls: {ca_file: /nonexistent/ca.crt}", "tls.ca_file", "does not point to a file"),
    ],
)
def test_errors_name_file_field_and_reason(
    tmp_path: Path, extra: str, field: str, reason: str
) -> None:
    lines = [line for line in MINIMAL.splitlines() if not line.startswith(extra.split(":")[0])]
    path = write(tmp_path, "\n".join([*lines, extra]))
    with pytest.raises(ConfigError) as caught:
        load_agent_config(path)
    assert caught.value.source == str(path)
    assert caught.value.field.startswith(field)
    assert reason in caught.value.reason


def test_run_with_a_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster_id: x\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from regional_agent.cli import main; sys.exit(main())",
            "run",
            "--config",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"{path}: region: Field required" in result.stderr
