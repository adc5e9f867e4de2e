"""The import rules of conversations/: no circle, floors only downwards, imports at module level, no
`_private` name of another module.

The floors, the allow-list and the reading (ast, relative and absolute imports, at module level and
in functions) are in bench/import_graph.py, which bench/structure.py uses for its figures too.
"""

import pytest

from bench import import_graph as ig

FLOORS_AT = "FLOORS in bench/import_graph.py"


@pytest.fixture(scope="module")
def graph() -> ig.Graph:
    return ig.read_graph(ig.read_tree())


def fail_on(rule: str, lines: list[str]) -> None:
    """Fail with one line per break of the rule (file:line first), if there is any."""
    if lines:
        pytest.fail(f"{rule} ({len(lines)}):\n" + "\n".join(f"  {line}" for line in lines), pytrace=False)


def test_every_module_is_on_a_floor(graph):
    lines = [
        f"{graph.modules[m]}: {m} is on no floor; add it (or its package) to {FLOORS_AT}" for m in ig.unplaced(graph)
    ]
    fail_on("Modules on no floor", lines)


def test_no_import_circles(graph):
    lines = []
    for component in ig.circles(graph):
        lines.append("circle of " + ", ".join(component) + ":")
        lines += [f"  {i.where}: {i.importer} imports {i.target}" for i in ig.circle_imports(graph, component)]
    fail_on("Import circles between conversations modules", lines)


def test_imports_go_only_down_the_floors(graph):
    lines = [b.describe() for b in ig.floor_breaks(graph)]
    fail_on(f"Imports to a higher floor, or to another unit of the same floor (floors: {FLOORS_AT})", lines)


def test_conversations_modules_are_imported_at_module_level(graph):
    allowed = ig.FUNCTION_LEVEL_ALLOWED
    lines = [
        f"{i.where}: {i.function} (in {i.importer}) imports {i.target}; import it at the top of the module"
        for i in ig.function_level(graph)
        if (i.importer, i.target) not in allowed
    ]
    fail_on("Imports of conversations modules inside a function", lines)


def test_the_function_level_allow_list_has_no_stale_entry(graph):
    used = {(i.importer, i.target) for i in ig.function_level(graph)}
    stale = [
        f"{importer} -> {target}" for importer, target in ig.FUNCTION_LEVEL_ALLOWED if (importer, target) not in used
    ]
    fail_on("FUNCTION_LEVEL_ALLOWED in bench/import_graph.py lists imports no longer made", stale)


def test_no_module_reaches_a_private_name_of_another(graph):
    lines = [
        f"{p.where}: {p.importer} uses {p.name} of {p.target}; make it public or move the code that needs it"
        for p in graph.private_uses
    ]
    fail_on("_private names of other conversations modules", lines)


# -- the reader itself, on a made-up package ------------------------------------------------------


def made_up(**files: str) -> ig.Graph:
    """A graph of modules given as path=source, e.g. a_b="..." for conversations/a/b.py."""
    sources = []
    for name, text in files.items():
        path = "conversations/" + name.replace("__", "/") + ".py"
        sources.append(ig.Source(path, ig.module_name(path), text))
    return ig.read_graph(sources)


def test_the_reader_sees_relative_absolute_and_function_level_imports():
    graph = made_up(
        generation__init="",
        generation__feeds=(
            "from . import reply\n"
            "from .reply import Generation\n"
            "from conversations import models as m\n"
            "def later():\n"
            "    from ..models import Message\n"
            "    import conversations.rendering\n"
        ),
        generation__reply="",
        models="",
        rendering="",
    )
    found = sorted((i.line, i.target, i.names, i.function) for i in graph.imports)
    assert found == [
        (1, "conversations.generation.reply", (), None),
        (2, "conversations.generation.reply", ("Generation",), None),
        (3, "conversations.models", (), None),
        (5, "conversations.models", ("Message",), "later"),
        (6, "conversations.rendering", (), "later"),
    ]


def test_the_rules_catch_a_circle_a_floor_break_and_a_private_name():
    graph = made_up(
        models="from conversations.chat import views\n",
        chat__init="",
        chat__views="from conversations import models\nfrom conversations.playground.views import _page\n",
        playground__init="",
        playground__views="",
        rendering=(
            "from conversations import models\n"
            "from conversations.models import Message\n"
            "models._private_helper()\n"
            "Message._meta\n"  # an attribute of a class, not of a module
        ),
    )
    assert ig.circles(graph) == [["conversations.chat.views", "conversations.models"]]
    breaks = {(b.imp.importer, b.imp.target, b.kind) for b in ig.floor_breaks(graph)}
    assert breaks == {
        ("conversations.models", "conversations.chat.views", "upward"),
        ("conversations.chat.views", "conversations.playground.views", "sideways"),
    }
    private = {(p.importer, p.target, p.name) for p in graph.private_uses}
    assert private == {
        ("conversations.chat.views", "conversations.playground.views", "_page"),
        ("conversations.rendering", "conversations.models", "_private_helper"),
    }
