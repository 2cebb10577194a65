"""The dashboard funnel's counts, kept as ``counters`` rows by triggers on ``trajectories`` and ``groups``.

Every write that creates, deletes or changes a trajectory's status, reward, quality, ``curated_at`` or
``trainable`` (appends, completion, the idle sweep, curation, reward recomputation, deletes, retention, a
migration's copy) moves the trajectory counters in its own transaction; every write that creates, deletes or
changes a group's status or ``n_complete`` (appends opening groups, completion, the idle sweep, batch leases,
acks, lease expiry, deletes, retention) moves the group counters. So ``store/overview.py`` reads the funnel in
O(1) instead of scanning either table. One list of rules per table (:data:`TRAJECTORY_COUNTS`,
:data:`GROUP_COUNTS`) generates the SQLite triggers (row triggers), the PostgreSQL ones (statement triggers over
transition tables) and the schema migration that counts the rows of an existing pool once. Statements end with
``;`` and a newline (how migrations are split); the ``;`` inside trigger bodies never ends a line.

On PostgreSQL (since the slotted migration) a transaction adds its deltas to one of :data:`SLOTS` rows per
counter, ``<name>#<k>`` with ``k = txid % SLOTS`` (transactions open at once have nearby ids: different slots), so
servers appending at once never wait on each other's counter rows until commit. The bare ``<name>`` row holds
the last full count; readers sum the bare row and its slots (:func:`base_name`, :data:`READ_SQL`); a recount
(:func:`pg_recount`) sets the bare row and deletes the slots in one locked transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PREFIX = "funnel_"
# counter name (after PREFIX) → the condition a trajectory row ``{r}`` meets to be counted (once)
FUNNEL: list[tuple[str, str]] = [
    ("trajectories", "1 = 1"),
    ("complete", "{r}.status = 'complete'"),
    ("abandoned", "{r}.status = 'abandoned'"),
    ("rewarded", "{r}.status = 'complete' AND {r}.reward IS NOT NULL"),
    ("curated", "{r}.quality != 'unreviewed' OR {r}.curated_at IS NOT NULL"),
    ("untrainable", "{r}.trainable = 0"),
]
# counter name (after PREFIX) → (the condition a group row ``{r}`` meets, what it adds): the complete
# trajectories of the groups in each status the funnel shows
GROUP_FUNNEL: list[tuple[str, str, str]] = [
    (f"group_{status}", f"{{r}}.status = '{status}'", "{r}.n_complete") for status in ("ready", "leased", "consumed")
]
COLUMNS = "status, reward, quality, curated_at, trainable"
SLOTS = 16  # PostgreSQL: slot rows per counter
SLOT_SEP = "#"
READ_SQL = f"SELECT name, value FROM counters WHERE substr(name, 1, {len(PREFIX)}) = '{PREFIX}'"  # bare and slotted


@dataclass(frozen=True)
class Counted:
    """Counters kept on one table: ``rules`` are (name after PREFIX, condition on ``{r}``, amount of ``{r}``);
    ``columns`` are those the rules read; ``trigger`` names the triggers (``<trigger>_insert``, ...)."""

    table: str
    trigger: str
    columns: str
    rules: list[tuple[str, str, str]]


TRAJECTORY_COUNTS = Counted("trajectories", "funnel", COLUMNS, [(n, cond, "1") for n, cond in FUNNEL])
GROUP_COUNTS = Counted("groups", "funnel_groups", "status, n_complete", GROUP_FUNNEL)


def flag(cond: str, r: str, amount: str = "1") -> str:
    return f"(CASE WHEN {cond.format(r=r)} THEN {amount.format(r=r)} ELSE 0 END)"


def full_count_sql(counted: Counted = TRAJECTORY_COUNTS) -> str:
    """The counters computed from the rows: one pass over the table (the reference of the counters)."""
    sums = ", ".join(f"sum{flag(cond, 't', amount)}" for _, cond, amount in counted.rules)
    return f"SELECT {sums} FROM {counted.table} AS t"


def _init_sql(counted: Counted) -> str:
    rules = counted.rules
    names = " UNION ALL ".join(f"SELECT '{PREFIX}{name}' AS name, {i} AS i" for i, (name, _, _) in enumerate(rules))
    cases = " ".join(f"WHEN {i} THEN c{i}" for i in range(len(rules)))
    sums = ", ".join(f"coalesce(sum{flag(cond, 't', amount)}, 0) AS c{i}" for i, (_, cond, amount) in enumerate(rules))
    return (f"INSERT INTO counters(name, value) SELECT n.name, CASE n.i {cases} END FROM ({names}) AS n"
            f" CROSS JOIN (SELECT {sums} FROM {counted.table} AS t) AS c WHERE true"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value")


def _sqlite_trigger(counted: Counted, event: str, when: str, deltas: list[str]) -> str:
    name = f"{counted.trigger}_{event.split()[0].lower()}"
    rows = " UNION ALL ".join(f"SELECT '{PREFIX}{n}' AS name, {d} AS d"
                              for (n, _, _), d in zip(counted.rules, deltas, strict=True))
    return (f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON {counted.table} {when}BEGIN"
            f" INSERT INTO counters(name, value) SELECT name, d FROM ({rows}) WHERE d != 0"
            f" ON CONFLICT(name) DO UPDATE SET value = value + excluded.value; END")


def sqlite_counters_migration(counted: Counted) -> str:
    new = [flag(cond, "NEW", amount) for _, cond, amount in counted.rules]
    old = [flag(cond, "OLD", amount) for _, cond, amount in counted.rules]
    changed = " OR ".join(f"{n} != {o}" for n, o in zip(new, old, strict=True))
    return ";\n".join([
        _init_sql(counted),
        _sqlite_trigger(counted, "INSERT", "", new),
        _sqlite_trigger(counted, "DELETE", "", [f"-{o}" for o in old]),
        _sqlite_trigger(counted, f"UPDATE OF {counted.columns}", f"WHEN {changed} ",
                        [f"{n} - {o}" for n, o in zip(new, old, strict=True)]),
    ])


def _sqlite_lean_triggers(counted: Counted, event: str, deltas: list[str]) -> list[str]:
    """The row triggers of ``event`` (INSERT or DELETE) split in two: rows that move only the constant counters
    (``1 = 1``: a new trajectory of an append, open and unreviewed) run one ``UPDATE`` of those counters; the
    others run the full upsert. Same counts, a fraction of the work on the append path."""
    rules = counted.rules
    constant = [i for i, (_, cond, _) in enumerate(rules) if cond == "1 = 1"]
    varying = " OR ".join(f"{deltas[i]} != 0" for i in range(len(rules)) if i not in constant) or "0"
    name = f"{counted.trigger}_{event.lower()}"
    full = _sqlite_trigger(counted, event, f"WHEN {varying} ", deltas)
    out = [f"DROP TRIGGER IF EXISTS {name}", f"DROP TRIGGER IF EXISTS {name}_plain", full]
    if constant:
        sets = " ".join(f"UPDATE counters SET value = value + {deltas[i]} WHERE name = '{PREFIX}{rules[i][0]}';"
                        for i in constant)
        out.append(f"CREATE TRIGGER IF NOT EXISTS {name}_plain AFTER {event} ON {counted.table}"
                   f" WHEN NOT ({varying}) BEGIN {sets} END")
    return out


def sqlite_lean_migration(*counted: Counted) -> str:
    """Replace the INSERT and DELETE counter triggers of ``counted`` by their lean split (schema v9)."""
    out: list[str] = []
    for c in counted:
        out += _sqlite_lean_triggers(c, "INSERT", [flag(cond, "NEW", amount) for _, cond, amount in c.rules])
        out += _sqlite_lean_triggers(c, "DELETE", [f"-{flag(cond, 'OLD', amount)}" for _, cond, amount in c.rules])
    return ";\n".join(out)


def base_name(stored: str) -> str:
    """The counter a ``counters`` row adds to: ``funnel_complete#3`` (a PostgreSQL slot) → ``funnel_complete``."""
    return stored.split(SLOT_SEP, 1)[0]


