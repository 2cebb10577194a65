"""Commands that work on a pool refuse a database that does not exist (exit 2, one line) instead of creating
an empty one; only ``serve``, ``demo`` and ``keys create`` create one."""

from __future__ import annotations

import uuid
from pathlib import Path

import click
import pytest

from steplake.cli import cli
from tests.cli.test_cli import run
from tests.conftest import PG_URL

CREATORS = {"serve", "demo", "keys create"}
ARGS: dict[str, list[str]] = {  # what each command needs besides --db to get as far as opening it
    "export": ["--out", "out.jsonl"],
    "keys revoke": ["key_0123"],
    "prune": ["--retention", "train=30"],
}


def db_commands() -> list[str]:
    """Every command (group/sub) that has a --db option."""
    found = []

    def walk(cmd: click.Command, name: str) -> None:
        if isinstance(cmd, click.Group):
            for sub_name, sub in cmd.commands.items():
                walk(sub, f"{name} {sub_name}".strip())
        elif any("--db" in getattr(p, "opts", ()) for p in cmd.params):
            found.append(name)

    walk(cli, "")
    return sorted(found)


def test_the_list_covers_the_commands_that_must_refuse() -> None:
    names = db_commands()
    assert set(names) >= CREATORS and {"export", "keys list", "keys revoke", "prune"} <= set(names), names


@pytest.mark.parametrize("command", sorted(set(db_commands()) - CREATORS))
def test_a_missing_sqlite_file_is_an_error(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "pool.db"
    monkeypatch.chdir(tmp_path)
    r = run(*command.split(), *ARGS.get(command, []), "--db", str(db))
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("steplake: error: no database at"), r.stderr
    assert not db.exists() and not (tmp_path / "out.jsonl").exists()
    # STEPLAKE_DB too
    r = run(*command.split(), *ARGS.get(command, []), STEPLAKE_DB=str(db))
    assert r.exit_code == 2 and "no database at" in r.stderr and not db.exists()


def test_a_folder_is_not_a_database(tmp_path: Path) -> None:
    r = run("keys", "list", "--db", str(tmp_path))
    assert r.exit_code == 2 and "is a directory" in r.stderr


def test_migrate_from_a_missing_file_is_an_error(tmp_path: Path) -> None:
    db = tmp_path / "pool.db"
    r = run("migrate", "--from", str(db), "--to", "postgresql://postgres@127.0.0.1:1/x")
    assert r.exit_code == 2 and "no SQLite pool at" in r.stderr and not db.exists()


def test_the_creating_commands_say_so_and_keys_create_creates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for command in CREATORS:
        help_text = " ".join(run(*command.split(), "--help").output.split())
        assert "created if" in help_text or "creates the database" in help_text, (command, help_text)
    db = tmp_path / "new.db"
    assert run("keys", "create", "--scope", "admin", "--db", str(db)).exit_code == 0 and db.is_file()
    listed = run("keys", "list", "--db", str(db))  # now it exists: every other command works on it
    assert listed.exit_code == 0 and "admin" in listed.stdout
    monkeypatch.chdir(tmp_path)
    exported = run("export", "--db", str(db), "--out", "out.jsonl")
    assert exported.exit_code == 0 and "rows: 0" in exported.stdout


@pytest.mark.postgres
@pytest.mark.skipif(not PG_URL, reason="STEPLAKE_TEST_PG_URL is not set (.ci/run sets it)")
def test_a_missing_postgres_schema_is_an_error() -> None:
    import psycopg

    base = PG_URL
    assert base

    schema = "nopool_" + uuid.uuid4().hex[:8]
    r = run("keys", "list", "--db", f"{base}?schema={schema}")
    assert r.exit_code == 2 and f"no steplake pool in schema '{schema}'" in r.stderr, r.stderr
    assert "postgres:postgres@" not in r.stderr
    with psycopg.connect(base, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    assert row is None, "the schema was created"
