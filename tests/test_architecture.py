"""The package's structure, read from the source (AST): what may reach what."""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import sys
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
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


# --- imports: who may import whom (ARCHITECTURE.md) -----------------------------------------------------------
# Every top-level part of ``src/steplake`` (a package or a module) sits on a floor; a part imports parts of its
# own floor or of lower ones, never higher, and the parts' graph has no cycle. ARCHITECTURE.md says the same.
FLOORS: dict[str, int] = {
    # 0, the ground floor: no database, no network; ``__init__`` only holds ``__version__`` (its public names
    # are imported lazily, by name)
    "__init__": 0, "errors": 0, "types": 0, "records": 0, "rules": 0, "filters": 0, "config": 0, "availability": 0,
    "store": 1,  # the Store protocol and its two backends
    "upstreams": 2, "model": 2, "rewards": 2, "batches": 2, "render": 2,  # parts that know nothing of the store or the pool
    "pool": 3, "exports": 3,  # the one door to the store, and the exports it runs
    "gateway": 4, "api": 4, "dashboard": 4,  # HTTP: the routes call the Pool
    # wiring and entry points: create_app, the CLI, the Python client, the demo, the trainer loop
    "app": 5, "cli": 5, "__main__": 5, "client": 5, "demo": 5, "train": 5, "serve_info": 5,
    "training": 5,  # `steplake train` and `demo --train`: a client of the API, like the demo
}
HTTP_AND_POOL = ("pool", "gateway", "api", "dashboard")
STORE_PROTOCOL = "steplake.store.base"
SQLITE_BACKEND = ("steplake.store.sqlite", "steplake.store.schema")  # sqlite*.py and the SQLite DDL
POSTGRES_BACKEND = "steplake.store.postgres"
RULES_MAY_IMPORT = ("steplake.errors", "steplake.records", "steplake.types", "steplake.rules", "numpy")
WIRING = {"app": {"cli"}, "cli": {"__main__"}, "__main__": set()}  # wiring module → the only parts importing it


@dataclass(frozen=True)
class Imp:
    """One import: module ``source`` (file ``path``, line ``line``) imports ``target`` (absolute name)."""

    source: str
    path: str
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} → {self.target}"