def sum_slots(rows: Iterable[tuple[Any, Any]]) -> dict[str, int]:
    """Rows of :data:`READ_SQL` → counter name → its value (the bare row plus every slot)."""
    out: dict[str, int] = {}
    for name, value in rows:
        key = base_name(str(name))
        out[key] = out.get(key, 0) + int(value or 0)
    return out


def _pg_function(counted: Counted, name: str, rows: str, slotted: bool = False) -> str:
    rules = counted.rules
    sums = ", ".join(f"sum(t.sg * {flag(cond, 't', amount)}) AS c{i}" for i, (_, cond, amount) in enumerate(rules))
    values = ", ".join(f"('{PREFIX}{n}', s.c{i})" for i, (n, _, _) in enumerate(rules))
    target = f"v.name || '{SLOT_SEP}' || (txid_current() % {SLOTS})" if slotted else "v.name"
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$ BEGIN"
            f" INSERT INTO counters(name, value) SELECT {target}, v.d FROM (SELECT {sums} FROM ({rows}) AS t) AS s"
            f" CROSS JOIN LATERAL (VALUES {values}) AS v(name, d) WHERE v.d <> 0"
            " ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value; RETURN NULL; END $$")


def _pg_functions(counted: Counted, slotted: bool) -> list[str]:
    cols = counted.columns
    new, old = f"SELECT 1 AS sg, {cols} FROM new_rows", f"SELECT -1 AS sg, {cols} FROM old_rows"
    name = f"steplake_{counted.trigger}"
    return [_pg_function(counted, f"{name}_insert", new, slotted),
            _pg_function(counted, f"{name}_delete", old, slotted),
            _pg_function(counted, f"{name}_update", f"{new} UNION ALL {old}", slotted)]


