"""dispatchctl against a real ``dispatcher serve`` process, as an operator runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from dispatcher.cli.ctl import main
from tests.serving import serving, sqlite_url

CONFIG = """
pools:
  - id: azure/eastus2/gpt-4o
    tpm: 450000
    rpm: 2700
    mode: fixed_minute
    refund_unused: false
  - id: openai/org-x
    tpm: 100000
routes:
  chat-default:
    backends:
      - {name: llama3-local, weight: 90}
      - {name: gpt-4o, weight: 10}
agents:
  auditor:
    fallback: auditor-basic
auth:
  operator_tokens:
    viewer: {token: read-token, role: read}
    oncall: {token: admin-token, role: admin}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("ctl")
    config = tmp / "dispatcher.yaml"
    config.write_text(CONFIG)
    with serving("--config", str(config), "--database-url", sqlite_url(tmp)) as (_, address):
        yield address


def ctl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_quota_json_lists_every_pool_with_its_numbers(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = ctl(capsys, "--server", server, "--token", "read-token", "-o", "json", "quota")
    assert code == 0
    pools = {p["pool_id"]: p for p in json.loads(out)["pools"]}
    assert set(pools) == {"azure/eastus2/gpt-4o", "openai/org-x"}
    tpm = next(d for d in pools["openai/org-x"]["dimensions"] if d["name"] == "tpm")
    assert {"limit", "used", "reserved", "remaining"} <= set(tpm)
    assert tpm["limit"] == 100000


def test_quota_table_names_pools_and_dimensions(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = ctl(capsys, "--server", server, "--token", "read-token", "quota")
    assert code == 0
    assert "azure/eastus2/gpt-4o" in out
    assert "tpm" in out
    assert "rpm" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("limits", "set", "openai/org-x", "tpm=-5"), "INVALID_ARGUMENT: limits.tpm"),
        (("limits", "set", "nowhere", "tpm=5"), "NOT_FOUND"),
        (("drain", "no-such-cluster"), "NOT_FOUND"),
    ],
)
def test_refused_changes_print_one_line_and_change_nothing(
    server: str, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], needle: str
) -> None:
    code, _, err = ctl(capsys, "--server", server, "--token", "admin-token", *args)
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert needle in err
    _, out, _ = ctl(capsys, "--server", server, "--token", "read-token", "-o", "json", "quota")
    pools = {p["pool_id"]: p for p in json.loads(out)["pools"]}
    tpm = next(d for d in pools["openai/org-x"]["dimensions"] if d["name"] == "tpm")
    assert tpm["limit"] == 100000


def test_read_token_cannot_change_limits(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--server", server, "--token", "read-token", "limits", "set", "openai/org-x", "tpm=1")
    code, _, err = ctl(capsys, *args)
    assert code == 1
    assert "PERMISSION_DENIED" in err


def test_wrong_credential_is_one_clear_line(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = ctl(capsys, "--server", server, "--token", "guess", "quota")
    assert code == 1
    assert err.strip().startswith("dispatchctl: error: credential refused")


def test_unreachable_server_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = ctl(capsys, "--server", "127.0.0.1:1", "--timeout", "2", "quota")
    assert code == 1
    assert "cannot reach the dispatcher at 127.0.0.1:1" in err


def test_malformed_limit_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = ctl(capsys, "limits", "set", "openai/org-x", "tpm")
    assert code == 2
    assert "expected DIM=NUMBER" in err


def test_health_reports_every_service(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = ctl(capsys, "--server", server, "-o", "json", "health")
    assert code == 0
    assert set(json.loads(out).values()) == {"SERVING"}


def test_weights_set_replaces_the_routes_weights(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--server", server, "--token", "admin-token", "-o", "json", "weights", "set")
    code, out, err = ctl(capsys, *args, "chat-default", "llama3-local=1", "gpt-4o=3")
    assert code == 0, err
    reply = json.loads(out)
    assert {w["backend"]: w["weight"] for w in reply["weights"]} == {
        "llama3-local": 1,
        "gpt-4o": 3,
    }


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("chat-default", "llama3-local=0", "gpt-4o=0"), 1, "INVALID_ARGUMENT: weights"),
        (("chat-default", "claude=4"), 1, "weights[0].backend"),
        (("no-route", "gpt-4o=1"), 1, "NOT_FOUND"),
        (("chat-default", "gpt-4o=-5"), 2, "expected BACKEND=WEIGHT"),
    ],
    ids=["sum to zero", "unknown backend", "unknown route", "negative"],
)
def test_bad_weights_are_one_line_and_a_non_zero_exit(
    server: str, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], code: int, needle: str
) -> None:
    got, _, err = ctl(capsys, "--server", server, "--token", "admin-token", "weights", "set", *args)
    assert got == code
    assert len(err.strip().splitlines()) == 1
    assert needle in err


def test_breakers_set_changes_the_thresholds_given(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--server", server, "--token", "admin-token", "-o", "json", "breakers", "set")
    code, out, err = ctl(capsys, *args, "auditor", "--failure-rate", "0.2", "--open-for", "45")
    assert code == 0, err
    reply = json.loads(out)
    assert (reply["failure_rate"], reply["open_for"], reply["window"]) == (0.2, "45s", 200)
    code, _, err = ctl(capsys, *args, "auditor", "--failure-rate", "1.5")
    assert code == 1
    assert "settings.failure_rate" in err


def test_watch_prints_events_as_json_lines(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A real ``dispatchctl watch`` process; the test keeps making a LIMITS event (setting a
    limit to its configured value changes nothing) until the watcher has printed one."""
    cmd = [shutil.which("dispatchctl") or "dispatchctl", "--server", server, "--token"]
    cmd += ["read-token", "-o", "json", "watch", "--type", "limits", "--count", "1"]
    watcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        change = ("--server", server, "--token", "admin-token", "limits", "set")
        while watcher.poll() is None:
            assert time.monotonic() < deadline, "the watcher printed nothing"
            assert ctl(capsys, *change, "azure/eastus2/gpt-4o", "tpm=450000")[0] == 0
            time.sleep(0.1)  # pacing the retries, not waiting for a result
        out, _ = watcher.communicate(timeout=10)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    (line,) = out.strip().splitlines()
    event = json.loads(line)
    assert (event["type"], event["pool_id"]) == ("limits", "azure/eastus2/gpt-4o")
    assert watcher.returncode == 0
