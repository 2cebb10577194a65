"""One way to print a benchmark's rows: a rich table, then the same rows as markdown (for notes)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table


def print_rows(console: Console, title: str, rows: Sequence[Sequence[str]]) -> None:
    t = Table(title=title)
    for col in ("measure", "result", "target", "verdict"):
        t.add_column(col)
    for r in rows:
        t.add_row(*r)
    console.print(t)
    print("\n| measure | result | target | verdict |\n| --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")
