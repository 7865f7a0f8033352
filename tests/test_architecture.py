"""The layers of trtq (docs/architecture.md): every import, inside functions too, goes down or sideways, never
up; no import cycle; no module over 800 lines and no function over 120 without a reason at its top."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "trtq"

#: Lowest first. A module may import its own layer and the layers below it (docs/architecture.md).
LAYERS = [
    ("foundation", ["trtq", "trtq.errors", "trtq.defaults", "trtq.progress", "trtq.fileio", "trtq.jsonio",
                    "trtq.outputs", "trtq.usercode", "trtq.host"]),
    ("models, data, files", ["trtq.graph", "trtq.calib", "trtq.data", "trtq.cache", "trtq.ort", "trtq.report",
                             "trtq.assets"]),
    ("compare", ["trtq.compare"]),
    ("runtimes", ["trtq.runtime", "trtq.backend", "trtq.bench", "trtq.deploy"]),
    ("precision", ["trtq.precision"]),
    ("flows", ["trtq.pipeline"]),
    ("front", ["trtq.cli", "trtq.quickstart", "trtq.__main__"]),
]

#: Imports a layer's rule allows that the house still forbids (what each module must not know).
FORBIDDEN = {
    "trtq.backend": ["trtq.calib", "trtq.report", "trtq.bench", "trtq.runtime", "trtq.deploy"],  # TensorRT/CUDA
    "trtq.bench": ["trtq.backend"],  # the CPU timings receive models; TensorRT rows come from the flows
    "trtq.compare": ["trtq.ort", "trtq.calib"],  # pure: arrays in, numbers out
    # evaluation compares runtimes (trtq.runtime.base): which kind runs a model is not its business
    "trtq.pipeline.evaluation": ["trtq.backend"],
    "trtq.pipeline.streaming": ["trtq.backend"],
}

MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 120
#: What a function over MAX_FUNCTION_LINES says near its top, with its reason.
LONG_MARK = "Long because"


def _modules() -> Dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str:
    """The module (or package) that ``name`` names: ``trtq.graph.qdq.quantize_model`` -> ``trtq.graph.qdq``."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> Set[str]:
    """Every trtq module ``module`` imports, at its top and inside its functions."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(_resolve(alias.name) for alias in node.names if alias.name.split(".")[0] == "trtq")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "trtq":
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in MODULES else _resolve(target))
    found.discard(module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def layer_of(module: str) -> int:
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or (prefix != "trtq" and module.startswith(prefix + "."))  # the package's
            if inside and len(prefix) > best:                                # __init__ is the root alone
                best, index = len(prefix), i
    assert index is not None, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return index


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_imports_inside_functions():
    """The checks below are only as good as the walk: a lazy import inside a function counts."""
    assert "trtq.backend.build" in GRAPH["trtq.pipeline.building"]  # imported inside build_engine only
    assert "trtq.graph.qdq" in GRAPH["trtq.backend.build"]


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_sits_in_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_goes_up_a_layer():
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {i} ({LAYERS[layer_of(i)][0]})"
              for m, targets in GRAPH.items() for i in sorted(targets) if layer_of(i) > layer_of(m)]
    assert upward == []


@pytest.mark.parametrize("owner", sorted(FORBIDDEN))
def test_what_each_module_must_not_know(owner):
    offending = [f"{m} imports {i}" for m, targets in GRAPH.items() if m == owner or m.startswith(owner + ".")
                 for i in sorted(targets) for banned in FORBIDDEN[owner] if i == banned or i.startswith(banned + ".")]
    assert offending == []


def test_modules_and_functions_stay_readable():
    too_long = [f"{m}: {sum(1 for _ in p.open(encoding='utf-8'))} lines" for m, p in MODULES.items()
                if sum(1 for _ in p.open(encoding="utf-8")) > MAX_MODULE_LINES]
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                top = "\n".join(lines[node.lineno - 1: node.body[0].end_lineno + 3])
                if length > MAX_FUNCTION_LINES and LONG_MARK not in top:
                    too_long.append(f"{module}.{node.name}: {length} lines, no '{LONG_MARK} ...' at its top")
    assert too_long == []
