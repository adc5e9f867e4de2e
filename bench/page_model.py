"""A browser page as far as the stream bench needs one: a small DOM that websocket frames change as htmx would.

The page's htmx ws extension (django_htmx's hx-ws-2.js) parses each message into a fragment and
runs htmx's `oobSwap` on every top-level element: `hx-swap-oob` of "true" (or absent) replaces the
element with the same id (outerHTML); "STYLE" swaps the element with the same id in that style;
"STYLE:SELECTOR" swaps every element the CSS selector finds. Modelled here:

- swap styles innerHTML, outerHTML, beforebegin, afterbegin, beforeend, afterend, delete, none,
  textContent; for every style but outerHTML the oob element's children are what is inserted;
- selectors `#id` followed by `>` steps of `:last-child`, `*`, `tag` or `tag:last-child`; anything
  else is counted as `unsupported` (the bench cannot judge that frame, and says so);
- `hx-preserve`: an element of the fragment with that attribute and an id already on the page is
  replaced by the page's element (the page keeps its copy);
- the HTML parser's rule that bites htmx: a message is parsed in a <template>, whose first tag
  sets the mode; outside a table context the parser drops the start and end tags of table parts
  (tr, td, tbody...) and keeps their text. Counted as `dropped_tags`;
- a swap whose selector finds nothing is dropped, as htmx does (`no_target`).

Visible text (`Element.text()`) is the text a reader sees, roughly innerText: textContent without
<template>, <script>, <style>, <textarea> and elements with the `hidden` attribute, with line
breaks around block elements and table cells (so "Copy" on a code block's bar and the code's first
word do not read as one word). It is cached per element and recomputed only along the changed path.
"""

from __future__ import annotations

import re
from html import escape
from html.parser import HTMLParser

VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"})
HIDDEN = frozenset({"template", "script", "style", "head", "title", "textarea"})
# Laid out on lines of their own (innerText puts line breaks around them; cells are tab-separated).
BLOCK = frozenset(
    {"address", "article", "aside", "blockquote", "br", "dd", "details", "div", "dl", "dt", "figure", "footer"}
    | {"form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre"}
    | {"section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul", "td", "th", "caption"}
)
TABLE_PARTS = frozenset({"caption", "col", "colgroup", "tbody", "td", "tfoot", "th", "thead", "tr"})
TABLE_CONTEXT = frozenset({"table", "tbody", "thead", "tfoot", "tr"})
_STEP = re.compile(r"^(\*|[a-zA-Z][a-zA-Z0-9]*)?(:last-child)?$")
_ID = re.compile(r"^#([^\s>:#.\[]+)(:last-child)?$")


class Unsupported(Exception):
    """A frame uses something this model does not implement."""


class Element:
    __slots__ = ("tag", "attrs", "children", "parent", "_text")

    def __init__(self, tag: str, attrs: dict[str, str | None] | None = None):
        self.tag = tag
        self.attrs: dict[str, str | None] = attrs if attrs is not None else {}
        self.children: list[Element | str] = []
        self.parent: Element | None = None
        self._text: str | None = None

    @property
    def id(self) -> str | None:
        return self.attrs.get("id")

    def elements(self) -> list[Element]:
        return [c for c in self.children if isinstance(c, Element)]

    def walk(self):
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.walk()

    def text(self) -> str:
        """Visible text (cached until something below changes)."""
        if self._text is None:
            if self.tag in HIDDEN or "hidden" in self.attrs:
                self._text = ""
            else:
                self._text = "".join(
                    c if isinstance(c, str) else f"\n{c.text()}\n" if c.tag in BLOCK else c.text()
                    for c in self.children
                )
        return self._text

    def changed(self) -> None:
        node: Element | None = self
        while node is not None and node._text is not None:
            node._text = None
            node = node.parent

    def html(self) -> str:
        """outerHTML, serialised as a browser does."""
        out: list[str] = []
        self._serialise(out)
        return "".join(out)

    def inner_html(self) -> str:
        out: list[str] = []
        for child in self.children:
            if isinstance(child, str):
                out.append(escape(child, quote=False))
            else:
                child._serialise(out)
        return "".join(out)

    def _serialise(self, out: list[str]) -> None:
        attrs = "".join(f' {k}="{escape(v, quote=True)}"' if v is not None else f" {k}" for k, v in self.attrs.items())
        out.append(f"<{self.tag}{attrs}>")
        if self.tag in VOID:
            return
        for child in self.children:
            if isinstance(child, str):
                out.append(escape(child, quote=False))
            else:
                child._serialise(out)
        out.append(f"</{self.tag}>")

    def copy(self) -> Element:
        twin = Element(self.tag, dict(self.attrs))
        for child in self.children:
            if isinstance(child, str):
                twin.children.append(child)
            else:
                c = child.copy()
                c.parent = twin
                twin.children.append(c)
        return twin


