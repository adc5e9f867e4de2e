"""The structure figures of conversations/: modules, import edges, circles, floor breaks, function-level
imports and the longest function.

    .venv/bin/python bench/structure.py                 # the working tree
    .venv/bin/python bench/structure.py --rev 7c90f9f   # a git revision (read with git show, no checkout)
    .venv/bin/python bench/structure.py --rev 7c90f9f --rev HEAD --tree   # side by side
    .venv/bin/python bench/structure.py --list          # also every circle, floor break and function-level import

The rules behind the figures are those of tests/test_architecture.py (bench/import_graph.py). A
revision from before the restructure (issue 10) has the old flat layout: for the floor figures each
of its modules stands where the module it became stands (`FORMER_NAMES`), so modules that went
into one package count as one unit; a module with no known floor is counted, and its imports are
left out of the floor figures.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import import_graph as ig  # noqa: E402

# The flat layout before the restructure (7c90f9f): each module -> the module it became.
FORMER_NAMES = {
    "conversations.llm": "conversations.providers.client",
    "conversations.params": "conversations.providers.params",
    "conversations.bundled": "conversations.providers.bundled",
    "conversations.accounts": "conversations.accounts.views",
    "conversations.quotas": "conversations.accounts.quotas",
    "conversations.usage": "conversations.accounts.usage",
    "conversations.library": "conversations.library.views",
    "conversations.imports": "conversations.library.imports",
    "conversations.transcripts": "conversations.library.transcripts",
    "conversations.generation": "conversations.generation.reply",
    "conversations.choices": "conversations.generation.feeds",
    "conversations.completion": "conversations.generation.completion",
    "conversations.stream_parts": "conversations.generation.parts",
    "conversations.titles": "conversations.generation.titles",
    "conversations.consumers": "conversations.chat.consumer",
    "conversations.reply_actions": "conversations.chat.actions",
    "conversations.chat_settings": "conversations.chat.settings_panel",
    "conversations.views": "conversations.chat.views",
    "conversations.playground": "conversations.playground.views",
    "conversations.playground_consumer": "conversations.playground.consumer",
}


def under_new_names(graph: ig.Graph) -> ig.Graph:
    """The graph with each former module renamed to the module it became, to put it on its floor."""
    if not any(module in graph.modules for module in FORMER_NAMES):
        return graph

    def new(module: str) -> str:
        return FORMER_NAMES.get(module, module)

    return ig.Graph(
        modules={new(m): path for m, path in graph.modules.items()},
        imports=[replace(i, importer=new(i.importer), target=new(i.target)) for i in graph.imports],
    )


@dataclass
class Figures:
    label: str
    graph: ig.Graph

    @property
    def placed(self) -> ig.Graph:
        return under_new_names(self.graph)

    @property
    def edges(self) -> int:
        return sum(len(targets) for targets in self.graph.edges().values())

    @property
    def circles(self) -> list[list[str]]:
        return ig.circles(self.graph)

    @property
    def breaks(self) -> list[ig.FloorBreak]:
        return ig.floor_breaks(self.placed)

    @property
    def unplaced(self) -> list[str]:
        return ig.unplaced(self.placed)

    def rows(self) -> list[tuple[str, str]]:
        circles = self.circles
        breaks = self.breaks
        upward = [b for b in breaks if b.kind == "upward"]
        function_level = ig.function_level(self.graph)
        longest = ig.longest_function(self.graph)
        in_circles = sum(len(c) for c in circles)
        rows = [
            ("modules", str(len(self.graph.modules))),
            ("import edges (module -> module)", str(self.edges)),
            ("import statements of conversations modules", str(len(self.graph.imports))),
            ("circles (SCCs > 1)", f"{len(circles)} ({in_circles} modules)"),
            ("floor breaks (upward + sideways)", f"{len(breaks)} ({len(upward)} + {len(breaks) - len(upward)})"),
            ("modules on no floor", str(len(self.unplaced))),
            ("function-level imports", str(len(function_level))),
            ("_private names of other modules", str(len(self.graph.private_uses))),
        ]
        if longest is not None:
            rows.append(("longest function", f"{longest.name} ({longest.path}:{longest.line}, {longest.lines} lines)"))
        return rows

    def details(self) -> list[str]:
        lines = [f"--- {self.label}"]
        for component in self.circles:
            lines.append("circle: " + ", ".join(component))
            lines += [f"    {i.where} {i.importer} -> {i.target}" for i in ig.circle_imports(self.graph, component)]
        lines += ["floor break: " + b.describe() for b in self.breaks]
        lines += [f"on no floor: {m}" for m in self.unplaced]
        lines += [
            f"function-level: {i.where} {i.importer}.{i.function} imports {i.target}"
            for i in ig.function_level(self.graph)
        ]
        lines += [f"private: {p.where} {p.importer} uses {p.target}.{p.name}" for p in self.graph.private_uses]
        return lines


def figures(rev: str | None) -> Figures:
    sources = ig.read_tree() if rev is None else ig.read_revision(rev)
    graph = ig.read_graph(sources)
    return Figures(rev or "working tree", graph)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", action="append", default=[], help="a git revision to read (repeatable)")
    parser.add_argument("--tree", action="store_true", help="the working tree too (the default without --rev)")
    parser.add_argument("--list", action="store_true", help="list every circle, floor break and function-level import")
    args = parser.parse_args(argv)
    labels: list[str | None] = list(args.rev)
    if args.tree or not labels:
        labels.append(None)
    columns = [figures(rev) for rev in labels]
    table = [[("", c.label)] + c.rows() for c in columns]
    names = [name for name, _ in table[0]]
    widths = [max(len(name) for name in names)] + [max(len(value) for _, value in rows) for rows in table]
    for index, name in enumerate(names):
        cells = [name] + [rows[index][1] for rows in table]
        print("  |  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())
    for column in columns:
        for component in column.circles:
            print(f"circle in {column.label}: " + ", ".join(component))
    if args.list:
        for column in columns:
            print()
            print("\n".join(column.details()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
