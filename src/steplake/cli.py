"""``steplake`` command line: a thin layer over the Python API.

Commands: ``serve``, ``demo``, ``stats``, ``keys create|list|revoke``, ``prune``, ``audit``, ``migrate``,
``export``, ``rewards run`` and ``model serve`` (when the embedded-model package is importable). Every ``Settings`` field is a ``serve``/``demo`` flag and a
``STEPLAKE_<NAME>`` variable (flags win, then variables, then ``--config FILE``, then defaults).

Errors (bad flag values, unreachable server, bad settings) print one line, ``steplake: error: ...``, on
stderr and exit with status 2; no traceback.

Without any API key the server is open, so ``serve`` binds loopback addresses only: ``--host 0.0.0.0``
with no key in the database exits 2 (create one first with ``steplake keys create --scope admin``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import Settings, build_settings
from .errors import ConfigError, SteplakeError
from .training.cli import run_train_demo_cmd, train_demo_options

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
F = Callable[..., Any]


class SteplakeGroup(click.Group):
    """Runs commands with one-line errors and exit status 2 for usage, settings and connection errors."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name or "steplake", complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.format_message())
            return _exit(2, standalone_mode)
        except click.ClickException as e:
            click.echo(f"steplake: error: {e.format_message()}", err=True)
            return _exit(2, standalone_mode)
        except SteplakeError as e:
            click.echo(f"steplake: error: {e.message}", err=True)
            return _exit(2, standalone_mode)
        except click.exceptions.Abort:
            click.echo("steplake: aborted", err=True)
            return _exit(1, standalone_mode)
        return _exit(rv if isinstance(rv, int) else 0, standalone_mode)


def _exit(code: int, standalone_mode: bool) -> int:
    if standalone_mode:
        sys.exit(code)
    return code


# -- settings as flags ---------------------------------------------------------------------------------------
def _parse_retention(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, float] | None:
    if not values:
        return None
    from .pool.lifecycle import parse_retention

    try:
        return parse_retention(",".join(values))
    except SteplakeError as e:
        raise click.BadParameter(e.message) from None


def _parse_json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        raise click.BadParameter("expected a JSON object") from None
    if not isinstance(data, dict):
        raise click.BadParameter("expected a JSON object")
    return data


def _option_for(name: str, field: Any) -> Callable[[F], F]:
    flag = "--" + name.replace("_", "-")
    env = f"STEPLAKE_{name.upper()}"
    default = field.default_factory() if field.default_factory is not None else field.default
    shown = "" if default in (None, [], {}) else f"; default {default}"
    help_text = f"{field.description} [env {env}{shown}]"
    ann = field.annotation
    if ann is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
    if ann == list[str]:
        return click.option(flag, name, multiple=True, help=help_text + " (repeatable)")
    if name == "retention":
        return click.option(flag, name, multiple=True, callback=_parse_retention, metavar="CHANNEL=DAYS",
                            help=help_text + " (repeatable)")
    if ann == dict[str, Any]:
        return click.option(flag, name, callback=_parse_json_object, metavar="JSON", help=help_text)
    kind: Any = {int: int, float: float}.get(ann, str)
    return click.option(flag, name, type=kind, default=None, help=help_text)


def settings_options(fn: F) -> F:
    """Add one option per ``Settings`` field (help text from the field's description)."""
    for name, field in reversed(list(Settings.model_fields.items())):
        fn = _option_for(name, field)(fn)
    return fn


def settings_from(opts: dict[str, Any]) -> Settings:
    s = build_settings({k: v for k, v in opts.items() if k in Settings.model_fields})
    if s.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {s.log_level!r}")
    if not 0 <= s.port <= 65535:
        raise ConfigError(f"--port must be 0-65535, got {s.port}")
    if s.max_body_mb <= 0:
        raise ConfigError("--max-body-mb must be > 0")
    if s.idle_timeout <= 0:
        raise ConfigError("--idle-timeout must be > 0")
    if s.renderer and ":" in s.renderer:
        from .render import load_class

        try:
            load_class(s.renderer)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"--renderer {s.renderer}: cannot load it ({type(e).__name__}: {e})") from None
    return s


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _store_has_keys(settings: Settings) -> bool:
    from .store import open_store

    store = open_store(settings.db, settings)
    try:
        store.open()
    except SteplakeError:
        raise
    except Exception as e:
        raise ConfigError(f"cannot open database {settings.db!r}: {e}") from None
    try:
        return store.has_keys()
    finally:
        store.close()