class _Builder(HTMLParser):
    def __init__(self, root: Element, *, fragment: bool):
        super().__init__(convert_charrefs=True)
        self.root = root
        self.stack = [root]
        self.fragment = fragment
        self.table_mode_top = False  # the message's first tag was a table part (template mode)
        self.first = True
        self.dropped = 0

    def _table_ok(self) -> bool:
        if any(e.tag in TABLE_CONTEXT for e in self.stack[1:]):
            return True
        return self.fragment and self.table_mode_top and len(self.stack) == 1

    def handle_starttag(self, tag, attrs):
        if self.first:
            self.first = False
            self.table_mode_top = tag in TABLE_PARTS
        if tag in TABLE_PARTS and not self._table_ok():
            self.dropped += 1
            return
        element = Element(tag, dict(attrs))
        parent = self.stack[-1]
        element.parent = parent
        parent.children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID and self.stack[-1].tag == tag and len(self.stack) > 1:
            self.stack.pop()

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return
        if tag in TABLE_PARTS:
            self.dropped += 1

    def handle_data(self, data):
        if data:
            self.stack[-1].children.append(data)


def parse(html: str, *, fragment: bool = True) -> tuple[Element, int]:
    """A root element holding the parsed nodes, and how many table-part tags the parser dropped."""
    root = Element("#fragment" if fragment else "#document")
    builder = _Builder(root, fragment=fragment)
    builder.feed(html)
    builder.close()
    return root, builder.dropped


