"""The package's import graph, read from its source (ast): no circle, and no arrow back up the layers
ops <- nn <- model <- inference / train / metrics <- cli. Imports inside functions count too: they run later,
but they are dependencies all the same."""

import ast
from pathlib import Path

import mambast

ROOT = Path(mambast.__file__).parent
# Layer of each top-level module or subpackage of mambast; a module may import its own layer or those below.
LAYERS = [
    {"errors", "atomic", "config", "io", "hub", "runtime", "examples"},
    {"ops"},
    {"nn"},
    {"loading", "model", "weights"},
    {"inference", "train", "metrics", "networks", "infer", "pipeline", "graphs", "evaluate", "video"},
    {"cli", "web", "__main__", "train.cli", "train.__main__", "metrics.cli"},
]


KNOWN_CIRCLES: set[str] = set()   # none: a circle added later must be removed, not listed


def module_name(path: Path) -> str:
    parts = ["mambast", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The mambast modules `name` imports anywhere in its source (a `from X import y` of a submodule y is y)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m in known and m != name}


def layer(name: str) -> int:
    rest = name.split(".")[1:]
    for key in (".".join(rest[:2]), rest[0]):
        for i, members in enumerate(LAYERS):
            if key in members:
                return i
    raise AssertionError(f"{name} is in no layer: add it to LAYERS")


def graph() -> dict[str, set[str]]:
    """Edges between mambast's modules; the root package is left out (a lazy facade that holds __version__)."""
    mods = modules()
    known = set(mods) - {"mambast"}
    return {name: imports(name, path, known) for name, path in mods.items() if name != "mambast"}


def test_no_import_runs_back_up_the_layers():
    up = [f"{a} -> {b}" for a, targets in graph().items() for b in targets if layer(b) > layer(a)]
    assert not up, "imports that run back up the layers: " + "; ".join(sorted(up))


def test_no_import_circle():
    edges, circles = graph(), []
    state: dict[str, int] = {}          # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2
    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    circles = [c for c in circles if c not in KNOWN_CIRCLES]
    assert not circles, "import circles: " + "; ".join(circles)


def test_the_graph_sees_the_layers_it_checks():
    edges = graph()
    assert "mambast.nn" in edges["mambast.model"] and "mambast.loading" in edges["mambast.model"]
    assert "mambast.model" not in edges["mambast.loading"]
