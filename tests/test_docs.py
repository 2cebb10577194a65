"""The README documents every setting and every command (generated lists would drift otherwise)."""

from __future__ import annotations

from pathlib import Path

import click

from steplake.cli import cli
from steplake.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [n for n in Settings.model_fields if f"`--{n.replace('_', '-')}`" not in README]
    assert not missing, f"settings missing from the README table: {missing}"


def test_every_command_is_documented() -> None:
    names = []
    for name, cmd in cli.commands.items():
        if isinstance(cmd, click.Group):
            names += [f"{name} {sub}" for sub in cmd.commands]
        else:
            names.append(name)
    missing = [n for n in names if n.split()[0] not in README or (" " in n and n.split()[1] not in README)]
    assert not missing, f"commands missing from the README: {missing}"


def test_readme_commands_match_ci() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "bash .ci/run" in README and "bash scripts/setup.sh" in README
    assert "scripts/setup.sh" in ci and "pytest" in ci
