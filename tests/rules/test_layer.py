"""The rules are the ground floor: they import the standard library, numpy, errors and records only; the
store applies them and no longer imports the pool."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import steplake

SRC = Path(steplake.__file__).parent
ALLOWED = {"steplake.errors", "steplake.records", "numpy"}


def _imports(path: Path, package: str) -> set[str]:
    """Absolute names of the modules ``path`` (a module of ``package``) imports."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            out.add(".".join([*base, *([node.module] if node.module else [])]))
    return out


def test_rules_import_nothing_above_them() -> None:
    files = sorted((SRC / "rules").glob("*.py"))
    assert {p.stem for p in files} >= {"continuity", "status", "rewards", "curation", "leases"}
    for path in files:
        for name in _imports(path, "steplake.rules"):
            ok = name.split(".")[0] in sys.stdlib_module_names or name in ALLOWED or name.startswith("steplake.rules")
            assert ok, f"rules/{path.name} imports {name}"


def test_the_store_does_not_import_the_pool() -> None:
    for path in (SRC / "store").glob("*.py"):
        for name in _imports(path, "steplake.store"):
            assert not name.startswith("steplake.pool"), f"store/{path.name} imports {name}"
