"""What a page's reply texts become after a series of websocket frames, swapped as htmx would.

It models only what the frames for reply texts use (conversations/rendering.py): out-of-band
swaps `beforeend`, `innerHTML`, `outerHTML` and `delete` aimed at `#msg-N-text` or its last
element children, and whole `<div id="msg-N-text">` elements (a snapshot, a redrawn
conversation, a finished reply, which keeps the page's copy when it says `hx-preserve`).
"""

from __future__ import annotations

import re
from html import unescape

from conversations.rendering import _TAG, parse_fragment

TEXT_DIV = re.compile(r'<div id="(msg-\d+-text)"[^>]*>')
SWAP = re.compile(r'\shx-swap-oob="([a-zA-Z]+):#(msg-\d+-text)((?:>:last-child)*)"')


class Element:
    def __init__(self, tag: str, start: str, children: list):
        self.tag, self.start, self.children = tag, start, children

    def html(self) -> str:
        inner = "".join(c.html() if isinstance(c, Element) else c for c in self.children)
        return self.start if self.tag in ("br", "hr", "input", "img") else f"{self.start}{inner}</{self.tag}>"

    def inner(self) -> str:
        return "".join(c.html() if isinstance(c, Element) else c for c in self.children)


def _build(src: str, nodes) -> list:
    return [
        Element(n.tag, src[n.start : n.open_end], _build(src, n.children)) if n.tag else src[n.start : n.end]
        for n in nodes
    ]


def _inner_of(frame: str, start: int) -> tuple[str, int]:
    """The HTML inside the element whose start tag ends at `start` (nh3-style markup inside)."""
    depth = 1
    for match in _TAG.finditer(frame, start):
        if match.group(2).lower() in ("br", "hr", "input", "img"):
            continue
        depth += -1 if match.group(1) else 1
        if depth == 0:
            return frame[start : match.start()], match.end()
    raise AssertionError("unclosed reply text element")


class Page:
    def __init__(self):
        self.texts: dict[str, Element] = {}
        self.swaps = 0

    def apply(self, frame: str):
        first = _TAG.match(frame)
        if first and SWAP.search(first.group(0)):
            self._swaps(frame)
            return
        for match in TEXT_DIV.finditer(frame):
            if "hx-preserve" in match.group(0) and match.group(1) in self.texts:
                continue
            inner, _end = _inner_of(frame, match.end())
            self.texts[match.group(1)] = Element("div", match.group(0), _build(inner, parse_fragment(inner)))

    def _swaps(self, frame: str):
        for wrapper in _build(frame, parse_fragment(frame)):
            assert isinstance(wrapper, Element), f"text between swaps: {wrapper!r}"
            found = SWAP.search(wrapper.start)
            assert found, f"not a reply text swap: {wrapper.start}"
            swap, element_id, path = found.groups()
            parent, target = None, self.texts[element_id]
            for _step in range(path.count(":last-child")):
                elements = [c for c in target.children if isinstance(c, Element)]
                assert elements, f"{element_id}{path}: no element to address"
                parent, target = target, elements[-1]
            self.swaps += 1
            if swap == "beforeend":
                target.children.extend(wrapper.children)
            elif swap == "innerHTML":
                target.children = list(wrapper.children)
            elif swap == "outerHTML":
                wrapper.start = wrapper.start.replace(found.group(0), "")
                parent.children[parent.children.index(target)] = wrapper
            elif swap == "delete":
                parent.children.remove(target)
            else:
                raise AssertionError(f"unknown swap {swap}")

    def text_html(self, message_id: int) -> str:
        element = self.texts.get(f"msg-{message_id}-text")
        return element.inner() if element else ""


def finished(frame: str, message_id: int) -> bool:
    """Whether the frame carries the reply's finished <article>."""
    start = frame.find(f'<article id="msg-{message_id}" ')
    return start >= 0 and 'data-status="streaming"' not in frame[start : frame.find(">", start)]


def replay(frames: list[str], message_id: int) -> str:
    """The reply's HTML on a page that was sent `frames`, as the stream left it (before the end)."""
    page = Page()
    for frame in frames:
        if finished(frame, message_id):
            break
        page.apply(frame)
    return page.text_html(message_id)


def plain(html: str) -> str:
    """The text of some HTML, as the page shows it (its textContent)."""
    return unescape(re.sub(r"<[^>]+>", "", html))
