"""``--prompt-mode`` and ``--renderer``: flags, variables and config keys; bad values exit 2 with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from steplake.config import build_settings
from steplake.errors import ConfigError
from tests.cli.test_cli import run


def test_defaults_and_sources(tmp_path: Path) -> None:
    assert build_settings({}, {}).prompt_mode == "chat"
    assert build_settings({}, {}).renderer is None
    s = build_settings({}, {"STEPLAKE_PROMPT_MODE": "tokens", "STEPLAKE_RENDERER": "qwen3"})
    assert (s.prompt_mode, s.renderer) == ("tokens", "qwen3")
    s = build_settings({"prompt_mode": "auto", "renderer": "pkg.mod:Cls"}, {"STEPLAKE_PROMPT_MODE": "tokens"})
    assert (s.prompt_mode, s.renderer) == ("auto", "pkg.mod:Cls")
    cfg = tmp_path / "s.toml"
    cfg.write_text('prompt_mode = "tokens"\n')
    assert build_settings({"config": str(cfg)}, {}).prompt_mode == "tokens"


@pytest.mark.parametrize("env", [{"STEPLAKE_PROMPT_MODE": "fast"}, {"STEPLAKE_RENDERER": "a:b:c"},
                                 {"STEPLAKE_RENDERER": ":Cls"}, {"STEPLAKE_RENDERER": "two words"}])
def test_bad_values_are_one_line_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as e:
        build_settings({}, env)
    assert "\n" not in e.value.message


@pytest.mark.parametrize("args", [
    ["serve", "--prompt-mode", "fast"],
    ["serve", "--renderer", "mod:"],
    ["serve", "--renderer", "steplake_no_such_module_xyz:Renderer"],
    ["serve", "--renderer", "steplake.render:NoSuchClass"],
])
def test_bad_flags_exit_2_with_one_line(args: list[str], tmp_path: Path) -> None:
    r = run(*args, STEPLAKE_DB=str(tmp_path / "x.db"))
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("steplake: error: "), r.stderr
    assert "--prompt-mode" in lines[0] or "--renderer" in lines[0]


def test_bad_env_exits_2(tmp_path: Path) -> None:
    r = run("serve", STEPLAKE_DB=str(tmp_path / "x.db"), STEPLAKE_PROMPT_MODE="sometimes")
    assert r.exit_code == 2 and "--prompt-mode must be one of chat, tokens, auto" in r.stderr
