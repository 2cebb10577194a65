"""List filters shared by the stores: trajectory WHERE clauses and cursors, in either placeholder style."""

from __future__ import annotations

from typing import Any

from ..filters import parse_cursor
from ..types import Json
from .dialect import equal_filters, where_sql


def like_pattern(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def text_search(q: str, ph: str) -> tuple[str, str]:
    """Case-insensitive substring search in the indexed message text (``step_text``): a trigram FTS5 phrase on
    SQLite (3+ characters; shorter ones scan the index table), a pg_trgm-indexed ILIKE on PostgreSQL."""
    if ph == "?":
        if len(q) >= 3 and "\x00" not in q:  # FTS5 query strings end at a NUL
            return "SELECT trajectory_id FROM step_text WHERE step_text MATCH ?", '"' + q.replace('"', '""') + '"'
        return "SELECT trajectory_id FROM step_text WHERE text LIKE ? ESCAPE '\\'", like_pattern(q)
    return f"SELECT trajectory_id FROM step_text WHERE text ILIKE {ph} ESCAPE '\\'", like_pattern(q.replace("\x00", ""))


# SQLite, a search term in many steps: walk the page's trajectories newest first and test each one's steps
# (a few row lookups each) instead of collecting every matching trajectory first
DENSE_TEXT_SQL = ("EXISTS (SELECT 1 FROM steps s WHERE s.trajectory_id = trajectories.trajectory_id"
                  " AND (SELECT text FROM step_text WHERE rowid = s.seq) LIKE ? ESCAPE '\\')")


PG_DENSE_TEXT_SQL = ("EXISTS (SELECT 1 FROM step_text x WHERE x.trajectory_id = trajectories.trajectory_id"
                     " AND x.text ILIKE %s ESCAPE '\\')")


def _equal(filters: Json, cols: tuple[str, ...], ph: str) -> tuple[list[str], list[Any]]:
    """``col = value`` for each of ``cols`` given in ``filters``, and ``trainable`` as 0/1."""
    where, args = equal_filters(filters, cols, ph)
    if filters.get("trainable") is not None:
        where.append(f"trainable = {ph}")
        args.append(int(bool(filters["trainable"])))
    return where, args


def traj_where(filters: Json, ph: str = "?") -> tuple[list[str], list[Any]]:
    """WHERE clauses and arguments of a trajectory list; ``ph`` is the driver's placeholder."""
    where, args = _equal(filters, ("channel", "group_id", "status", "quality", "agent"), ph)
    for key, clause in (("min_reward", "reward >="), ("max_reward", "reward <="), ("since", "created_at >="),
                        ("until", "created_at <=")):
        if filters.get(key) is not None:
            where.append(f"{clause} {ph}")
            args.append(float(filters[key]))
    if filters.get("has_reward") is not None:
        where.append("reward IS NOT NULL" if filters["has_reward"] else "reward IS NULL")
    cont = filters.get("continuity")
    if cont == "fork":
        where.append("n_fork > 0")
    elif cont == "realigned":
        where.append("n_realigned > 0")
    elif cont == "clean":
        where.append("n_fork = 0 AND n_realigned = 0")
    if filters.get("policy_version") is not None:
        where.append(f"min_policy <= {ph} AND max_policy >= {ph}")
        args += [int(filters["policy_version"])] * 2
    if filters.get("q"):
        sub, arg = text_search(str(filters["q"]), ph)
        where.append(f"trajectory_id IN ({sub})")
        args.append(arg)
    return where, args


def traj_page_sql(where: list[str], args: list[Any], filters: Json, cursor: str | None, limit: int, cols: str,
                  ph: str = "?") -> tuple[str, list[Any]]:
    """SELECT of one keyset page of trajectories (newest first unless ``order=asc``) under ``where``."""
    desc = filters.get("order", "desc") == "desc"
    where, args = list(where), list(args)
    if cursor is not None:
        where.append(f"seq {'<' if desc else '>'} {ph}")
        args.append(parse_cursor(cursor))
    sql = f"SELECT {cols} FROM trajectories{where_sql(where)}"
    return sql + f" ORDER BY seq {'DESC' if desc else 'ASC'} LIMIT {ph}", [*args, limit + 1]


def step_page_sql(filters: Json, cursor: str | None, limit: int, cols: str, ph: str = "?") -> tuple[str, list[Any]]:
    """SELECT of one page of steps, keyset-paged on ``seq`` (ascending within a trajectory, else newest first)."""
    where, args = _equal(filters, ("trajectory_id", "group_id", "channel", "continuity", "policy_version",
                                   "token_source", "finish_reason", "quality"), ph)
    if filters.get("since") is not None:
        where.append(f"created_at >= {ph}")
        args.append(float(filters["since"]))
    desc = filters.get("order", "asc" if filters.get("trajectory_id") else "desc") == "desc"
    if cursor is not None:
        where.append(f"seq {'<' if desc else '>'} {ph}")
        args.append(parse_cursor(cursor))
    sql = f"SELECT {cols} FROM steps{where_sql(where)}"
    sql += f" ORDER BY seq {'DESC' if desc else 'ASC'} LIMIT {ph}"
    return sql, [*args, limit + 1]


__all__ = ["traj_where", "traj_page_sql", "parse_cursor", "step_page_sql", "text_search", "like_pattern", "DENSE_TEXT_SQL", "PG_DENSE_TEXT_SQL"]
