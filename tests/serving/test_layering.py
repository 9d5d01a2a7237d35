"""House rules for serving/: no import cycles (function-level imports included) and nothing from benchmarks/."""
from __future__ import annotations

import ast
import re
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



def _pinned(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[=<>~!\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_server_requirements_carry_what_the_server_imports_and_no_load_client_extras():
    import importlib.metadata
    import sys

    server = _pinned(REPO_ROOT / "requirements-serving.txt")
    bench = _pinned(REPO_ROOT / "requirements-bench.txt")
    assert {"tqdm", "matplotlib"} <= bench and not {"tqdm", "matplotlib"} & server
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for path in SERVING.rglob("*.py"):
        if path.name.startswith("bench"):  # the load client: python -m serving bench, from a checkout
            continue
        for module in _imports(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top == "serving" or top not in distributions:
                continue  # accelerator-only packages (optimum-neuron) come with their images
            dists = {d.lower().replace("_", "-") for d in distributions[top]}
            if not dists & server:
                missing[str(path.relative_to(REPO_ROOT))] = sorted(dists)
    assert not missing
