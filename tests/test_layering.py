"""The package imports one way: the front end (dsl/) never imports the interpreter, the
interpreter's layers (core, data, training, commands) import only downward, and no module of
dp imports itself back through others (no import circles, lazy imports inside functions
included)."""

from __future__ import annotations

import ast
import re

from conftest import ROOT

PACKAGES = {"dsl": "dp.dsl", "stdlib": "dp.stdlib", "interpreter": "dp.interpreter",
            "api": "dp"}  # the Python API (`import dp`), on top of everything
# each may import only those before it; export, beside training, imports only the core (below)
LAYERS = ["core", "data", "training", "export", "commands"]


def _modules() -> dict[str, ast.Module]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package,) + parts).removesuffix(".__init__")
            found[name] = (ast.parse(path.read_text()), path.name == "__init__.py")
    return found


def _imports(name: str, tree: ast.Module, is_package: bool, known) -> set[str]:
    """The dp modules `name` imports, anywhere in the file."""
    here = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            mod = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {n: _imports(n, tree, pkg, mods) for n, (tree, pkg) in mods.items()}


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                circles.append(sorted(part))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return circles


def _edges() -> dict[str, set[str]]:
    """The graph without a module's arrow to its own package's __init__ (which Python has
    run before the module: it is not a circle)."""
    return {n: {t for t in ts if not n.startswith(t + ".")} for n, ts in _graph().items()}


def test_no_import_circles():
    assert _circles(_edges()) == []


def test_the_interpreter_layers_import_only_downward():
    for name, targets in _graph().items():
        if not name.startswith("dp.interpreter."):
            continue
        layer = LAYERS.index(name.split(".")[2])
        for t in targets:
            if t.startswith("dp.interpreter.") and t.count(".") >= 2:
                assert LAYERS.index(t.split(".")[2]) <= layer, f"{name} imports {t}"


def test_export_imports_only_the_core():
    for name, targets in _graph().items():
        if name.startswith("dp.interpreter.export"):
            for t in targets:
                assert not t.startswith(("dp.interpreter.data", "dp.interpreter.training")), \
                    f"{name} imports {t}"


def test_only_the_api_imports_the_api():
    """The API (api/, the package `dp` itself) sits on top: the front end and the
    interpreter never import it."""
    graph = _graph()
    api = {n for n in graph if n == "dp" or n.split(".")[1] not in ("dsl", "stdlib",
                                                                       "interpreter")}
    assert {"dp", "dp.net", "dp.program"} <= api
    for name, targets in graph.items():
        if name not in api:
            assert not targets & api, f"{name} imports {sorted(targets & api)}"


def test_dsl_does_not_import_the_interpreter():
    for path in (ROOT / "dsl").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+(dp\.)?interpreter", text, re.M), path
        assert "numpy" not in text and "numba" not in text, path


def test_the_import_walk_sees_imports_and_circles():
    """The walk itself: it sees relative, absolute and lazy imports, and finds a circle."""
    graph = _edges()
    assert "dp.interpreter.core.plan" in graph["dp.interpreter.core.lower"]  # relative
    assert "dp.dsl.checker" in graph["dp.interpreter.commands.repl"]  # absolute
    lazy = graph["dp.interpreter.commands.handlers"]
    assert "dp.interpreter.commands.repl_terminal" in lazy
    graph["dp.interpreter.core.plan"].add("dp.interpreter.core.lower")
    (circle,) = _circles(graph)
    assert {"dp.interpreter.core.lower", "dp.interpreter.core.plan"} <= set(circle)
