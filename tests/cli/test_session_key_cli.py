"""``steplake keys create --trajectory ...``: keys bound to a session, listed with their binding, revoked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steplake.store.sqlite import SqliteStore
from tests.cli.test_cli import run


def test_create_list_and_revoke_a_bound_key(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    r = run("keys", "create", "--scope", "agent", "--name", "coder", "--trajectory", "sess-7", "--group", "g7",
            "--channel", "eval", "--metadata", '{"agent": "coder"}', "--db", db)
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    key_id, secret = lines[0].split(": ")[1], lines[-1]
    binding = {"trajectory_id": "sess-7", "group_id": "g7", "channel": "eval", "metadata": {"agent": "coder"}}
    assert json.loads(next(ln for ln in lines if ln.startswith("binding: "))[len("binding: "):]) == binding
    listed = run("keys", "list", "--db", db).stdout
    row = next(ln for ln in listed.splitlines() if ln.startswith(key_id))
    assert json.loads(row[row.index("{"):]) == binding and secret not in listed
    s = SqliteStore(db)
    s.open()
    try:
        assert s.lookup_key(secret).binding == binding and s.has_keys() is False
    finally:
        s.close()
    assert run("keys", "revoke", key_id, "--db", db).exit_code == 0
    assert "BINDING" in run("keys", "list", "--db", db).stdout


def test_a_plain_key_lists_no_binding(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    assert run("keys", "create", "--scope", "trainer", "--db", db).exit_code == 0
    row = run("keys", "list", "--db", db).stdout.strip().splitlines()[-1]
    assert row.split()[-1] == "-"


@pytest.mark.parametrize("args, message", [
    (["--scope", "admin", "--trajectory", "t1"], "must have --scope agent"),
    (["--scope", "trainer", "--trajectory", "t1"], "must have --scope agent"),
    (["--scope", "agent", "--group", "g"], "give --trajectory too"),
    (["--scope", "agent", "--trajectory", "t1", "--metadata", "[1]"], "--metadata must be a JSON object"),
    (["--scope", "agent", "--trajectory", "t1", "--metadata", "{nope"], "--metadata must be a JSON object"),
    (["--scope", "agent", "--trajectory", "bad id!"], "not a valid id"),
    (["--scope", "agent", "--trajectory", "t1", "--channel", "a b"], "not a valid channel"),
])
def test_bad_bindings_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    db = str(tmp_path / "keys.db")
    r = run("keys", "create", *args, "--db", db)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("steplake: error: ") and message in lines[0], r.stderr
    if Path(db).exists():  # refused by the store, after keys create opened (created) the database
        assert len(run("keys", "list", "--db", db).stdout.strip().splitlines()) == 1  # the header: no key
