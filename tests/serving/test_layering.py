"""House rules for serving/: no import cycles (function-level imports included) and nothing from benchmarks/."""
from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVING = REPO_ROOT / "serving"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports anywhere in it (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SERVING.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_serving_has_no_import_cycles():
    graph = _graph()
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str], seen: set[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in stack:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in seen:
                seen.add(dep)
                visit(dep, stack + [dep], seen)

    for start in sorted(graph):
        visit(start, [start], {start})
    # A package importing its own submodules (serving.api -> serving.api.gateway) is not a cycle unless the
    # submodule imports the package back, which the graph shows as an edge too.
    assert not cycles, "import cycles in serving/: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_serving_imports_nothing_from_benchmarks():
    offenders = {_module_name(p): sorted(m for m in _imports(p) if m == "benchmarks" or m.startswith("benchmarks."))
                 for p in SERVING.rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}