def check_bind(settings: Settings) -> None:
    """With no API key everything is open: refuse to listen beyond loopback."""
    if _store_has_keys(settings) or is_loopback(settings.host):
        return
    raise ConfigError(
        f"refusing to listen on {settings.host} without an API key (with no key everything is open); "
        f"create one with 'steplake keys create --scope admin --db {settings.db}' or bind 127.0.0.1")


def run_server(settings: Settings) -> None:
    import asyncio
    import importlib.util

    import uvicorn

    from .api.http_server import guarded_app, http_protocol
    from .app import create_app

    logging.basicConfig(level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(  # Host check, header deadline (api/http_server.py)
        guarded_app(app, settings), host=settings.host, port=settings.port, access_log=False,
        log_level=settings.log_level.lower(), loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=http_protocol(settings),
        lifespan="on", timeout_graceful_shutdown=5,
    )
    pool = app.state.pool

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            pool.begin_shutdown()  # open event streams and long polls end, so shutdown does not wait on them
            super().handle_exit(sig, frame)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:  # where it listens, the database, the upstreams; later: the model is ready
                from .serve_info import announce_upstreams, banner_lines, bound_port

                def echo(line: str) -> None:
                    click.echo(line, err=True)

                for line in banner_lines(settings, app, bound_port(self, settings.port)):
                    echo(line)
                self._announce = asyncio.ensure_future(announce_upstreams(app, echo))

    server = Server(config)
    server.run()
    if not server.started:
        raise ConfigError(f"server failed to start on {settings.host}:{settings.port} (see the log above)")


# -- commands ------------------------------------------------------------------------------------------------
@click.group(cls=SteplakeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(version=__version__, prog_name="steplake", message="%(prog)s %(version)s")
def cli() -> None:
    """steplake: step-level data layer for agentic RL (gateway, data pool, training-ready batches)."""


@cli.command()
@settings_options
def serve(**opts: Any) -> None:
    """Run the server: gateway, API, dashboard (single process); creates the database (--db) if missing."""
    settings = settings_from(opts)
    check_bind(settings)
    run_server(settings)


@cli.command()
@click.option("--tasks", type=click.IntRange(1, 100), default=4, show_default=True, help="Tasks (groups).")
@click.option("--rollouts", type=click.IntRange(1, 64), default=4, show_default=True, help="Rollouts per task.")
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=48, show_default=True,
              help="max_tokens per model call.")
@click.option("--keep-serving/--no-keep-serving", default=None,
              help="Leave the server (and dashboard) running afterwards until Ctrl-C [default: keep serving "
                   "when run in a terminal, stop otherwise].")
@train_demo_options
@settings_options
def demo(tasks: int, rollouts: int, max_tokens: int, keep_serving: bool | None, **opts: Any) -> None:
    """Run the end-to-end demo (agents, rewards, a GRPO batch) against the embedded model.

    Its database is a temporary file unless --db names one (created if missing). With --train: the closed
    training loop (agents → pool → GRPO → new policy served → better agents) and its reward curve."""
    loop = {k: opts.pop(k) for k in ("train_loop", "minutes", "versions", "lr", "seed", "eval_groups")}
    settings = settings_from(opts)
    if loop["train_loop"]:
        run_train_demo_cmd(settings, tasks, rollouts, max_tokens, loop)
        return
    try:
        from .demo import run_demo
    except ImportError as e:
        raise ConfigError(f"the demo is not available in this build: {e}") from None
    run_demo(settings, keep_serving=keep_serving, tasks=tasks, rollouts=rollouts, max_tokens=max_tokens)


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 trajectory``, ``2 trajectories``: a count and its noun (``many`` defaults to ``one`` + s)."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(data, dict):
        rows: list[tuple[str, str]] = []
        for k, v in data.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    return [(prefix, "-" if data is None else str(data))]


@cli.command()
@click.option("--url", envvar="STEPLAKE_URL", default="http://127.0.0.1:8000", show_default=True,
              help="Server base URL [env STEPLAKE_URL].")
@click.option("--api-key", envvar="STEPLAKE_API_KEY", default=None, help="API key [env STEPLAKE_API_KEY].")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def stats(url: str, api_key: str | None, as_json: bool) -> None:
    """Print the server's counters (GET /api/v1/stats)."""
    from rich.console import Console
    from rich.table import Table

    from .client import Client

    with Client(url, api_key=api_key, timeout=10.0) as client:
        data = client.stats()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"steplake stats ({url})")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name, value in _flatten(data):
        table.add_row(name, value)
    Console().print(table)


