"""The imports between the modules of conversations/, read with `ast`, and the floors they must follow.

Shared by tests/test_architecture.py (which fails on a broken rule) and bench/structure.py (which
prints the figures). Standard library only: it reads source text and never imports the app, so it
reads a git revision (`read_revision`) as well as the working tree (`read_tree`).

The rules, on the module graph of conversations/ (every `import`, at module level or inside a
function, relative or absolute):

- no circle: no module reaches itself through imports;
- floors: a module imports only from lower floors (`FLOORS`, lowest first), or from its own unit
  when that unit is a package (`generation.feeds` -> `generation.reply`); never from a higher floor,
  nor from another unit of its floor (`chat` and `playground` do not import each other);
- imports of conversations modules sit at module level, except the few in `FUNCTION_LEVEL_ALLOWED`;
- no module reaches a `_private` name of another one (`from conversations.x import _y`, or `x._y`
  on an imported module).
"""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = "conversations"

# Lowest first: (name of the floor, its units). A unit is a package (every module under it) or a module.
FLOORS: list[tuple[str, list[str]]] = [
    ("package", ["conversations"]),  # conversations/__init__.py only
    ("providers", ["conversations.providers"]),
    ("models", ["conversations.models"]),
    ("ground", ["conversations.rendering", "conversations.forms", "conversations.events", "conversations.i18n"]),
    ("access", ["conversations.access"]),
    ("sockets", ["conversations.sockets"]),  # the pages' websocket base admits owners through access
    ("library", ["conversations.library"]),
    ("accounts", ["conversations.accounts"]),  # its account page exports through library.transcripts
    ("generation", ["conversations.generation"]),  # it records usage through accounts.usage
    ("faces", ["conversations.chat", "conversations.playground"]),
    ("pages", ["conversations.review", "conversations.pages"]),
    (
        "top",
        [
            "conversations.admin",
            "conversations.urls",
            "conversations.routing",
            "conversations.apps",
            "conversations.templatetags",
            "conversations.management",
            "conversations.migrations",
        ],
    ),
]

# Imports of conversations modules inside a function: (importing module, imported module) -> why.
FUNCTION_LEVEL_ALLOWED: dict[tuple[str, str], str] = {
    ("conversations.apps", "conversations.i18n"): (
        "AppConfig.ready() is where Django connects signal receivers (i18n's user_logged_in one): "
        "i18n imports the models, which cannot be imported while apps.py itself is being imported"
    ),
}


@dataclass(frozen=True)
class Source:
    path: str  # relative to the repository, with forward slashes
    module: str
    text: str


@dataclass(frozen=True)
class Import:
    importer: str
    path: str
    line: int
    target: str  # the conversations module imported (or the one a from-import takes names from)
    names: tuple[str, ...]  # what a from-import takes from `target` (empty for `import x` and submodules)
    function: str | None  # the enclosing function (qualified name), None at module level

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class PrivateUse:
    """A `_private` name of another conversations module, reached through an import or an attribute."""

    importer: str
    path: str
    line: int
    target: str
    name: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Function:
    name: str  # qualified: Class.method, outer.inner
    path: str
    line: int
    lines: int


@dataclass(repr=False)
class Graph:
    modules: dict[str, str] = field(default_factory=dict)  # module -> path
    imports: list[Import] = field(default_factory=list)
    private_uses: list[PrivateUse] = field(default_factory=list)
    functions: list[Function] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<Graph: {len(self.modules)} modules, {len(self.imports)} imports>"

    def edges(self) -> dict[str, set[str]]:
        """Module -> the conversations modules it imports (itself left out)."""
        graph: dict[str, set[str]] = {module: set() for module in self.modules}
        for imp in self.imports:
            if imp.target != imp.importer:
                graph[imp.importer].add(imp.target)
        return graph


# -- reading -------------------------------------------------------------------------------------


