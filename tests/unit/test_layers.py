"""``tornado_app/services/`` is a handful of capability packages, each importing only the ones
below it, and no module imports itself back through others (issue 21, item 7; acceptance 7).

The order, lowest first, is ``LAYERS``; docs/architecture.md draws it. An import that only a
type checker reads (under ``if TYPE_CHECKING:``) is not an edge: it never runs.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "run.py").exists())
SERVICES = ROOT / "tornado_app" / "services"
LAYERS = ["storage", "operations", "delivery", "identity", "chat", "outbound", "integration"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def runtime_imports(path: Path) -> set:
    """The tornado_app modules ``path`` imports when it runs (TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{a.name}" for a in node.names]
            found.update(n for n in names if n.startswith("tornado_app."))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("tornado_app."))
    return found


def modules() -> dict:
    return {module_name(p): p for p in SERVICES.rglob("*.py")}


def existing(name: str, known: dict):
    """``name`` if it is a module, else its parent (``from pkg import Class``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def layer_of(name: str):
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["tornado_app", "services"] and parts[2] in LAYERS else None


def test_services_is_a_handful_of_capability_packages():
    top = sorted(p.name for p in SERVICES.iterdir() if p.name not in ("__pycache__",))
    assert top == sorted(LAYERS + ["__init__.py"]), top
    for layer in LAYERS:
        face = SERVICES / layer / "__init__.py"
        assert face.exists() and ast.get_docstring(ast.parse(face.read_text())), f"{layer}/__init__.py needs a docstring"


def test_no_import_runs_from_a_lower_capability_to_a_higher_one():
    known = modules()
    upward = []
    for name, path in known.items():
        here = layer_of(name)
        if here is None:
            continue  # services/__init__.py: the container wires every capability
        for target in runtime_imports(path):
            target = existing(target, known) or ""
            there = layer_of(target)
            if there is not None and LAYERS.index(there) > LAYERS.index(here):
                upward.append(f"{name} -> {target}")
    upward = sorted(set(upward))
    assert upward == [], "imports from a lower capability to a higher one:\n" + "\n".join(sorted(upward))


def test_no_circle_between_modules():
    known = modules()
    graph = {name: {existing(t, known) for t in runtime_imports(path)} - {None, name}
             for name, path in known.items()}
    circles, state = [], {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + "."):
                continue  # a face importing its own modules is not a circle
            if state.get(nxt) == 1:
                circles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert circles == [], "import circles:\n" + "\n".join(circles)
