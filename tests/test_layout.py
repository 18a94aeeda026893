"""The layout rules of issue 31, held by the suite: an AST walk of the source, never a timing.

Each rule is its own test and names its offenders (file and line), so a failure says what to move:

* no import cycle between modules (every import counts: module level, inside functions, under
  ``TYPE_CHECKING``), nor between the subpackages of ``xraycore`` (``inference.backends`` is part of
  ``inference``; the top-level ``xraycore/__init__`` and ``__main__`` are the public doorway, not a room);
* ``streamlit`` imported only under ``xraycore/app/`` (``pages/`` and ``app.py`` are the app itself), and
  nothing else in ``xraycore`` imports ``xraycore.app``;
* ``inference``, ``io``, ``data.decode``, ``reading_room`` and ``clinical`` import no torch, torchvision or
  timm at module level (a reading-room install has none): checked in the source and by importing them in a
  fresh interpreter. The two modules that *are* the torch side of inference (the torch backend and the
  exporter, full install only) are named in :data:`TORCH_SIDE`, and no checked module may import them at
  module level, so they stay behind the function-level import that chooses them;
* no module over 400 lines, no function over 80;
* one helper each for the file hash, the model identity, softmax and the UTC timestamp: found by what the
  code does (hashing what it reads from a file, formatting ``now`` in UTC) or, for the model identity and
  softmax, by name, where every further function of that name must delegate to the one implementation;
* no module named like a standard-library module (``sys.stdlib_module_names``). Module *files* are checked
  without exception. Package folders are checked too, with one exception, ``io``: the issue names that room
  itself, and a package is only ever reached by its dotted path (``xraycore.io.reader``), so it cannot shadow
  the standard library the way the old flat ``io.py`` did (whose own code had to write ``import io as
  _stdio``); inside the package, ``import io`` is plainly the standard library's.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "xraycore"
APP_ROOM = PACKAGE / "app"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
TORCH_NAMES = ("torch", "torchvision", "timm")
TORCH_FREE_ROOMS = ("xraycore.inference", "xraycore.io", "xraycore.data.decode", "xraycore.reading_room",
                    "xraycore.clinical", "xraycore.store", "xraycore.monitoring")
TORCH_SIDE = ("xraycore.inference.backends.torch_runtime", "xraycore.inference.export")
STDLIB_NAMED_PACKAGES_ALLOWED = {"io"}


# --------------------------------------------------------------------------- reading the source


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of xraycore, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def app_files() -> list[Path]:
    """The modules of the library, the pages and app.py: where module and function sizes are held."""
    return [*modules().values(), *sorted((REPO / "pages").glob("*.py")), REPO / "app.py"]


def where(path: Path, node: ast.AST | None = None) -> str:
    line = f":{node.lineno}" if node is not None and hasattr(node, "lineno") else ""
    return f"{path.relative_to(REPO)}{line}"


def imported_names(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """What an import statement names, as absolute dotted names (``from a import b``: ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[:len(package) - node.level + 1]
        base = ".".join(package + ([node.module] if node.module else []))
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def imports_of(module: str) -> list[tuple[ast.AST, list[str]]]:
    """Every import statement of a module, wherever it stands, with the names it imports."""
    path = modules()[module]
    return [(node, imported_names(module, path, node)) for node in ast.walk(tree(path))
            if isinstance(node, (ast.Import, ast.ImportFrom))]


def xraycore_targets(module: str, names: list[str]) -> set[str]:
    """The modules of ours an import reaches (the deepest existing name; a package's own ancestors left out:
    importing a submodule runs its package's ``__init__``, which imports nothing of ours at load)."""
    known = modules()
    targets = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module and not module.startswith(name + "."):
            targets.add(name)
    return targets


@cache
def module_graph() -> dict[str, set[str]]:
    return {module: set().union(*(xraycore_targets(module, names) for _, names in imports_of(module)))
            for module in modules()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in graph.get(node, ()):
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else None


def functions() -> list[tuple[Path, ast.FunctionDef | ast.AsyncFunctionDef]]:
    return [(path, node) for path in app_files() for node in ast.walk(tree(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def library_functions() -> list[tuple[Path, ast.FunctionDef | ast.AsyncFunctionDef]]:
    return [(path, node) for path, node in functions() if path.is_relative_to(PACKAGE)]


def called_names(node: ast.AST) -> set[str]:
    """The names a function calls: ``f(...)`` gives f, ``a.b.f(...)`` gives f."""
    names = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            if isinstance(call.func, ast.Name):
                names.add(call.func.id)
            elif isinstance(call.func, ast.Attribute):
                names.add(call.func.attr)
    return names


def dotted(node: ast.AST) -> str:
    """``hashlib.sha256`` for an attribute chain, '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def calls(node: ast.AST) -> list[ast.Call]:
    return [call for call in ast.walk(node) if isinstance(call, ast.Call)]


def innermost_functions(predicate) -> list[str]:
    """``path:line name`` of every library function (innermost, so a helper nested in another counts once)
    whose own body, nested functions left out, satisfies ``predicate``."""
    found = []
    for path, function in library_functions():
        body = ast.Module(body=[statement for statement in function.body
                                if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef))],
                          type_ignores=[])
        if predicate(body):
            found.append(f"{where(path, function)} {function.name}")
    return found


def delegation_roots(pattern: re.Pattern[str]) -> list[str]:
    """The functions named like ``pattern`` that call no other function named like it: the implementations.
    A wrapper (a cache, a translation into another shape) delegates and is not one."""
    roots = []
    for path, function in library_functions():
        if pattern.search(function.name) and not any(pattern.search(name) for name in called_names(function)
                                                     if name != function.name):
            roots.append(f"{where(path, function)} {function.name}")
    return roots


# --------------------------------------------------------------------------- imports


def test_no_import_cycle_between_modules():
    found = cycles(module_graph())
    assert not found, "import cycles between modules (every import counts, lazy ones too): " + "; ".join(
        " <-> ".join(component) for component in found)


def test_no_import_cycle_between_subpackages():
    rooms: dict[str, set[str]] = defaultdict(set)
    evidence: dict[tuple[str, str], str] = {}
    for module, targets in module_graph().items():
        source = room_of(module)
        for target in targets:
            destination = room_of(target)
            if source and destination and source != destination:
                rooms[source].add(destination)
                evidence.setdefault((source, destination), f"{module} -> {target}")
    found = cycles(dict(rooms))
    described = []
    for component in found:
        edges = [evidence[(a, b)] for a in component for b in component if (a, b) in evidence]
        described.append(" <-> ".join(component) + " (" + ", ".join(edges) + ")")
    assert not found, "import cycles between subpackages of xraycore: " + "; ".join(described)


# Rooms at the bottom of the house: what each may import of ours (docs/architecture.md). The store keeps the
# database and nothing else, so that every room above it (clinical, monitoring, the app) may use it.
BASE_ROOMS = {"common": set(), "store": {"common"}, "metrics": {"common"}, "io": {"common"}, "runs": {"common"}}


def test_the_base_rooms_import_only_what_they_may():
    offenders = []
    for module, targets in module_graph().items():
        room = room_of(module)
        if room in BASE_ROOMS:
            offenders += [f"{module} -> {target}" for target in targets
                          if room_of(target) not in (None, room, *BASE_ROOMS[room])]
    assert not offenders, "a base room imports above itself: " + "; ".join(offenders)


def test_streamlit_is_imported_only_under_xraycore_app():
    offenders = [where(path, node) for module, path in modules().items() if not path.is_relative_to(APP_ROOM)
                 for node, names in imports_of(module) if any(n.split(".")[0] == "streamlit" for n in names)]
    assert not offenders, f"streamlit imported outside xraycore/app/: {', '.join(offenders)}"


def test_nothing_outside_the_app_imports_the_app():
    offenders = [where(path, node) for module, path in modules().items() if not path.is_relative_to(APP_ROOM)
                 for node, names in imports_of(module)
                 if any(n == "xraycore.app" or n.startswith("xraycore.app.") for n in names)]
    assert not offenders, f"library code importing xraycore.app (the app layer): {', '.join(offenders)}"


def torch_free_modules() -> list[str]:
    return [module for module in modules() if module not in TORCH_SIDE
            and any(module == room or module.startswith(room + ".") for room in TORCH_FREE_ROOMS)]


def module_level_imports(module: str) -> list[tuple[ast.AST, list[str]]]:
    """Imports that run when the module is imported: outside functions and classes' methods, not under
    ``if TYPE_CHECKING:``."""
    path = modules()[module]
    found = []

    def visit(statements: list[ast.stmt]) -> None:
        for statement in statements:
            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                found.append((statement, imported_names(module, path, statement)))
            elif isinstance(statement, ast.If) and dotted(statement.test).endswith("TYPE_CHECKING"):
                visit(statement.orelse)
            elif isinstance(statement, (ast.If, ast.Try, ast.With, ast.ClassDef)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(statement, field, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])
    visit(tree(path).body)
    return found


def test_the_reading_room_rooms_import_no_torch_at_module_level():
    offenders = []
    for module in torch_free_modules():
        for node, names in module_level_imports(module):
            heavy = [n for n in names if n.split(".")[0] in TORCH_NAMES]
            torch_side = [n for n in names if n in TORCH_SIDE]
            if heavy or torch_side:
                offenders.append(f"{where(modules()[module], node)} ({', '.join(heavy + torch_side)})")
    assert not offenders, ("module-level imports of torch/torchvision/timm (or of the torch side of inference) "
                           f"in a room the reading-room install imports: {', '.join(offenders)}")


def test_importing_the_reading_room_rooms_leaves_torch_out():
    code = ("import importlib, sys\n"
            f"for name in {torch_free_modules()!r}:\n"
            "    importlib.import_module(name)\n"
            f"    loaded = [m for m in {TORCH_NAMES!r} if m in sys.modules]\n"
            "    if loaded:\n"
            "        sys.exit(f'importing {name} loaded {loaded}')\n")
    finished = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr.strip().splitlines()[-1:] or finished.stdout


# --------------------------------------------------------------------------- sizes


def test_no_module_over_400_lines():
    offenders = [f"{where(path)} ({count} lines)" for path in app_files()
                 if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines: {', '.join(offenders)}"


def test_no_function_over_80_lines():
    offenders = [f"{where(path, node)} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
                 for path, node in functions() if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines: {', '.join(offenders)}"


# --------------------------------------------------------------------------- one helper each

HASH_CALLS = {"hashlib.sha256", "hashlib.new", "hashlib.file_digest", "sha256"}
FILE_READS = {"open", "read_bytes", "read", "file_digest", "readinto"}


def hashes_a_file(body: ast.AST) -> bool:
    """Calls a sha256 constructor and reads a file's bytes in the same function."""
    made = {dotted(call.func) for call in calls(body)}
    return bool(made & HASH_CALLS) and bool(called_names(body) & FILE_READS)


def test_one_file_hash_helper():
    found = innermost_functions(hashes_a_file)
    assert len(found) == 1, f"expected one function that sha256-hashes a file's content, found {len(found)}: " + (
        ", ".join(found) or "none")


MODEL_IDENTITY = re.compile(r"model_info|model_identity|of_model|provenance$")


def test_one_model_identity():
    roots = delegation_roots(MODEL_IDENTITY)
    assert len(roots) == 1, ("expected one model-identity implementation (name, version, weights sha256 of a "
                             "model directory; every other such function delegates to it), found "
                             f"{len(roots)}: {', '.join(roots) or 'none'}")


SOFTMAX = re.compile(r"softmax", re.IGNORECASE)


def test_one_softmax():
    roots = delegation_roots(SOFTMAX)
    assert len(roots) == 1, (f"expected one softmax implementation (others delegate to it), found {len(roots)}: "
                             f"{', '.join(roots) or 'none'}")


def utc_now_formatted(body: ast.AST) -> bool:
    """Takes the current time in UTC and formats it (isoformat/strftime) in the same function."""
    utc_now = any((isinstance(call.func, ast.Attribute) and call.func.attr == "utcnow")
                  or (isinstance(call.func, ast.Attribute) and call.func.attr == "now"
                      and any("utc" in ast.unparse(argument).lower() for argument in [*call.args, *call.keywords]))
                  for call in calls(body))
    return utc_now and bool(called_names(body) & {"isoformat", "strftime"})


def test_one_utc_timestamp_helper():
    found = innermost_functions(utc_now_formatted)
    assert len(found) == 1, f"expected one function that writes a UTC timestamp, found {len(found)}: " + (
        ", ".join(found) or "none")


# --------------------------------------------------------------------------- names


def test_no_module_named_like_the_standard_library():
    stdlib = set(sys.stdlib_module_names)
    files = [where(path) for path in modules().values() if path.stem in stdlib]
    packages = [where(path.parent) for path in PACKAGE.rglob("__init__.py")
                if path.parent.name in stdlib and path.parent.name not in STDLIB_NAMED_PACKAGES_ALLOWED]
    assert not files + packages, f"modules named like standard-library modules: {', '.join(files + packages)}"
