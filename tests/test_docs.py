"""The README documents every setting and every command (generated lists would drift otherwise)."""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
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


def code_blocks(lang: str) -> list[str]:
    return [body for tag, body in re.findall(r"```(\w*)\n(.*?)```", README, re.S) if tag == lang]


def shell_commands() -> list[list[str]]:
    """Each command of the README's bash blocks as the shell would split it (continuations joined,
    comments dropped)."""
    out = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"\s&&\s|\s\|\|\s|;", line):
                words = shlex.split(part, comments=True)
                if words:
                    out.append(words)
    return out


def test_readme_blocks_paste_literally() -> None:
    """No ``[--flag]`` optional syntax or ``<placeholder>`` in a block meant to be pasted into a shell."""
    bad = [" ".join(w) for w in shell_commands() if any(x.startswith(("[", "<")) or x.endswith("]") for x in w)]
    assert not bad, f"README shell lines that fail when pasted: {bad}"


def _resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    cmd: click.Command = cli
    rest = list(words)
    while isinstance(cmd, click.Group) and rest and rest[0] in cmd.commands:
        cmd = cmd.commands[rest.pop(0)]
    return cmd, rest


def test_readme_steplake_commands_use_real_flags() -> None:
    seen, bad = 0, []
    for words in shell_commands():
        i = next((k for k, w in enumerate(words)  # steplake ..., .venv/bin/steplake ..., python -m steplake ...
                  if w.endswith("/steplake") or (w == "steplake" and (k == 0 or words[k - 1] == "-m"))), None)
        if i is None:
            continue
        cmd, rest = _resolve(words[i + 1:])
        known = {"--help", "-h"} | {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        seen += 1
        bad += [f"{' '.join(words)}: {w}" for w in rest if w.startswith("-") and w.split("=")[0] not in known]
        if isinstance(cmd, click.Group):
            bad.append(f"{' '.join(words)}: no such command")
    assert seen >= 10, seen
    assert not bad, bad


def test_readme_python_and_toml_blocks_parse() -> None:
    for block in code_blocks("python"):
        ast.parse(block)
    for block in code_blocks("toml"):
        tomllib.loads(block)
