"""House rules, checked mechanically: the package root's names, lazy imports, no import cycle,
module and class sizes, no reach into another object's store, no private imports across modules."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vitrina

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "vitrina"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300
# Heavy optional dependencies that `import vitrina` and `vitrina --help` must not load (ray and umap
# may be absent here: then the check holds trivially, and still guards an environment that has them).
HEAVY = (
    "torch",
    "transformers",
    "fastapi",
    "faiss",
    "qdrant_client",
    "pyarrow",
    "ray",
    "umap",
    "sklearn",
    "rapidocr_onnxruntime",
    "pytesseract",
)
# Private names one vitrina module may import from another, as "importing.module: source.module._name".
# Keep it short: a name another module needs is public.
PRIVATE_IMPORTS_ALLOWED: set[str] = set()


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its __init__)."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run when the module is imported: not inside functions, not under TYPE_CHECKING
    (but inside module-level if / try / with blocks and class bodies)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                    visit(block)
            elif isinstance(node, (ast.With, ast.ClassDef)):
                visit(node.body)

    visit(tree.body)
    return found


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name of what ``from ... import`` names, in ``module`` (at ``path``)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported_modules(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The vitrina modules an import statement loads by name (a ``from pkg import sub`` loads sub)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    target = _resolve(module, path, node)
    submodules = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES}
    # `from . import sub` loads the submodule; the package itself counts only for its own names
    # (the package is being imported already when one of its modules runs).
    names_of_target = len(submodules) < len(node.names)
    return submodules | ({target} if target in MODULES and names_of_target else set())


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges: set[str] = set()
        for node in _module_level_imports(tree):
            edges |= _imported_modules(module, path, node)
        graph[module] = edges - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
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
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


# -- the package root ---------------------------------------------------------------------------


def _root_names() -> set[str]:
    """The public names ``vitrina/__init__.py`` binds (imports, assignments, definitions)."""
    tree = ast.parse((SRC / "__init__.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    lazy = [n.body for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)]
    for node in tree.body + [b for body in lazy for b in body]:  # names loaded on first use (PEP 562) too
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")} | {"__version__"}


def _documented_root_names() -> set[str]:
    """Names the README and docs use from the package root: ``from vitrina import X`` and
    ``vitrina.X`` where X is not a submodule."""
    names: set[str] = set()
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        groups = re.findall(r"from vitrina import \(([^)]*)\)", text) + re.findall(
            r"from vitrina import ([\w ,]+)", text
        )
        for group in groups:
            names |= {n.strip().split(" as ")[0] for n in group.replace("\n", ",").split(",") if n.strip()}
        for name in re.findall(r"(?<![\w./-])vitrina\.([A-Za-z_]\w*)", text):
            if f"vitrina.{name}" not in MODULES and name not in ("json", "toml", "yaml", "db", "log"):
                names.add(name)
    return names


def test_all_is_exactly_the_public_names_of_the_package_root() -> None:
    declared = set(vitrina.__all__)
    assert len(declared) == len(vitrina.__all__), "duplicates in __all__"
    missing = [n for n in vitrina.__all__ if not hasattr(vitrina, n)]
    assert not missing, f"in __all__ but not defined: {missing}"
    public = _root_names()
    assert not public - declared, f"public in vitrina/__init__.py but not in __all__: {sorted(public - declared)}"
    assert not declared - public, f"in __all__ but not bound by vitrina/__init__.py: {sorted(declared - public)}"


def test_names_the_docs_use_from_the_package_root_are_in_all() -> None:
    documented = _documented_root_names()
    assert documented, "no use of the package root found in the docs: the scan is broken"
    assert not documented - set(vitrina.__all__), (
        f"documented but not exported: {sorted(documented - set(vitrina.__all__))}"
    )


@pytest.mark.parametrize(
    "code",
    [
        "import vitrina",
        # `vitrina --help`, as the console script runs it
        "import sys; from vitrina.cli import main; sys.argv = ['vitrina', '--help']\ntry:\n    main()\nexcept SystemExit:\n    pass",
    ],
    ids=["import", "help"],
)
def test_import_and_help_load_no_heavy_dependency(code: str) -> None:
    check = f"{code}\nimport sys\nprint('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.strip().splitlines()[-1] == "LOADED []", out[-2000:]


# -- structure ----------------------------------------------------------------------------------


def test_the_import_graph_is_read_from_the_sources() -> None:
    graph = _import_graph()
    # Guards the scan itself: a known module-level edge, and a TYPE_CHECKING-only one left out.
    assert "vitrina.errors" in graph["vitrina.images"]
    assert "vitrina.collection" not in graph["vitrina.importers.run"]
    assert {"vitrina.importers.common", "vitrina.importers.run"} <= graph["vitrina.importers"]


def test_no_import_cycle_at_module_level() -> None:
    cycles = _cycles(_import_graph())
    assert not cycles, "module-level import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_module_over_the_size_limit() -> None:
    long = {
        m: n for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_class_over_the_size_limit() -> None:
    long = {}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ClassDef)
                and (n := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_CLASS_LINES
            ):
                long[f"{module}.{node.name}"] = n
    assert not long, f"classes over {MAX_CLASS_LINES} lines: {long}"


def test_no_reach_into_another_objects_store() -> None:
    """Only an object itself touches its ``_store``: ``coll._store`` outside the store package is the
    private reach the store's public view replaces."""
    reaches = []
    for module, path in MODULES.items():
        if module == "vitrina.store" or module.startswith("vitrina.store."):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "_store":
                if not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                    reaches.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not reaches, f"._store reached from outside its object: {reaches}"


def test_no_private_import_across_modules() -> None:
    """ruff's PLC2701 exempts imports within the same top-level package, which is exactly where
    vitrina's private helpers leak; so this looks at every import, also those inside functions."""
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _resolve(module, path, node)
            if not source.startswith("vitrina") or source == module:
                continue
            for alias in node.names:
                name = alias.name
                if name.startswith("_") and not name.startswith("__"):
                    key = f"{module}: {source}.{name}"
                    if key not in PRIVATE_IMPORTS_ALLOWED:
                        found.append(f"{key} (line {node.lineno})")
    assert not found, "private names imported across modules: " + "; ".join(found)


def test_every_heavy_dependency_is_used_somewhere() -> None:
    """A name in HEAVY that vitrina no longer imports would make the lazy check vacuous for it."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in MODULES.values())
    unused = [name for name in HEAVY if not re.search(rf"^\s*(import|from) {name}\b", text, re.M)]
    assert not unused, unused


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