def module_name(path: str) -> str:
    parts = path[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _wanted(path: str) -> bool:
    return path.endswith(".py") and "__pycache__" not in path.split("/")


def read_tree(root: Path = ROOT) -> list[Source]:
    """Every module under conversations/ in the working tree."""
    paths = sorted(p.relative_to(root).as_posix() for p in (root / APP).rglob("*.py"))
    return [Source(p, module_name(p), (root / p).read_text(encoding="utf-8")) for p in paths if _wanted(p)]


def read_revision(rev: str, root: Path = ROOT) -> list[Source]:
    """Every module under conversations/ at a git revision, read with `git show` (no checkout)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout

    paths = [p for p in git("ls-tree", "-r", "--name-only", rev, "--", APP).splitlines() if _wanted(p)]
    return [Source(p, module_name(p), git("show", f"{rev}:{p}")) for p in sorted(paths)]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class _Reader(ast.NodeVisitor):
    def __init__(self, source: Source, modules: set[str], graph: Graph):
        self.source, self.modules, self.graph = source, modules, graph
        is_package = source.path.endswith("/__init__.py")
        self.package = source.module if is_package else source.module.rpartition(".")[0]
        self.scope: list[str] = []  # enclosing classes and functions
        self.functions: list[str] = []  # enclosing functions only
        self.module_aliases: dict[str, str] = {}  # a local name bound to a conversations module

    def _existing(self, dotted: str) -> str | None:
        """The longest prefix of `dotted` that is a conversations module."""
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in self.modules:
                return candidate
        return None

    def _add(self, line: int, target: str, names: tuple[str, ...] = ()) -> None:
        function = ".".join(self.scope) if self.functions else None
        imp = Import(self.source.module, self.source.path, line, target, names, function)
        self.graph.imports.append(imp)

    def _private(self, line: int, target: str, name: str) -> None:
        if target != self.source.module:
            self.graph.private_uses.append(PrivateUse(self.source.module, self.source.path, line, target, name))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name != APP and not alias.name.startswith(APP + "."):
                continue
            target = self._existing(alias.name)
            if target is None:
                continue
            self._add(node.lineno, target)
            for part in alias.name.split(".")[1:]:
                if _is_private(part):
                    self._private(node.lineno, target, part)
            if alias.asname:
                self.module_aliases[alias.asname] = target

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.package.split(".")
            if node.level > 1:
                base_parts = base_parts[: -(node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if base != APP and not base.startswith(APP + "."):
            return
        from_module = self._existing(base)
        taken: list[str] = []
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in self.modules:
                self._add(node.lineno, submodule)
                self.module_aliases[alias.asname or alias.name] = submodule
                if _is_private(alias.name):
                    self._private(node.lineno, base, alias.name)
            elif from_module is not None:
                taken.append(alias.name)
                if _is_private(alias.name):
                    self._private(node.lineno, from_module, alias.name)
        if taken and from_module is not None:
            self._add(node.lineno, from_module, tuple(taken))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and _is_private(node.attr):
            target = self.module_aliases.get(node.value.id)
            if target is not None:
                self._private(node.lineno, target, node.attr)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.functions.append(node.name)
        end = node.end_lineno or node.lineno
        self.graph.functions.append(
            Function(".".join(self.scope), self.source.path, node.lineno, end - node.lineno + 1)
        )
        self.generic_visit(node)
        self.functions.pop()
        self.scope.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function


def read_graph(sources: Iterable[Source]) -> Graph:
    sources = list(sources)
    graph = Graph(modules={s.module: s.path for s in sources})
    modules = set(graph.modules)
    for source in sources:
        _Reader(source, modules, graph).visit(ast.parse(source.text, filename=source.path))
    return graph


# -- the rules -----------------------------------------------------------------------------------


def circles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative), each sorted."""
    edges = {module: sorted(targets) for module, targets in graph.edges().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return sorted(found)


def circle_imports(graph: Graph, component: list[str]) -> list[Import]:
    """The imports that make up a circle (from one of its modules to another)."""
    members = set(component)
    return [i for i in graph.imports if i.importer in members and i.target in members and i.importer != i.target]


def place(module: str, floors: list[tuple[str, list[str]]] = FLOORS) -> tuple[int, str] | None:
    """(floor number, unit) of a module, by its longest matching unit; None if it is on no floor."""
    best: tuple[int, str] | None = None
    for number, (_name, units) in enumerate(floors):
        for unit in units:
            inside = module == unit or (unit != APP and module.startswith(unit + "."))
            if inside and (best is None or len(unit) > len(best[1])):
                best = (number, unit)
    return best


def unplaced(graph: Graph, floors: list[tuple[str, list[str]]] = FLOORS) -> list[str]:
    return sorted(m for m in graph.modules if place(m, floors) is None)


@dataclass(frozen=True)
class FloorBreak:
    imp: Import
    kind: str  # "upward" (to a higher floor) or "sideways" (another unit of the same floor)
    from_floor: str
    to_floor: str

    def describe(self) -> str:
        i = self.imp
        return (
            f"{i.where}: {i.importer} (floor {self.from_floor}) imports {i.target} (floor {self.to_floor}): {self.kind}"
        )


def floor_breaks(graph: Graph, floors: list[tuple[str, list[str]]] = FLOORS) -> list[FloorBreak]:
    """Imports to a higher floor, or to another unit of the importer's floor."""
    breaks = []
    for imp in graph.imports:
        here, there = place(imp.importer, floors), place(imp.target, floors)
        if here is None or there is None or imp.importer == imp.target:
            continue
        (low, unit), (high, other) = here, there
        if high > low or (high == low and unit != other):
            kind = "upward" if high > low else "sideways"
            names = (f"{floors[low][0]}: {unit}", f"{floors[high][0]}: {other}")
            breaks.append(FloorBreak(imp, kind, *names))
    return breaks


def function_level(graph: Graph) -> list[Import]:
    return [i for i in graph.imports if i.function is not None]


def longest_function(graph: Graph) -> Function | None:
    return max(graph.functions, key=lambda f: f.lines, default=None)
