"""The dashboard funnel's trajectory counts, kept as ``counters`` rows by triggers on ``trajectories``.

Every write that creates, deletes or changes a trajectory's status, reward, quality, ``curated_at`` or
``trainable`` (appends, completion, the idle sweep, curation, reward recomputation, deletes, retention, a
migration's copy) moves the counters in its own transaction, so ``store/overview.py`` reads the funnel in
O(1) instead of scanning ``trajectories``. One list of rules (:data:`FUNNEL`) generates the SQLite triggers,
the PostgreSQL ones (statement triggers over transition tables) and the schema migration that counts the
rows of an existing pool once. Statements end with ``;`` and a newline (how migrations are split); the
``;`` inside trigger bodies never ends a line.
"""

from __future__ import annotations

PREFIX = "funnel_"
# counter name (after PREFIX) → the condition a trajectory row ``{r}`` meets to be counted
FUNNEL: list[tuple[str, str]] = [
    ("trajectories", "1 = 1"),
    ("complete", "{r}.status = 'complete'"),
    ("abandoned", "{r}.status = 'abandoned'"),
    ("rewarded", "{r}.status = 'complete' AND {r}.reward IS NOT NULL"),
    ("curated", "{r}.quality != 'unreviewed' OR {r}.curated_at IS NOT NULL"),
    ("untrainable", "{r}.trainable = 0"),
]
COLUMNS = "status, reward, quality, curated_at, trainable"


def flag(cond: str, r: str) -> str:
    return f"(CASE WHEN {cond.format(r=r)} THEN 1 ELSE 0 END)"


def full_count_sql() -> str:
    """The funnel counted from the rows: one pass over ``trajectories`` (the reference of the counters)."""
    sums = ", ".join(f"sum{flag(cond, 't')}" for _, cond in FUNNEL)
    return f"SELECT {sums} FROM trajectories AS t"


def _init_sql(add: str) -> str:
    names = " UNION ALL ".join(f"SELECT '{PREFIX}{name}' AS name, {i} AS i" for i, (name, _) in enumerate(FUNNEL))
    cases = " ".join(f"WHEN {i} THEN c{i}" for i in range(len(FUNNEL)))
    sums = ", ".join(f"coalesce(sum{flag(cond, 't')}, 0) AS c{i}" for i, (_, cond) in enumerate(FUNNEL))
    return (f"INSERT INTO counters(name, value) SELECT n.name, CASE n.i {cases} END FROM ({names}) AS n"
            f" CROSS JOIN (SELECT {sums} FROM trajectories AS t) AS c WHERE true"
            f" ON CONFLICT (name) DO UPDATE SET value = {add}")


def _sqlite_trigger(name: str, event: str, when: str, deltas: list[str]) -> str:
    rows = " UNION ALL ".join(f"SELECT '{PREFIX}{n}' AS name, {d} AS d" for (n, _), d in zip(FUNNEL, deltas, strict=True))
    return (f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON trajectories {when}BEGIN"
            f" INSERT INTO counters(name, value) SELECT name, d FROM ({rows}) WHERE d != 0"
            f" ON CONFLICT(name) DO UPDATE SET value = value + excluded.value; END")


def sqlite_funnel_migration() -> str:
    new = [flag(cond, "NEW") for _, cond in FUNNEL]
    old = [flag(cond, "OLD") for _, cond in FUNNEL]
    changed = " OR ".join(f"{n} != {o}" for n, o in zip(new, old, strict=True))
    return ";\n".join([
        _init_sql("excluded.value"),
        _sqlite_trigger("funnel_insert", "INSERT", "", new),
        _sqlite_trigger("funnel_delete", "DELETE", "", [f"-{o}" for o in old]),
        _sqlite_trigger("funnel_update", f"UPDATE OF {COLUMNS}", f"WHEN {changed} ",
                        [f"{n} - {o}" for n, o in zip(new, old, strict=True)]),
    ])


def _pg_function(name: str, rows: str) -> str:
    sums = ", ".join(f"sum(t.sg * {flag(cond, 't')}) AS c{i}" for i, (_, cond) in enumerate(FUNNEL))
    values = ", ".join(f"('{PREFIX}{n}', s.c{i})" for i, (n, _) in enumerate(FUNNEL))
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$ BEGIN"
            f" INSERT INTO counters(name, value) SELECT v.name, v.d FROM (SELECT {sums} FROM ({rows}) AS t) AS s"
            f" CROSS JOIN LATERAL (VALUES {values}) AS v(name, d) WHERE v.d <> 0"
            " ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value; RETURN NULL; END $$")


def _pg_trigger(name: str, event: str, tables: str) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {name} ON trajectories",
            f"CREATE TRIGGER {name} AFTER {event} ON trajectories REFERENCING {tables}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"]


def pg_funnel_migration() -> str:
    new, old = f"SELECT 1 AS sg, {COLUMNS} FROM new_rows", f"SELECT -1 AS sg, {COLUMNS} FROM old_rows"
    return ";\n".join([
        "LOCK TABLE trajectories IN SHARE ROW EXCLUSIVE MODE",  # no write between the count and the triggers
        _init_sql("excluded.value"),
        _pg_function("steplake_funnel_insert", new),
        _pg_function("steplake_funnel_delete", old),
        _pg_function("steplake_funnel_update", f"{new} UNION ALL {old}"),
        *_pg_trigger("steplake_funnel_insert", "INSERT", "NEW TABLE AS new_rows"),
        *_pg_trigger("steplake_funnel_delete", "DELETE", "OLD TABLE AS old_rows"),
        *_pg_trigger("steplake_funnel_update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ])


__all__ = ["FUNNEL", "PREFIX", "full_count_sql", "pg_funnel_migration", "sqlite_funnel_migration"]