db_option = click.option("--db", envvar="STEPLAKE_DB", default=None,
                         help="SQLite file or postgresql:// URL of an existing pool (never created here) "
                              "[env STEPLAKE_DB; default steplake.db].")


def require_pool(db: str) -> None:
    """A command that reads or changes a pool refuses one that does not exist: a mistyped ``--db`` would
    otherwise create an empty pool and report 0 rows. Only ``serve``, ``demo`` and ``keys create`` create."""
    if not db.startswith(("postgresql://", "postgres://")):
        path = Path(db[len("sqlite:///"):] if db.startswith("sqlite:///") else db)
        if not path.is_file():
            why = "is a directory" if path.is_dir() else "does not exist"
            raise ConfigError(f"no database at {str(path)!r}: the file {why} (check --db / STEPLAKE_DB; "
                              "'steplake serve' creates one)")
        return
    from .store.postgres import redact, split_schema

    url, schema = split_schema(db)
    try:
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SELECT to_regclass(%s)", (f'"{schema or "public"}".meta',)).fetchone()
    except Exception as e:
        raise ConfigError(f"cannot open database {redact(db)!r}: {str(e).strip().splitlines()[0]}") from None
    if row is None or row[0] is None:
        raise ConfigError(f"no steplake pool in schema {schema or 'public'!r} of {redact(url)!r} (check --db; "
                          "'steplake serve' creates one)")


def _open_db(db: str | None, *, create: bool = False) -> Any:
    from .store import open_store

    settings = build_settings({"db": db})
    if not create:
        require_pool(settings.db)
    store = open_store(settings.db, settings)
    try:
        store.open()
    except SteplakeError:
        raise
    except Exception as e:
        raise ConfigError(f"cannot open database {settings.db!r}: {e}") from None
    return store


@cli.group()
def keys() -> None:
    """API keys (stored hashed in the database; works on the database directly)."""


@keys.command("create")
@click.option("--scope", type=click.Choice(["agent", "trainer", "admin"]), required=True)
@click.option("--name", default=None, help="A label for the key.")
@click.option("--trajectory", "trajectory_id", default=None,
              help="Bind the key to this session: gateway calls made with it land in this trajectory "
                   "(scope agent only).")
@click.option("--group", "group_id", default=None, help="The bound session's group (with --trajectory).")
@click.option("--channel", default=None, help="The bound session's channel (with --trajectory).")
@click.option("--metadata", default=None, help="The bound session's step metadata, a JSON object (with --trajectory).")
@click.option("--db", envvar="STEPLAKE_DB", default=None,
              help="SQLite file or postgresql:// URL; created if it does not exist, so a key can be made "
                   "before the first serve [env STEPLAKE_DB; default steplake.db].")