class Page:
    def __init__(self, skeleton: str):
        self.root, _ = parse(skeleton, fragment=False)
        self.ids: dict[str, list[Element]] = {}
        self._index(self.root)
        self.swaps = 0
        self.no_target = 0
        self.unsupported = 0
        self.dropped_tags = 0
        self.problems: list[str] = []

    # -- the id index --------------------------------------------------------------------------------

    def _index(self, element: Element) -> None:
        for e in element.walk():
            if e.id:
                same = self.ids.setdefault(e.id, [])
                if not any(x is e for x in same):
                    same.append(e)

    def _unindex(self, element: Element) -> None:
        for e in element.walk():
            if e.id and e.id in self.ids:
                same = self.ids[e.id]
                for k, other in enumerate(same):
                    if other is e:
                        del same[k]
                        break
                if not same:
                    del self.ids[e.id]

    def element(self, element_id: str) -> Element | None:
        found = self.ids.get(element_id)
        return found[0] if found else None

    def duplicate_ids(self) -> int:
        return sum(len(v) - 1 for v in self.ids.values() if len(v) > 1)

    # -- frames ----------------------------------------------------------------------------------------

    def apply(self, message: str) -> None:
        fragment, dropped = parse(message)
        self.dropped_tags += dropped
        for oob in fragment.elements():
            value = oob.attrs.get("hx-swap-oob") or "true"
            try:
                self._oob(value, oob)
            except Unsupported as exc:
                self.unsupported += 1
                if len(self.problems) < 5:
                    self.problems.append(str(exc))

    def _oob(self, value: str, oob: Element) -> None:
        selector = f"#{oob.id}" if oob.id else ""
        style = "outerHTML"
        if value == "true":
            pass
        elif value.find(":") > 0:
            style, selector = value[: value.index(":")], value[value.index(":") + 1 :]
        else:
            style = value
        oob.attrs.pop("hx-swap-oob", None)
        oob.attrs.pop("data-hx-swap-oob", None)
        targets = self.select(selector) if selector else []
        if not targets:
            self.no_target += 1
            if len(self.problems) < 5:
                self.problems.append(f"no target for {style}:{selector or '(no id)'}")
            return
        for target in targets:
            clone = oob.copy()
            nodes: list[Element | str] = [clone] if style == "outerHTML" else list(clone.children)
            self._preserve(nodes)
            self._swap(style, target, nodes)
            self.swaps += 1

    def select(self, selector: str) -> list[Element]:
        steps = [s.strip() for s in selector.split(">")]
        head = _ID.match(steps[0])
        if head is None:
            raise Unsupported(f"selector {selector!r}")
        found = list(self.ids.get(head.group(1), []))
        if head.group(2):
            found = [e.parent.elements()[-1] for e in found if e.parent is not None and e.parent.elements()[-1] is e]
        for step in steps[1:]:
            match = _STEP.match(step)
            if match is None or not step:
                raise Unsupported(f"selector {selector!r}")
            tag, last = match.group(1), match.group(2)
            nxt: list[Element] = []
            for e in found:
                kids = e.elements()
                if last:
                    kids = kids[-1:]
                nxt += [k for k in kids if tag in (None, "*") or k.tag == tag.lower()]
            found = nxt
        return found

    def _preserve(self, nodes: list[Element | str]) -> None:
        for k, node in enumerate(nodes):
            if not isinstance(node, Element):
                continue
            for e in list(node.walk()):
                if "hx-preserve" not in e.attrs or not e.id:
                    continue
                existing = self.element(e.id)
                if existing is None or existing is e:
                    continue
                # The page's element takes the new one's place (and leaves its old one).
                self._detach(existing, unindex=False)
                if e.parent is None:
                    nodes[k] = existing
                else:
                    siblings = e.parent.children
                    siblings[siblings.index(e)] = existing
                    existing.parent = e.parent
                    e.parent.changed()

    def _detach(self, element: Element, *, unindex: bool = True) -> None:
        parent = element.parent
        if parent is not None:
            parent.children.remove(element)
            parent.changed()
            element.parent = None
        if unindex:
            self._unindex(element)

    def _insert(self, parent: Element, at: int, nodes: list[Element | str]) -> None:
        for node in nodes:
            if isinstance(node, Element):
                node.parent = parent  # (its old parent is the discarded clone, or none)
                self._index(node)
        parent.children[at:at] = nodes
        parent.changed()

    def _swap(self, style: str, target: Element, nodes: list[Element | str]) -> None:
        parent = target.parent
        if style == "innerHTML":
            for child in list(target.children):
                if isinstance(child, Element):
                    self._detach(child)
            target.children = []
            self._insert(target, 0, nodes)
        elif style == "beforeend":
            self._insert(target, len(target.children), nodes)
        elif style == "afterbegin":
            self._insert(target, 0, nodes)
        elif style in ("outerHTML", "beforebegin", "afterend"):
            if parent is None:
                raise Unsupported(f"{style} on the page's root")
            at = next(k for k, c in enumerate(parent.children) if c is target)
            if style == "afterend":
                at += 1
            self._insert(parent, at, nodes)
            if style == "outerHTML":
                self._detach(target)
        elif style == "delete":
            self._detach(target)
        elif style == "textContent":
            for child in list(target.children):
                if isinstance(child, Element):
                    self._detach(child)
            target.children = ["".join(n if isinstance(n, str) else n.text() for n in nodes)]
            target.changed()
        elif style == "none":
            return
        else:
            raise Unsupported(f"swap style {style!r}")


# A page without the app's page: the ids its frames aim at, for when the real page cannot be read.
FALLBACK_SKELETON = (
    '<html><body><main><header><form id="title-form"></form><span id="usage-totals"></span></header>'
    '<nav id="sidebar-list"></nav><div id="connection" hidden></div><div id="notices"></div>'
    '<div id="messages"></div><form id="composer"><textarea id="composer-input"></textarea>'
    '<div id="composer-actions"></div></form></main></body></html>'
)
