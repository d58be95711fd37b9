"""The package's shape, read from its source with `ast` (imports inside functions and under
TYPE_CHECKING count): no import cycles, imports only downward through the layers, Dagster only in
the Dagster layer and above, few modules at the root, none very long."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "dagster_llmdata"
# lowest first; a module may import from its own layer or one below it
LAYERS = [
    {"errors", "config"},
    {"io"},
    {"judges", "dedup", "store"},
    {"operators"},
    {"spec"},
    {"engine"},
    {"mixture", "defs"},
    {"agent"},
    {"definitions", "location", "components"},
    {"cli", "demo"},
]
BELOW_DAGSTER = {"errors", "config", "io", "judges", "dedup", "store", "operators", "spec", "engine"}
# optional extras, or packages slow to import: a module imports these (or our modules that do) where used
LAZY_OK = {"vllm", "torch", "transformers", "ray", "lancedb", "lance", "sklearn", "scipy", "lightgbm", "onnxruntime",
           "tensorboardX", "gguf", "accelerate", "datasketch", "psycopg2", "playwright", "starlette", "uvicorn"}
MAX_LINES = 400
MAX_ROOT_MODULES = 10


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(["dagster_llmdata", *parts])] = path
    return mods


MODULES = _modules()


def _imports(module: str, path: Path):
    """(imported name, the import node, whether it sits inside a function) for every import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node, id(node) in in_function
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name, node, id(node) in in_function
            for alias in node.names:
                yield f"{name}.{alias.name}", node, id(node) in in_function


def _owner(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for name, _, _ in _imports(module, path):
            target = _owner(name) if name.startswith("dagster_llmdata") else None
            # a package importing its own submodules (its public names) is not a dependency loop
            if target and target != module and not target.startswith(module + "."):
                edges[module].add(target)
    return edges


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_no_import_cycles():
    edges, index, low, stack, on_stack, cycles = _graph(), {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_go_down_the_layers():
    upward = [f"{m} -> {t}" for m, targets in _graph().items() if m != "dagster_llmdata"
              for t in targets if t != "dagster_llmdata" and _layer(t) > _layer(m)]
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))


def test_dagster_only_in_the_dagster_layer_and_above():
    found = [f"{m} imports {name}" for m, path in MODULES.items() if m.count(".") and m.split(".")[1] in BELOW_DAGSTER
             for name, _, _ in _imports(m, path) if name == "dagster" or name.startswith("dagster.") or name.startswith("dagster._")]
    assert not found, "\n".join(found)


def _heavy_modules() -> set[str]:
    """Our modules that import a heavy or optional package at their top, directly or through
    another of our modules."""
    top_edges: dict[str, set[str]] = defaultdict(set)
    heavy = set()
    for module, path in MODULES.items():
        for name, _, inside in _imports(module, path):
            if inside:
                continue
            if name.split(".")[0] in LAZY_OK:
                heavy.add(module)
            elif name.startswith("dagster_llmdata") and (target := _owner(name)) and target != module:
                top_edges[module].add(target)
    grew = True
    while grew:
        grew = False
        for module, targets in top_edges.items():
            if module not in heavy and targets & heavy:
                heavy.add(module)
                grew = True
    return heavy


def test_own_modules_are_imported_at_the_top():
    """An import of our own module inside a function is for one that loads a heavy or optional
    package (torch, vllm, ray, lancedb...); any other hidden import only breaks a loop, which means
    the code sits in the wrong layer. The CLI is the exception: each subcommand loads its own
    implementation, so `llmdata --help` stays quick."""
    heavy, found = _heavy_modules(), []
    for module, path in MODULES.items():
        if module == "dagster_llmdata" or module.startswith("dagster_llmdata.cli"):
            continue
        for name, node, inside in _imports(module, path):
            if inside and isinstance(node, ast.ImportFrom) and name == node.module and name.startswith("dagster_llmdata"):
                target = _owner(name)
                if target not in heavy:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {name}")
    assert not found, "imports of light modules inside functions:\n" + "\n".join(sorted(found))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_short(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES})"


def test_few_modules_at_the_package_root():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root