def keys_create(scope: str, name: str | None, trajectory_id: str | None, group_id: str | None,
                channel: str | None, metadata: str | None, db: str | None) -> None:
    """Create a key; the secret is printed once (last line)."""
    binding = _key_binding(scope, trajectory_id, group_id, channel, metadata)
    store = _open_db(db, create=True)
    try:
        rec, secret = store.create_key(scope, name, binding)
        _record(store, "key.create", rec.key_id, {"scope": scope, "name": name,
                                                  "trajectory_id": (binding or {}).get("trajectory_id")})
    finally:
        store.close()
    click.echo(f"key_id: {rec.key_id}\nscope: {rec.scope}\nname: {rec.name or '-'}")
    if rec.binding is not None:
        click.echo(f"binding: {json.dumps(rec.binding, sort_keys=True)}")
    click.echo("secret (shown once, store it now):", err=True)
    click.echo(secret)


def _key_binding(scope: str, trajectory_id: str | None, group_id: str | None, channel: str | None,
                 metadata: str | None) -> dict[str, Any] | None:
    if trajectory_id is None:
        if group_id is not None or channel is not None or metadata is not None:
            raise ConfigError("--group, --channel and --metadata bind a key to a session: give --trajectory too")
        return None
    if scope != "agent":
        raise ConfigError(f"a key bound to a session (--trajectory) must have --scope agent, not {scope!r}")
    meta = None
    if metadata is not None:
        try:
            meta = json.loads(metadata)
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise ConfigError("--metadata must be a JSON object")
    out = {"trajectory_id": trajectory_id, "group_id": group_id, "channel": channel, "metadata": meta}
    return {k: v for k, v in out.items() if v is not None}


@keys.command("list")
@db_option
def keys_list(db: str | None) -> None:
    """List keys (never their secrets)."""
    import datetime as dt

    store = _open_db(db)
    try:
        records = store.list_keys()
    finally:
        store.close()

    def when(t: float | None) -> str:
        return "-" if t is None else dt.datetime.fromtimestamp(t).isoformat(timespec="seconds")

    click.echo(f"{'KEY_ID':<28} {'SCOPE':<8} {'NAME':<20} {'CREATED':<20} {'REVOKED':<20} BINDING")
    for k in records:
        bound = json.dumps(k.binding, sort_keys=True) if k.binding is not None else "-"
        click.echo(f"{k.key_id:<28} {k.scope:<8} {(k.name or '-'):<20} {when(k.created_at):<20} "
                   f"{when(k.revoked_at):<20} {bound}")


@keys.command("revoke")
@click.argument("key_id")
@db_option
def keys_revoke(key_id: str, db: str | None) -> None:
    """Revoke a key (a running server stops accepting it within a few seconds)."""
    store = _open_db(db)
    try:
        done = store.revoke_key(key_id)
        if done:
            _record(store, "key.revoke", key_id)
    finally:
        store.close()
    if not done:
        raise ConfigError(f"no active key {key_id!r}")
    click.echo(f"revoked {key_id}")