def pg_recount(counted: Counted) -> list[str]:
    """Statements (one transaction) that set ``counted``'s bare counter rows to a full count of the table and
    delete their slot rows, with no write to the table in between."""
    names = ", ".join(f"'{PREFIX}{n}'" for n, _, _ in counted.rules)
    return [f"LOCK TABLE {counted.table} IN SHARE ROW EXCLUSIVE MODE",  # no write between the count and the triggers
            _init_sql(counted),
            f"DELETE FROM counters WHERE strpos(name, '{SLOT_SEP}') > 0 AND split_part(name, '{SLOT_SEP}', 1) IN ({names})"]


def _pg_trigger(counted: Counted, name: str, event: str, tables: str) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {name} ON {counted.table}",
            f"CREATE TRIGGER {name} AFTER {event} ON {counted.table} REFERENCING {tables}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {name}()"]


def pg_counters_migration(counted: Counted) -> str:
    """Count the table once and install its statement triggers (single-row counters; schema v6 and v7, made
    slotted by :func:`pg_slotted_migration` right after)."""
    name = f"steplake_{counted.trigger}"
    return ";\n".join([
        *pg_recount(counted),  # its DELETE finds no slot row unless the migration is run again over a slotted pool
        *_pg_functions(counted, slotted=False),
        *_pg_trigger(counted, f"{name}_insert", "INSERT", "NEW TABLE AS new_rows"),
        *_pg_trigger(counted, f"{name}_delete", "DELETE", "OLD TABLE AS old_rows"),
        *_pg_trigger(counted, f"{name}_update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ])


def pg_slotted_migration(*counted: Counted) -> str:
    """The trigger functions of ``counted`` replaced by slotted ones (schema v8): same triggers, same counts."""
    return ";\n".join(f for c in counted for f in _pg_functions(c, slotted=True))


def sqlite_funnel_migration() -> str:
    return sqlite_counters_migration(TRAJECTORY_COUNTS)


def pg_funnel_migration() -> str:
    return pg_counters_migration(TRAJECTORY_COUNTS)


__all__ = ["FUNNEL", "GROUP_COUNTS", "GROUP_FUNNEL", "PREFIX", "READ_SQL", "SLOTS", "TRAJECTORY_COUNTS", "Counted",
           "base_name", "full_count_sql", "pg_counters_migration", "pg_funnel_migration", "pg_recount",
           "pg_slotted_migration", "sqlite_counters_migration", "sqlite_funnel_migration", "sqlite_lean_migration",
           "sum_slots"]
