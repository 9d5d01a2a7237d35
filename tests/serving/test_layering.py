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
        for module in _imports(path):
            top = module.split(".")[0]
            # loadtest: the load client beside serving/, which only the CLI's `bench` reaches (not in the image)
            if top in sys.stdlib_module_names or top in ("serving", "loadtest") or top not in distributions:
                continue  # accelerator-only packages (optimum-neuron) come with their images
            dists = {d.lower().replace("_", "-") for d in distributions[top]}
            if not dists & server:
                missing[str(path.relative_to(REPO_ROOT))] = sorted(dists)
    assert not missing


# The floors of serving/, bottom up, and what each package may import (itself included). A package lower down
# never imports one above it, so the tree reads top-down: runtime -> api -> stream -> engine -> backends -> model
# -> core, with auth and fleet beside the engine on core alone.
ALLOWED = {
    "serving.core": {"serving.core"},
    "serving.model": {"serving.core", "serving.model"},
    "serving.auth": {"serving.core", "serving.auth"},
    "serving.fleet": {"serving.core", "serving.fleet"},
    "serving.backends": {"serving.core", "serving.model", "serving.backends"},
    "serving.engine": {"serving.core", "serving.model", "serving.backends", "serving.engine"},
    "serving.stream": {"serving.core", "serving.model", "serving.backends", "serving.engine", "serving.auth",
                       "serving.stream"},
    "serving.api": {"serving.core", "serving.model", "serving.backends", "serving.engine", "serving.auth",
                    "serving.fleet", "serving.stream", "serving.api"},
}
PACKAGES = sorted({*ALLOWED, "serving.runtime"})
MAX_LINES = 350


def _package(module: str) -> str | None:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and ".".join(parts[:2]) in PACKAGES else None


def test_imports_only_run_down_the_floors():
    back: list[str] = []
    for module, deps in _graph().items():
        package = _package(module)
        if package is None or package not in ALLOWED:
            continue  # serving/__main__.py and serving.runtime sit on top and may import anything
        for dep in sorted(deps):
            dep_package = _package(dep)
            if dep_package is not None and dep_package not in ALLOWED[package]:
                back.append(f"{module} -> {dep}")
    assert not back, "imports that run back up: " + "; ".join(back)


def test_every_module_sits_in_a_package_of_the_map():
    loose = sorted(p.name for p in SERVING.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not loose, f"modules at serving/'s top level (put each in the package that owns its concern): {loose}"
    packages = {_module_name(p.parent) for p in SERVING.rglob("__init__.py") if p.parent != SERVING}
    assert {p for p in packages if p.count(".") == 1} == set(PACKAGES)


def test_each_package_docstring_says_what_it_owns():
    for init in SERVING.rglob("__init__.py"):
        if init.parent == SERVING:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 60, f"{init.relative_to(REPO_ROOT)}: say in its docstring what it owns and may import"


def test_no_module_over_the_size_limit():
    big = {str(p.relative_to(REPO_ROOT)): n for root in (SERVING, REPO_ROOT / "loadtest")
           for p in root.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_the_load_client_is_not_part_of_the_server():
    client = REPO_ROOT / "loadtest"
    offenders = {_module_name(p): sorted(m for m in _imports(p) if m == "serving" or m.startswith("serving."))
                 for p in client.rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}, "loadtest/ is a client of the HTTP contract only"
    assert not any(m.startswith("loadtest") for p in SERVING.rglob("*.py") for m in _imports(p)
                   if p.name != "__main__.py"), "only the CLI entry may hand `bench` to the client package"