def _module_name(path: Path) -> str:
    parts = ["steplake", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports_of(name: str, path: Path, known: Collection[str]) -> list[Imp]:
    """Every import statement of the module, wherever it is (top level, in a function, under TYPE_CHECKING, in
    a try): relative names resolved as Python does; ``from pkg import sub`` names the submodule ``pkg.sub``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    rel = path.relative_to(SRC.parent).as_posix()
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
        if isinstance(node, ast.Import):
            out += [Imp(name, rel, node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                else node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append(Imp(name, rel, node.lineno, sub if sub in known else base))
    return out


@functools.cache
def _graph() -> tuple[Imp, ...]:
    """Every import of every module of the package, each once."""
    modules = _all_modules()
    return tuple(dict.fromkeys(imp for name, path in modules.items() for imp in _imports_of(name, path, modules)))


def _own(imps: Iterable[Imp]) -> list[Imp]:
    return [i for i in imps if i.target == "steplake" or i.target.startswith("steplake.")]


def _part(module: str) -> str:
    """The top-level part a module belongs to: ``steplake.store.sqlite`` → ``store``, ``steplake`` → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _under(module: str, *prefixes: str) -> bool:
    """``module`` is one of ``prefixes`` or inside it; a prefix ending in a module name also matches the
    modules named after it (``steplake.store.sqlite`` matches ``steplake.store.sqlite_writes``)."""
    return any(module == p or module.startswith((p + ".", p + "_")) for p in prefixes)


def test_the_import_reader_sees_relative_function_level_and_type_checking_imports() -> None:
    """The checks below read what Python would import (so they cannot pass for want of seeing)."""
    found = {(i.source, i.target) for i in _graph()}
    expected = {
        ("steplake.cli", "steplake.app"),  # ``from .app import create_app`` inside a function
        ("steplake.client", "steplake.errors"),  # ``from . import errors as E``: a submodule
        ("steplake.store.sqlite", "steplake.store.base"),  # relative, one level
        ("steplake.api.auth", "steplake.store.base"),  # relative, two levels
    }
    assert expected <= found, f"not seen: {sorted(expected - found)}"
    guarded = [i for i in _graph() if i.source == "steplake.pool.pool" and i.target.startswith("steplake.rewards")]
    assert guarded, "the TYPE_CHECKING and function-level imports of pool/pool.py are not seen"


def test_every_part_of_the_package_is_on_a_floor() -> None:
    """A new top-level package or module gets its floor here and in ARCHITECTURE.md."""
    parts = {_part(m) for m in _all_modules()}
    assert parts == set(FLOORS), (f"parts without a floor: {sorted(parts - set(FLOORS))}; "
                                  f"floors of parts that are gone: {sorted(set(FLOORS) - parts)}")


def test_imports_run_down_the_floors() -> None:
    bad = [f"{i}  ({_part(i.source)} on floor {FLOORS[_part(i.source)]} imports {_part(i.target)} on floor "
           f"{FLOORS[_part(i.target)]})" for i in _own(_graph())
           if FLOORS.get(_part(i.target), 0) > FLOORS.get(_part(i.source), 0)]
    assert not bad, "imports up the floors:\n" + "\n".join(bad)


def test_pool_gateway_api_and_dashboard_see_only_the_store_protocol() -> None:
    """From ``store/`` they import ``steplake.store.base`` (the Store protocol, its records) and nothing else: no
    backend, no ``open_store`` (that is create_app's and the CLI's), no SQL helper."""
    bad = [str(i) for i in _own(_graph()) if _part(i.source) in HTTP_AND_POOL and _part(i.target) == "store"
           and i.target != STORE_PROTOCOL]
    assert not bad, f"imports of store/ other than {STORE_PROTOCOL}:\n" + "\n".join(bad)


def test_the_store_imports_nothing_above_it() -> None:
    above = {p for p, floor in FLOORS.items() if floor > FLOORS["store"]}
    bad = [str(i) for i in _own(_graph()) if _part(i.source) == "store" and _part(i.target) in above]
    assert not bad, "the store imports what is built on it:\n" + "\n".join(bad)


def _chain(start: str, edges: dict[str, list[Imp]], goal: Callable[[str], bool]) -> list[Imp] | None:
    """The imports from ``start`` to a module ``goal`` accepts (breadth first), or None."""
    seen, queue = {start}, [(start, list[Imp]())]
    while queue:
        module, path = queue.pop(0)
        for imp in edges.get(module, []):
            if goal(imp.target):
                return [*path, imp]
            if imp.target not in seen:
                seen.add(imp.target)
                queue.append((imp.target, [*path, imp]))
    return None


def test_the_postgresql_backend_never_reaches_the_sqlite_one() -> None:
    """No module ``store/postgres*`` imports ``store/sqlite*`` or the SQLite DDL (``store/schema.py``), directly
    or through a shared store module; nor the other way round."""
    edges: dict[str, list[Imp]] = {}
    for imp in _own(_graph()):
        if _part(imp.source) == _part(imp.target) == "store":
            edges.setdefault(imp.source, []).append(imp)
    crossings: dict[Imp, list[Imp]] = {}  # the import that crosses → the shortest chain that ends with it
    for module in _all_modules():
        if _under(module, POSTGRES_BACKEND):
            chain = _chain(module, edges, lambda t: _under(t, *SQLITE_BACKEND))
        elif _under(module, *SQLITE_BACKEND):
            chain = _chain(module, edges, lambda t: _under(t, POSTGRES_BACKEND))
        else:
            continue
        if chain and len(chain) < len(crossings.get(chain[-1], chain + chain)):
            crossings[chain[-1]] = chain
    bad = [" ; ".join(map(str, chain)) for chain in crossings.values()]
    assert not bad, "one backend reaches the other:\n" + "\n".join(bad)


def test_the_rules_import_only_the_ground_floor() -> None:
    """``rules/`` is pure: the standard library, numpy, ``errors``, ``records``, ``types`` and itself."""
    bad = [str(i) for i in _graph() if _part(i.source) == "rules" and i.target.split(".")[0] != "__future__"
           and i.target.split(".")[0] not in sys.stdlib_module_names and not _under(i.target, *RULES_MAY_IMPORT)]
    assert not bad, "rules/ imports beyond the ground floor:\n" + "\n".join(bad)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its nodes in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_parts() -> None:
    imps = [i for i in _own(_graph()) if _part(i.source) != _part(i.target)]
    graph: dict[str, set[str]] = {}
    for i in imps:
        graph.setdefault(_part(i.source), set()).add(_part(i.target))
    cycle = _cycle(graph)
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the search finds cycles
    if cycle:
        shown = [next(str(i) for i in imps if (_part(i.source), _part(i.target)) == pair)
                 for pair in zip(cycle, cycle[1:], strict=False)]
        raise AssertionError(f"import cycle {' → '.join(cycle)}:\n" + "\n".join(shown))


def test_wiring_modules_are_imported_by_nothing_but_the_entry_points() -> None:
    """``app`` (create_app) is imported by the CLI only, the CLI by ``__main__`` only: nothing below wires."""
    bad = [str(i) for i in _own(_graph()) if _part(i.target) in WIRING and _part(i.source) != _part(i.target)
           and _part(i.source) not in WIRING[_part(i.target)]]
    assert not bad, "wiring imported from below:\n" + "\n".join(bad)


def test_architecture_md_shows_the_floors_the_test_enforces() -> None:
    """The floor table of ARCHITECTURE.md names each part on the floor ``FLOORS`` gives it."""
    doc = (SRC.parents[1] / "ARCHITECTURE.md").read_text()
    shown: dict[str, int] = {}
    for floor, cells in re.findall(r"^\| (\d) \| (.+?) \|", doc, re.M):
        shown.update({name.rstrip("/"): int(floor) for name in re.findall(r"`([\w/]+)`", cells)})
    assert shown == FLOORS, f"ARCHITECTURE.md: {shown} != FLOORS"
