"""The layers import one way: API -> router -> (native engine | pool -> worker host -> DSPy).

- No import cycle among the modules of ``router/``, ``primitives/``, ``modules/``, ``bridge/``
  and ``pool/`` (module-level imports; ``TYPE_CHECKING`` blocks excluded).
- The native engine (``primitives``, ``modules``, ``signatures``, ``adapters``, ``lm``) and the
  pool never import the router, the bridge or pipelines, not even inside a function.
- Every one of those modules imports on its own in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import dspex

SRC = Path(dspex.__file__).parent
CYCLE_FREE = ("router", "primitives", "modules", "bridge", "pool")
ENGINE = ("primitives", "modules", "signatures", "adapters", "lm", "pool")
UPPER = ("dspex.router", "dspex.bridge", "dspex.pipelines")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_in(packages: tuple[str, ...]) -> dict[str, Path]:
    return {module_name(p): p for pkg in packages for p in sorted((SRC / pkg).rglob("*.py"))}


def _resolve(node: ast.ImportFrom, here: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = here.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The ``dspex`` modules ``path`` imports (``from pkg import mod`` counts ``pkg.mod``)."""
    tree = ast.parse(path.read_text())
    here, is_pkg = module_name(path), path.name == "__init__.py"
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(node, here, is_pkg)
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
            if not top_level_only or isinstance(node, ast.If | ast.Try | ast.With):
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        visit([child])

    visit(tree.body)
    return {name for name in found if name.startswith("dspex")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_no_import_cycle_in_the_core_layers() -> None:
    mods = modules_in(CYCLE_FREE)
    graph = {
        name: {dep for dep in imports(path, top_level_only=True) if dep in mods and dep != name}
        for name, path in mods.items()
    }
    # a module imported from a package also runs the package's __init__
    for name in list(graph):
        parent = name.rpartition(".")[0]
        for dep in list(graph[name]):
            pkg = dep.rpartition(".")[0]
            if pkg in mods and pkg != name and pkg != parent:
                graph[name].add(pkg)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_the_engine_and_the_pool_never_import_upper_layers() -> None:
    offenders = {
        name: sorted(d for d in imports(path, top_level_only=False) if d.startswith(UPPER))
        for name, path in modules_in(ENGINE).items()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.timeout(900)  # one fresh interpreter per module: minutes on a loaded 2-core box
def test_each_core_module_imports_alone_in_a_fresh_interpreter() -> None:
    names = [n for n in modules_in(CYCLE_FREE) if not n.endswith("__main__")]

    def load(name: str) -> tuple[str, int, str]:
        done = subprocess.run(
            [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120
        )
        return name, done.returncode, done.stderr[-400:]

    with ThreadPoolExecutor(4) as pool:
        failed = [r for r in pool.map(load, names) if r[1] != 0]
    assert failed == []


def test_settings_never_import_upper_layers() -> None:
    """Validating a setting must not pull in the bridge, router or pipelines."""
    found = imports(SRC / "settings.py", top_level_only=False)
    assert not {m for m in found if m.startswith(UPPER)}, found
