"""The package's structure, read from the source (AST): what may reach what."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "steplake"
THREAD_CALLS = {"to_thread", "run_in_executor"}


def _modules(skip: tuple[str, ...] = ()) -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if not rel.startswith(skip):
            out.append((rel, ast.parse(path.read_text(), filename=rel)))
    return out


def _names_store(node: ast.AST) -> bool:
    """``node`` mentions a store: a name ``store`` or an attribute ``.store``."""
    return any((isinstance(n, ast.Name) and n.id == "store") or (isinstance(n, ast.Attribute) and n.attr == "store")
               for n in ast.walk(node))


def _store_reaches(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "store" and isinstance(node.ctx, ast.Load):
            found.append((node.lineno, f"reads .store of {ast.unparse(node.value)}"))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in THREAD_CALLS and any(_names_store(a) for a in [*node.args, *(k.value for k in node.keywords)]):
                found.append((node.lineno, f"{name} on a store: {ast.unparse(node)[:80]}"))
            elif name == "getattr" and any(isinstance(a, ast.Constant) and a.value == "store" for a in node.args):
                found.append((node.lineno, "getattr(..., 'store')"))
    return found


def test_the_store_is_reached_only_through_the_pool() -> None:
    """Routes, the dashboard, the gateway and the rest call Pool methods: no module outside ``steplake.pool``
    reads a ``.store`` attribute (of the pool, the app state or anything) or runs a store call in a thread of
    its own, so every store call is counted by ``Pool._run`` and ``Pool.stop`` waits for it. (``app.py``
    may *set* ``app.state.store``; reading it back is for tests.)"""
    offences = [f"{rel}:{line}: {what}" for rel, tree in _modules(skip=("pool/",)) for line, what in _store_reaches(tree)]
    assert not offences, "store reached around the Pool:\n" + "\n".join(offences)
    pool_modules = dict(_modules())
    assert _store_reaches(pool_modules["pool/pool.py"]), "the check sees nothing: it would pass on anything"
