"""The floor plan of docs/architecture.md, checked on the source (issue 11): imports run one way.

- nothing below `perf/` imports `preedit.perf`;
- the core (`preedit/`, less the two top façades `preedit/cli.py`, which names every layer, and
  `preedit/api.py`, the Python API over the client) imports none of `preedit.client`,
  `preedit.training`, `preedit.export`, `preedit.perf`;
- `training/`, `export/`, `client/` import none of each other;
- no import circle among the modules' top-level imports (the ones that run at import time).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"preedit": ROOT / "preedit", "preedit.client": ROOT / "client", "preedit.export": ROOT / "export",
            "preedit.perf": ROOT / "perf", "preedit.training": ROOT / "training"}
UPPER = ("preedit.client", "preedit.training", "preedit.export", "preedit.perf")
FACADES = {"preedit.api": ("preedit.client",)}  # a top module and the layer it composes (cli: all)  # top modules and the layers they compose


def _modules() -> Dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            if "templates" in rel.parts:  # run inside Triton, not as part of the package
                continue
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg, *parts]) if parts else pkg
            if pkg == "preedit" and any(name.startswith(u) for u in UPPER):
                continue
            out[name] = path
    return out


def _imports(name: str, path: Path) -> Iterator[Tuple[str, bool]]:
    """(imported preedit module, at top level?) for each import in a module."""
    tree = ast.parse(path.read_text(), str(path))
    top = set(map(id, tree.body))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        at_top = id(node) in top
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("preedit"):
                    yield a.name, at_top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("preedit"):
                yield mod, at_top
                for a in node.names:  # `from preedit.x import module`
                    yield f"{mod}.{a.name}", at_top


def _layer(mod: str) -> str:
    for u in UPPER:
        if mod == u or mod.startswith(u + "."):
            return u
    return "preedit"


def test_imports_run_one_way():
    mods = _modules()
    assert len(mods) > 100  # the walk found the tree
    bad = []
    for name, path in mods.items():
        if name == "preedit.cli":
            continue
        mine = _layer(name)
        for mod, _ in _imports(name, path):
            theirs = _layer(mod)
            if theirs == mine or theirs in FACADES.get(name, ()):
                continue
            if theirs == "preedit.perf" or mine == "preedit" or (mine != "preedit.perf" and theirs != "preedit"):
                bad.append(f"{name} imports {mod}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_no_import_circle_at_import_time():
    mods = _modules()
    graph: Dict[str, Set[str]] = {}
    for name, path in mods.items():
        graph[name] = {m for m, top in _imports(name, path) if top and m in mods and m != name}
    state: Dict[str, int] = {}
    stack = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                # a package importing its own submodules (its __init__ re-exporting them) is not a circle
                if not all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(cycle, cycle[1:])):
                    raise AssertionError("import circle: " + " -> ".join(cycle))
            elif state.get(m) is None:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