@cli.command()
@db_option
@click.option("--retention", multiple=True, callback=_parse_retention, metavar="CHANNEL=DAYS",
              help="Days to keep per channel (repeatable; units d/h/m; '*' = every other channel). "
                   "Default: the settings' retention.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
def prune(db: str | None, retention: dict[str, float] | None, dry_run: bool) -> None:
    """Delete trajectories older than their channel's retention (open and leased ones are kept)."""
    from .pool.lifecycle import prune as run_prune

    settings = build_settings({"db": db})
    keep = retention or settings.retention
    if not keep:
        raise ConfigError("no retention given: use --retention CHANNEL=DAYS or set 'retention' in the config")
    store = _open_db(db)
    try:
        done = run_prune(store, keep, dry_run=dry_run)
        if not dry_run and any(done.values()):
            _record(store, "trajectories.prune", None, {"deleted": {c: n for c, n in done.items() if n},
                                                        "retention": keep})
    finally:
        store.close()
    for channel, n in sorted(done.items()):
        click.echo(f"{channel}: {plural(n, 'trajectory', 'trajectories')} {'would be ' if dry_run else ''}deleted")


@cli.command()
@click.option("--from", "src", required=True, help="SQLite pool: path or sqlite:///path.")
@click.option("--to", "dst", required=True, help="postgresql:// URL (?schema=name optional).")
@click.option("--batch", default=1000, show_default=True, help="Rows per COPY batch.")
@click.option("--no-events", is_flag=True, help="Do not copy the event feed.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def migrate(src: str, dst: str, batch: int, no_events: bool, quiet: bool) -> None:
    """Copy a pool from SQLite to PostgreSQL without loss; run it again to resume."""
    from .store.migrate import migrate as run_migrate

    if not dst.startswith(("postgresql://", "postgres://")):
        raise ConfigError("--to must be a postgresql:// URL")
    for table, n in run_migrate(src, dst, batch=batch, events=not no_events, progress=not quiet).items():
        click.echo(f"{table}: {n}")


def _parse_filters(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


filter_option = click.option("--filter", "filters", multiple=True, callback=_parse_filters, metavar="KEY=VALUE",
                             help="Trajectory filter (repeatable): status, quality, trainable, min_reward, agent, "
                                  "group_id, since, until, trainable_only, quality_in=a,b ...")


def _export_format(fmt: str | None, out: str, from_manifest: str | None) -> str:
    if fmt:
        return fmt
    if from_manifest:
        from .batches.manifest import read_manifest
        from .exports import resolve_manifest

        return read_manifest(resolve_manifest(from_manifest)).format
    for suffix, name in ((".parquet", "parquet"), (".pq", "parquet"), (".jsonl", "jsonl")):
        if out.endswith(suffix):
            return name
    raise ConfigError("give --format (jsonl, parquet or hf)")


@cli.command("export")
@db_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet", "hf"]), default=None,
              help="Output format [default: from --out's suffix, or the manifest's].")
@click.option("--out", required=True, help="File to write (a folder for hf).")
@click.option("--channel", default=None, help="Only this channel.")
@filter_option
@click.option("--recipe", type=click.Choice(["grpo", "rloo", "reinforce_pp", "ppo", "dpo", "sft"]), default=None,
              help="Fill the advantage column (grouped by group_id).")
@click.option("--batch-id", default=None, help="Exactly the steps a recorded batch served.")
@click.option("--from-manifest", default=None, help="Rebuild an earlier export (its manifest, folder or file).")
@click.option("--include-open", is_flag=True, help="Include open trajectories (default: complete only).")
@click.option("--allow-changes", is_flag=True, help="With --from-manifest: write even if the content changed.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def export_cmd(db: str | None, fmt: str | None, out: str, channel: str | None, filters: dict[str, str],
               recipe: str | None, batch_id: str | None, from_manifest: str | None, include_open: bool,
               allow_changes: bool, overwrite: bool) -> None:
    """Export steps to JSONL, Parquet or a Hugging Face dataset folder, with a manifest (on the database)."""
    from .batches.manifest import manifest_path_for
    from .exports import export_pool

    fmt = _export_format(fmt, out, from_manifest)
    store = _open_db(db)
    try:
        m = export_pool(store, path=out, format=fmt, channel=channel, filters=filters, recipe=recipe,
                        batch_id=batch_id, from_manifest=from_manifest, include_open=include_open,
                        allow_changes=allow_changes, overwrite=overwrite)
    finally:
        store.close()
    c = m.counts
    click.echo(f"rows: {c.steps} ({plural(c.trajectories, 'trajectory', 'trajectories')}, {plural(c.groups, 'group')}, "
               f"{plural(c.tokens, 'token')})")
    click.echo(f"format: {m.format}\npath: {m.path}\ncontent_hash: {m.content_hash}")
    click.echo(f"manifest: {manifest_path_for(m.path, m.format)}")
    if from_manifest:
        diff = m.selection.get("diff")
        click.echo("matches the source manifest" if diff is None else f"changed since the manifest: {diff['counts']}")


@cli.group()
def rewards() -> None:
    """Reward functions of a running server."""


@rewards.command("run")
@click.option("--url", envvar="STEPLAKE_URL", default="http://127.0.0.1:8000", show_default=True,
              help="Server base URL [env STEPLAKE_URL].")
@click.option("--api-key", envvar="STEPLAKE_API_KEY", default=None, help="API key [env STEPLAKE_API_KEY].")
@click.option("--trajectory-id", "trajectory_ids", multiple=True, help="Trajectory to score (repeatable).")
@click.option("--channel", default=None, help="Every complete trajectory of this channel.")
@filter_option
@click.option("--version", "version", default=None, help="Version recorded on the new values (old ones are kept).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def rewards_run(url: str, api_key: str | None, trajectory_ids: tuple[str, ...], channel: str | None,
                filters: dict[str, str], version: str | None, as_json: bool) -> None:
    """Score trajectories now with the server's reward functions (POST /api/v1/rewards/run)."""
    from .client import Client

    flt: dict[str, Any] | None = {**filters, **({"channel": channel} if channel else {})} or None
    if not trajectory_ids and flt is None:
        raise ConfigError("give --trajectory-id, --channel or --filter")
    with Client(url, api_key=api_key, timeout=600.0) as client:
        data = client.run_rewards(list(trajectory_ids) or None, filter=flt, version=version)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    n = data.get("trajectories")
    on = plural(n, "trajectory", "trajectories") if isinstance(n, int) else "? trajectories"
    click.echo(f"scored: {plural(data['scored'], 'value')} on {on}")
    for r in data["rewards"]:
        click.echo(f"{r.get('trajectory_id') or r.get('step_id')}\t{r.get('name')}\t{r.get('version')}\t{r.get('value')}")


def _record(store: Any, action: str, target: str | None = None, summary: dict[str, Any] | None = None) -> None:
    """An audit entry for a command run on the database directly (actor ``cli``, client ``user@host``)."""
    from .store.audit import record_cli

    record_cli(store, action, target, summary)


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    from .store.audit import parse_since

    try:
        return None if value is None else parse_since(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@cli.command("audit")
@db_option
@click.option("--url", default=None, help="Read a running server's log instead (GET /api/v1/audit, admin key).")
@click.option("--api-key", envvar="STEPLAKE_API_KEY", default=None, help="API key for --url [env STEPLAKE_API_KEY].")
@click.option("--action", default=None, help="Only this action (key.create, key.revoke, trajectory.delete ...).")
@click.option("--actor", default=None, help="Only this actor (a key id, anonymous, cli, server).")
@click.option("--since", default=None, callback=_since, help="Epoch seconds, an ISO date or an age (2h, 7d).")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Entries to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def audit(db: str | None, url: str | None, api_key: str | None, action: str | None, actor: str | None,
          since: float | None, limit: int, as_json: bool) -> None:
    """Show the audit log, newest first: key changes, deletions, prunes, policy publishes, curation, reward
    runs and exports, with who, when and from where (on the database, or a server with --url)."""
    from .store.audit import format_entry

    if url is not None:
        from .client import Client

        with Client(url, api_key=api_key, timeout=30.0) as client:
            items = client.audit(action=action, actor=actor, since=since, limit=limit)["items"]
    else:
        filters = {k: v for k, v in {"action": action, "actor": actor, "since": since}.items() if v is not None}
        store = _open_db(db)
        try:
            items = store.list_audit(filters, None, limit).items
        finally:
            store.close()
    for e in items:
        click.echo(json.dumps(e, sort_keys=True) if as_json else format_entry(e))


def _attach_model_group() -> None:
    """``steplake model serve``: the embedded model's own command group, when importable."""
    try:
        from .model.cli import model
    except ImportError:
        return
    cli.add_command(model, "model")


_attach_model_group()


def _attach_train() -> None:
    """``steplake train``: the reference GRPO trainer (training/cli.py; torch needed only when it runs)."""
    from .training.cli import train

    cli.add_command(train, "train")


_attach_train()


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``steplake``) and ``python -m steplake``."""
    cli.main(args=argv, prog_name="steplake")


__all__ = ["cli", "main", "settings_options", "settings_from", "check_bind", "is_loopback", "run_server"]
