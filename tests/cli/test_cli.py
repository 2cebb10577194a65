"""The CLI with click's CliRunner, plus one real ``steplake serve`` subprocess."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from steplake.cli import cli
from steplake.config import Settings
from tests.api.servers import serve_process, steplake_cmd, subprocess_env

CLEAN_ENV: dict[str, str | None] = {f"STEPLAKE_{n.upper()}": None for n in Settings.model_fields} | {
    "STEPLAKE_URL": None, "STEPLAKE_API_KEY": None}


def run(*args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={**CLEAN_ENV, **env})


def test_help_lists_commands_and_settings() -> None:
    r = run("--help")
    assert r.exit_code == 0
    for command in ("serve", "stats", "keys", "demo"):
        assert command in r.output
    r = run("serve", "--help")
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in r.output, name
        assert f"STEPLAKE_{name.upper()}" in r.output.replace("\n", " ").replace("  ", ""), name


@pytest.mark.parametrize("args", [
    ["serve", "--port", "abc"],
    ["serve", "--port", "70000"],
    ["serve", "--log-level", "loud"],
    ["serve", "--idle-timeout", "-1"],
    ["serve", "--retention", "nonsense"],
    ["serve", "--rewards", "[1]"],
    ["serve", "--bogus"],
    ["serve", "--config", "/nonexistent/steplake.toml"],
    ["keys", "create", "--scope", "root"],
    ["nosuchcommand"],
])
def test_bad_usage_exits_2_with_one_line(args: list[str], tmp_path: Path) -> None:
    r = run(*args, STEPLAKE_DB=str(tmp_path / "x.db"))
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("steplake: error: "), r.stderr
    assert "Traceback" not in r.output


def test_public_host_needs_a_key(tmp_path: Path) -> None:
    db = str(tmp_path / "k.db")
    r = run("serve", "--host", "0.0.0.0", "--db", db)
    assert r.exit_code == 2 and "without an API key" in r.stderr


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    r = run("keys", "create", "--scope", "trainer", "--name", "ci", "--db", db)
    assert r.exit_code == 0, r.output
    key_id = r.stdout.splitlines()[0].split(": ")[1]
    secret = r.stdout.strip().splitlines()[-1]
    assert len(secret) >= 20 and secret not in run("keys", "list", "--db", db).stdout
    listed = run("keys", "list", STEPLAKE_DB=db).stdout
    assert key_id in listed and "trainer" in listed and "ci" in listed
    assert run("keys", "revoke", key_id, "--db", db).exit_code == 0
    again = run("keys", "revoke", key_id, "--db", db)
    assert again.exit_code == 2 and "no active key" in again.stderr


def test_stats_unreachable_server() -> None:
    r = run("stats", "--url", "http://127.0.0.1:9")
    assert r.exit_code == 2 and "cannot reach steplake" in r.stderr


def test_real_serve_process(tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    with serve_process(db) as url:
        r = run("stats", "--url", url)
        assert r.exit_code == 0, r.output
        assert "steps" in r.stdout and "trajectories.open" in r.stdout
        j = run("stats", "--url", url, "--json")
        assert '"steps": 0' in j.stdout
    bad = subprocess.run(steplake_cmd("serve", "--port", "nope"), env=subprocess_env(), capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("steplake: error:") and "Traceback" not in bad.stderr
    version = subprocess.run(steplake_cmd("--version"), env=subprocess_env(), capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("steplake ")
