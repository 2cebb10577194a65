"""What the CLI says: flags named as typed (``--overwrite``), counts that agree with their nouns."""

from __future__ import annotations

from pathlib import Path

import pytest

from steplake.cli import plural
from tests.cli.test_cli import run


def test_an_existing_export_names_the_flag_that_replaces_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("keys", "create", "--scope", "admin", "--db", "pool.db").exit_code == 0
    first = run("export", "--db", "pool.db", "--out", "out.jsonl")
    assert first.exit_code == 0 and "rows: 0 (0 trajectories, 0 groups, 0 tokens)" in first.stdout, first.output
    again = run("export", "--db", "pool.db", "--out", "out.jsonl")
    assert again.exit_code == 2 and "--overwrite" in again.stderr, again.stderr
    assert run("export", "--db", "pool.db", "--out", "out.jsonl", "--overwrite").exit_code == 0


def test_plural() -> None:
    assert [plural(n, "trajectory", "trajectories") for n in (0, 1, 2)] == [
        "0 trajectories", "1 trajectory", "2 trajectories"]
    assert plural(1, "token") == "1 token" and plural(3, "token") == "3 tokens"
