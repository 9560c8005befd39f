"""The import graph (every import statement, lazy ones too, read with ast): no module imports
itself through others, the simulator core never reaches torch, triton, the runtime or the
kernels, and no test imports benchmarks/."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("kvsim", "runtime", "kernels")
# runtime/ and kernels/ import as kvsim.runtime, kvsim.kernels where the package maps them there
PREFIX = "kvsim." if importlib.util.find_spec("kvsim.runtime") else ""
PACKAGES = ("kvsim", "runtime", "kernels")
# the runtime side: runtime/, kernels/, a method's runtime half and kernels, `kvsim measure`
RUNTIME_SIDE = ("runtime", "kvsim.runtime.*", "kernels", "kvsim.kernels.*", "kvsim.runtime*", "kvsim.kernels*",
                "kvsim.methods.*.runtime", "kvsim.methods.*.kernels*", "kvsim.commands.measure")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return PREFIX + name if parts[0] in ("runtime", "kernels") else name


def imports(path: Path) -> set[str]:
    """Modules ``path`` imports (absolute names; ``from a import b`` counts a.b when a.b is a
    module of ours, else a)."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES + ("torch", "triton", "benchmarks")}


FILES = [p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")]
MODULES = {module_name(p) for p in FILES}
GRAPH = {module_name(p): imports(p) for p in FILES}


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH.get(v, ()):
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def runtime_side(name: str) -> bool:
    from fnmatch import fnmatch
    return any(fnmatch(name, pattern) for pattern in RUNTIME_SIDE)


def test_no_import_cycles():
    assert cycles() == []


def test_simulator_core_never_reaches_torch_or_the_runtime():
    core = [m for m in GRAPH if m.startswith("kvsim") and not runtime_side(m)]
    for module in core:
        bad = {m for m in GRAPH[module] if m.split(".")[0] in ("torch", "triton") or runtime_side(m)}
        assert not bad, f"{module} imports {bad}"


def test_tests_never_import_benchmarks():
    for path in (ROOT / "tests").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(n.split(".")[0] == "benchmarks" for n in names), path
