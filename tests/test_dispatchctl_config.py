"""Where dispatchctl finds its server and credential, and its shell completion."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from dispatcher.cli.ctl import build_parser, main
from dispatcher.cli.ctl_config import connection


def parsed(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args([*argv, "quota"])


def test_flags_beat_environment_beat_the_file(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("ca")
    config = tmp_path / "ctl.yaml"
    config.write_text("server: file:1\ntoken: file-token\ntls: {ca_file: ca.crt}\n")
    env = {"DISPATCHCTL_SERVER": "env:2"}
    from_file = connection(parsed("--config", str(config)), env={})
    assert (from_file.server, from_file.token) == ("file:1", "file-token")
    assert from_file.ca_file == tmp_path / "ca.crt"  # relative to the file, not the cwd
    from_env = connection(parsed("--config", str(config)), env=env)
    assert (from_env.server, from_env.token) == ("env:2", "file-token")
    from_flag = connection(parsed("--config", str(config), "--server", "flag:3"), env=env)
    assert from_flag.server == "flag:3"
    assert connection(parsed(), env={"DISPATCHCTL_CONFIG": str(config)}).server == "file:1"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("server: x:1\ncolour: red\n", "colour: unknown field"),
        ("- a\n- b\n", "must be a mapping"),
        ("tls: {ca_file: missing.crt}\n", "no such file"),
        ("tls: {cert_file: a.crt}\n", "needs both --tls-cert and --tls-key"),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, needle: str
) -> None:
    (tmp_path / "a.crt").write_text("cert")
    config = tmp_path / "ctl.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(config), "quota"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert needle in err[0]


def test_completion_prints_a_script_naming_the_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "dispatchctl" in script
    for command in ("quota", "weights", "watch", "explain"):
        assert command in script
