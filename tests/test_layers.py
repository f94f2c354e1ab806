"""The import graph of `inservice/`: no cycle between modules, no import from a lower layer to a higher one.

The imports are read from the source (ast), nothing is imported: function-level (lazy) imports count as
much as top-level ones, and so does a module named in a string (`importlib.import_module("inservice.x")`,
`"inservice.x:func"`). Importing from one's own package (`inservice.feeds.core` → `inservice.feeds`) is
not an edge: Python runs a package's `__init__` before any of its modules anyway.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "inservice"

# Top → bottom: a module may import its own layer and those below it, never one above.
# A pattern matches the module itself and (unless it is exact elsewhere) everything under it;
# an exact match wins over a match by prefix, so `inservice.feeds.cli` is in `cli`, not in the channels.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("pipelines", ("inservice.pipelines",)),
    ("assets", ("inservice.assets",)),
    ("cli", ("inservice.cli", "inservice.*.cli", "inservice.rules_cli")),
    ("channels", ("inservice.plans", "inservice.corrections", "inservice.feeds", "inservice.registers",
                  "inservice.overview", "inservice.inbox", "inservice.publish", "inservice.backfill",
                  "inservice.notifications", "inservice.replay")),
    ("ingest", ("inservice.ingest", "inservice.channel")),
    ("warehouse", ("inservice.warehouse", "inservice.receipts", "inservice.failures", "inservice.partners")),
    ("validations", ("inservice.validations",)),
    ("loaders", ("inservice.loaders",)),
    ("base", ("inservice.schemas", "inservice.errors", "inservice.dburl", "inservice.config")),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
MODULE_STRING = re.compile(r"(inservice(?:\.\w+)+)(?::\w+)?")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int

    def where(self) -> str:
        return f"{module_path(self.source)}:{self.line}"


@cache
def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def module_path(name: str) -> str:
    return str(modules()[name].relative_to(ROOT))


def layer_of(module: str) -> str | None:
    exact = [name for name, patterns in LAYERS if any(fnmatch.fnmatchcase(module, p) for p in patterns)]
    if exact:
        return exact[0]
    under = [name for name, patterns in LAYERS if any(fnmatch.fnmatchcase(module, p + ".*") for p in patterns)]
    return under[0] if under else None


def _known(name: str, mods: dict[str, Path]) -> str | None:
    """The module `name` is, or the module that defines it (`inservice.x.y.Name` → `inservice.x.y`)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, mods: dict[str, Path]) -> list[Edge]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Edge] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            # `from pkg import mod` depends on pkg.mod; `from pkg import name` on pkg (its __init__)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = MODULE_STRING.fullmatch(node.value)
            if match and match.group(1) in mods:
                names = [match.group(1)]
        for name in names:
            target = _known(name, mods) if name.startswith("inservice") else None
            if target is None or target == "inservice" or target == module or module.startswith(target + "."):
                continue
            found.append(Edge(module, target, node.lineno))
    return found


def graph() -> list[Edge]:
    mods = modules()
    return [edge for module, path in mods.items() for edge in imports(module, path, mods)]


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    succ: dict[str, set[str]] = {}
    for e in edges:
        succ.setdefault(e.source, set()).add(e.target)
        succ.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return sorted(found)


def violations() -> list[str]:
    edges = graph()
    out = []
    for component in cycles(edges):
        inside = set(component)
        ties = sorted({f"{e.source} → {e.target} ({e.where()})" for e in edges
                       if e.source in inside and e.target in inside})
        out.append(f"import cycle {' ↔ '.join(component)}: {'; '.join(ties)}")
    for e in sorted(edges, key=lambda e: (e.source, e.line, e.target)):
        src, dst = layer_of(e.source), layer_of(e.target)
        if src is not None and dst is not None and RANK[dst] < RANK[src]:
            out.append(f"upward import: {e.source} ({src}) imports {e.target} ({dst}) at {e.where()}")
    return out


def test_every_module_has_a_layer() -> None:
    missing = [m for m in modules() if m != "inservice" and layer_of(m) is None]
    assert not missing, f"modules in no layer (add them to LAYERS in {Path(__file__).name}): {missing}"


def test_the_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    """A function-level import, a relative one, a module named in a string and `from pkg import mod` all
    count; a name imported from a package counts as the package; importing one's own package does not."""
    mods = {"inservice.a": tmp_path / "a.py", "inservice.b": tmp_path / "b" / "__init__.py",
            "inservice.b.c": tmp_path / "b" / "c.py", "inservice.d": tmp_path / "d.py"}
    source = ("import logging\n"
              "from inservice.b import c\n"
              "def f():\n    from inservice.d import thing\n"
              "HOOK = 'inservice.b.c:main'\n"
              "NOT_A_MODULE = 'inservice.run'\n")
    mods["inservice.a"].write_text(source, encoding="utf-8")
    (tmp_path / "b").mkdir()
    mods["inservice.b.c"].write_text("from . import VALUE\nfrom .. import d\n", encoding="utf-8")
    assert [(e.target, e.line) for e in imports("inservice.a", mods["inservice.a"], mods)] == [
        ("inservice.b.c", 2), ("inservice.d", 4), ("inservice.b.c", 5)]
    assert [(e.target, e.line) for e in imports("inservice.b.c", mods["inservice.b.c"], mods)] == [
        ("inservice.d", 2)]


def test_cycles_are_found() -> None:
    edges = [Edge("x", "y", 1), Edge("y", "z", 1), Edge("z", "x", 1), Edge("z", "w", 1), Edge("w", "v", 1)]
    assert cycles(edges) == [["x", "y", "z"]]


def test_layers_of_the_cli_modules() -> None:
    assert layer_of("inservice.feeds.cli") == "cli"
    assert layer_of("inservice.warehouse.cli") == "cli"
    assert layer_of("inservice.feeds.core") == "channels"
    assert layer_of("inservice.cli") == "cli"
    assert layer_of("inservice.config") == "base"


def test_no_cycle_and_no_upward_import() -> None:
    found = violations()
    assert not found, "the import graph of inservice/ breaks its layers:\n" + "\n".join(found)
