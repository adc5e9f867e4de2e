"""Model output to safe HTML, whole or while it streams (DESIGN: everything a model returns is untrusted).

markdown-it-py parses (raw HTML off; tables, strikethrough, task lists), Pygments highlights
code, nh3 sanitizes: no raw HTML from the model, links only to http, https and mailto with
rel="noopener noreferrer nofollow", and images become a button that loads them only when clicked
(static/js/markdown.js).

The HTML of a reply is the HTML of its top-level blocks, one element each, side by side. While a
reply streams, `StreamRenderer` sends the page only what changed, as htmx out-of-band swaps
addressed from the reply's element down its last children: text appended to the end of a
paragraph, a code block or a table, a new block appended, at worst one element replaced. A
block is finished, and never parsed again, once nothing that follows can change it (a blank line
after a paragraph, a table or a quote; the end of a heading's line; a fence's closing line; or a
later block begun on a complete line followed by another complete line).

The work of an update does not grow with the reply, nor with its open block: an open paragraph
is parsed again only from its last clean cut (a word boundary before which no construct is open:
what precedes it renders the same whatever follows), a fenced code block is highlighted line by
line (the lexer goes on from the state it had at a line start) and checked against a whole
highlight once, when it closes, and a table gets its new rows. Anything else (lists, quotes, a
line that may start another block) is parsed again from the start of the open blocks, which stay
short or are parsed less often (`OPEN_CHARS_PER_SECOND`). Rendering a text in pieces gives
exactly the HTML of rendering it whole, which the last update checks.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from io import StringIO
from typing import Any, cast
from urllib.parse import urlsplit

import nh3
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from markdown_it import MarkdownIt
from markdown_it.common.utils import MD_TRIM_CHARS, escapeHtml, mdTrim, unescapeAll
from markdown_it.helpers import parseLinkLabel
from markdown_it.renderer import RendererHTML
from markdown_it.rules_block.table import MAX_AUTOCOMPLETED_CELLS, escapedSplit
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token
from mdit_py_plugins.tasklists import tasklists_plugin
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import ExtendedRegexLexer, RegexLexer
from pygments.lexers import get_lexer_by_name
from pygments.token import Error, Whitespace
from pygments.util import ClassNotFound

log = logging.getLogger(__name__)

# While a reply streams, its HTML goes out at most this often (the first piece at once)...
MIN_INTERVAL_SECONDS = 0.06
# ...and, between those, once enough new text has come to pay for a frame's envelope (about
# FRAME_BYTES) within a budget of FRAME_RATIO times the reply's HTML for all its frames (a frame per
# token would send several times the reply's size), and at the latest once MIN_CHARS have come or
# MAX_INTERVAL_SECONDS have passed.
MIN_CHARS = 40
MAX_INTERVAL_SECONDS = 0.5
FRAME_BYTES = 60
FRAME_RATIO = 2.75
# What an update parses is short (see above) but for the rare open block parsed again whole
# (a long list): it is re-parsed less often, at most this many characters a second.
OPEN_CHARS_PER_SECOND = 8000
# Text after a construct that has only begun (`**bold`, `` `code``) waits for it to close, but not
# longer than this many characters: then it shows as it is (a stray `*`).
HOLD_CHARS = 200

_SAFE_LINK = re.compile(r"(?:https?|mailto):", re.IGNORECASE)
_WEB_URL = re.compile(r"https?://", re.IGNORECASE)
_FORMATTER = HtmlFormatter(nowrap=True)
_BREAK = re.compile(r"\r\n|\r|\n")


def _validate_link(url: str) -> bool:
    """Only absolute http(s) and mailto links; anything else stays the text the model wrote."""
    return bool(_SAFE_LINK.match(url.strip()))


@lru_cache(maxsize=256)
def _lexer(name: str):
    if not name or len(name) > 40:
        return None
    try:
        # The code exactly as written: no stripped or added newlines (the copy button copies it).
        return get_lexer_by_name(name.lower(), stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


def _code_html(code: str, lang: str) -> str:
    lexer = _lexer(lang)
    if lexer is None:
        body = escapeHtml(code)
    else:
        body = highlight(code, lexer, _FORMATTER)
        if not code.endswith("\n") and body.endswith("\n"):
            body = body[:-1]  # the formatter ends every line, even an unfinished last one
    cls = f' class="language-{escapeHtml(lang)}"' if lang else ""
    label = f'<span class="code-lang">{escapeHtml(lang)}</span>' if lang else ""
    # No _() inside the f-string: makemessages (xgettext) does not look into f-strings.
    copy_code, copy = escapeHtml(_("Copy code")), escapeHtml(_("Copy"))
    button = f'<button type="button" class="copy-code" aria-label="{copy_code}">{copy}</button>'
    # The <pre> comes last: streamed text is appended to the end of the last element.
    bar = f'<div class="code-bar">{label}{button}</div>'
    return f'<div class="code-block">{bar}<pre><code{cls}>{body}</code></pre></div>\n'


def _render_fence(self, tokens, idx, options, env):
    token = tokens[idx]
    info = unescapeAll(token.info).strip()
    return _code_html(token.content, info.split(maxsplit=1)[0] if info else "")


def _render_code_block(self, tokens, idx, options, env):
    return _code_html(tokens[idx].content, "")


def _render_image(self, tokens, idx, options, env):
    """A button that loads the image when clicked: no request to a remote host before that."""
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = self.renderInlineAsText(token.children or [], options, env)
    if not _WEB_URL.match(src):
        return escapeHtml(alt)
    try:
        host = urlsplit(src).hostname or ""
    except ValueError:
        host = ""
    label = _("Load image “%(alt)s” from %(host)s") % {"alt": alt or _("image"), "host": host}
    return (
        f'<button type="button" class="md-image" data-src="{escapeHtml(src)}" data-alt="{escapeHtml(alt)}" '
        f'title="{escapeHtml(src)}">{escapeHtml(label)}</button>'
    )


class _Markdown(MarkdownIt):
    def validateLink(self, url: str) -> bool:
        return _validate_link(url)


_md = (
    _Markdown("commonmark", {"html": False, "linkify": False, "typographer": False})
    .enable(["table", "strikethrough"])
    # A reference definition at the end would change links in blocks already sent.
    .disable("reference")
    .use(tasklists_plugin)
)
_md.add_render_rule("fence", _render_fence)
_md.add_render_rule("code_block", _render_code_block)
_md.add_render_rule("image", _render_image)
_RENDERER = cast(RendererHTML, _md.renderer)

_sanitizer = nh3.Cleaner(
    tags={
        *("p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "code", "div", "span"),
        *("strong", "em", "del", "s", "a", "ul", "ol", "li", "input", "button"),
        *("table", "thead", "tbody", "tr", "th", "td"),
    },
    attributes={
        "a": {"href", "title"},
        "span": {"class"},
        "code": {"class"},
        "div": {"class"},
        "th": {"style"},
        "td": {"style"},
        "ol": {"start"},
        "ul": {"class"},
        "li": {"class"},
        "input": {"type", "checked", "disabled", "class"},
        "button": {"type", "class", "aria-label", "title", "data-src", "data-alt"},
    },
    url_schemes={"http", "https", "mailto"},
    url_relative="deny",
    link_rel="noopener noreferrer nofollow",
    set_tag_attribute_values={"a": {"target": "_blank"}},
    filter_style_properties={"text-align"},
)


@dataclass
class Block:
    line: int  # the first source line of the block
    html: str
    end: int = 0  # the line after its last one
    kind: str = ""  # the type of its first token: paragraph_open, fence, table_open...


def _blocks(text: str) -> list[Block]:
    """The top-level blocks of a markdown text, rendered and sanitized: one element each."""
    env: dict = {}
    tokens = _md.parse(text, env)
    groups, start = [], 0
    for index, token in enumerate(tokens):
        if token.level == 0 and token.nesting <= 0:  # a block closes (or is a single token)
            groups.append(tokens[start : index + 1])
            start = index + 1
    raw = [_md.renderer.render(group, _md.options, env).strip() for group in groups]
    maps = [group[0].map or [0, 0] for group in groups]
    kinds = [group[0].type for group in groups]
    # One call to the sanitizer for them all, then split where its elements begin and end.
    html = _sanitizer.clean("".join(raw))
    spans = _elements(html)
    if len(spans) == len(groups):
        return [
            Block(lines[0], html[start:end], lines[1], kind)
            for lines, kind, (start, end) in zip(maps, kinds, spans, strict=True)
        ]
    blocks = [
        Block(lines[0], _sanitizer.clean(part).strip(), lines[1], kind)
        for lines, kind, part in zip(maps, kinds, raw, strict=True)
    ]
    return [block for block in blocks if block.html]


def render_html(text: str) -> str:
    return "".join(block.html for block in _blocks(text))


def render_markdown(text: str) -> SafeString:
    return mark_safe(render_html(text))  # noqa: S308 - every block was sanitized by nh3


# -- a tiny tree of sanitized HTML, for the differences between two renders ---------------------

_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})
_TAG = re.compile(r'<(/?)([a-zA-Z][a-zA-Z0-9]*)((?:\s+[^\s"\'>/=]+(?:="[^"]*")?)*)\s*/?>')
# Wrapping a table row or cell in anything but its own parent makes the browser's parser drop it;
# and htmx parses each websocket message in one <template>, whose first tag sets the parsing mode
# for all of it, so such a swap travels in a message of its own.
_TABLE_PARTS = frozenset({"thead", "tbody", "tfoot", "tr", "td", "th"})


class Node:
    __slots__ = ("tag", "start", "open_end", "end", "children")

    def __init__(self, tag: str | None, start: int, open_end: int):
        self.tag = tag  # None for text
        self.start = start
        self.open_end = open_end
        self.end = open_end
        self.children: list[Node] = []


def parse_fragment(html: str) -> list[Node]:
    """Parse serialized, well-formed HTML (nh3's output) into nodes that point into `html`."""
    root = Node("", 0, 0)
    stack = [root]
    pos = 0
    for match in _TAG.finditer(html):
        if match.start() > pos:
            stack[-1].children.append(Node(None, pos, match.start()))
        closing, tag = match.group(1), match.group(2).lower()
        if closing:
            node = stack.pop()
            if node.tag != tag or not stack:
                raise ValueError(f"unexpected </{tag}>")
            node.end = match.end()
        else:
            node = Node(tag, match.start(), match.end())
            stack[-1].children.append(node)
            if tag not in _VOID:
                stack.append(node)
        pos = match.end()
    if pos < len(html):
        stack[-1].children.append(Node(None, pos, len(html)))
    if len(stack) != 1:
        raise ValueError(f"unclosed <{stack[-1].tag}>")
    return root.children


def _elements(html: str) -> list[tuple[int, int]]:
    """Where the top-level elements of sanitized HTML start and end; [] if it has top-level text."""
    spans, depth, start, pos = [], 0, 0, 0
    for match in _TAG.finditer(html):
        closing = bool(match.group(1))
        void = not closing and match.group(2).lower() in _VOID
        if depth == 0:
            if match.start() > pos or closing:
                return []
            start = match.start()
            if void:
                spans.append((start, match.end()))
            else:
                depth = 1
        elif closing:
            depth -= 1
            if depth == 0:
                spans.append((start, match.end()))
        elif not void:
            depth += 1
        pos = match.end()
    return spans if depth == 0 and pos == len(html) else []


@dataclass
class Op:
    html: str
    table: bool = False  # needs a message of its own (see _TABLE_PARTS)


def _wrapped(swap: str, selector: str, parent_tag: str, content: str, nodes: list[Node]) -> Op:
    if any(node.tag in _TABLE_PARTS for node in nodes):
        # Rows and cells parse only inside their own parent (a <table> wrapper parses like a <div>).
        return Op(f'<{parent_tag} hx-swap-oob="{swap}:{selector}">{content}</{parent_tag}>', parent_tag != "table")
    # Any element that parses its content like a <div> would do; <i> is the shortest.
    return Op(f'<i hx-swap-oob="{swap}:{selector}">{content}</i>')


def _outer(src: str, node: Node, selector: str) -> Op:
    assert node.tag is not None, "an element, not text"
    cut = node.start + 1 + len(node.tag)
    return Op(
        f'{src[node.start : cut]} hx-swap-oob="outerHTML:{selector}"{src[cut : node.end]}', node.tag in _TABLE_PARTS
    )


def _raw(src: str, node: Node) -> str:
    return src[node.start : node.end]


def _cost(ops: list[Op]) -> int:
    return sum(len(op.html) for op in ops)


def _diff(old: list[Node], osrc: str, new: list[Node], nsrc: str, selector: str, tag: str) -> list[Op] | None:
    """Swaps that turn the children `old` of the element at `selector` into `new`.

    Only the end of an element can be addressed (CSS `:last-child` finds the last element child;
    text nodes have no selector), so the plan edits the last old child in place when everything
    before it is unchanged, and otherwise replaces the element's content. None: no plan at all
    (the caller replaces the element).
    """
    i, shared = 0, min(len(old), len(new))
    while i < shared and _raw(osrc, old[i]) == _raw(nsrc, new[i]):
        i += 1
    if i == len(old):
        rest = new[i:]
        if not rest:
            return []
        return [_wrapped("beforeend", selector, tag, nsrc[rest[0].start : rest[-1].end], rest)]
    plan = None
    trailing = old[i + 1 :]  # only text may follow the child edited in place (it keeps its place)
    if (
        i < len(new)
        and all(node.tag is None for node in trailing)
        and len(new) >= i + 1 + len(trailing)
        and all(_raw(osrc, a) == _raw(nsrc, b) for a, b in zip(trailing, new[i + 1 :], strict=False))
    ):
        was, now = old[i], new[i]
        after = new[i + 1 + len(trailing) :]
        tail = nsrc[after[0].start : after[-1].end] if after else ""
        if was.tag is None and now.tag is None:
            if not trailing and _raw(nsrc, now).startswith(_raw(osrc, was)):
                added = nsrc[now.start + (was.end - was.start) : now.end] + tail
                plan = [_wrapped("beforeend", selector, tag, added, after)]
        elif was.tag is not None and now.tag is not None:
            inner = None
            child = f"{selector}>:last-child"
            if osrc[was.start : was.open_end] == nsrc[now.start : now.open_end] and was.tag not in _VOID:
                inner = _diff(was.children, osrc, now.children, nsrc, child, was.tag)
            plan = inner if inner is not None else [_outer(nsrc, now, child)]
            if after:
                plan.append(_wrapped("beforeend", selector, tag, tail, after))
    if not tag:
        return plan  # the reply's own element: the caller decides
    content = nsrc[new[0].start : new[-1].end] if new else ""
    whole = [_wrapped("innerHTML", selector, tag, content, new)]
    return plan if plan is not None and _cost(plan) < _cost(whole) else whole


def _frames(ops: list[Op]) -> list[str]:
    frames: list[str] = []
    joinable = False
    for op in ops:
        if joinable and not op.table:
            frames[-1] += op.html
        else:
            frames.append(op.html)
        joinable = not op.table
    return frames


class StreamRenderer:
    """The HTML of one streaming reply, and the frames that bring a page's copy of it up to date.

    `html` is what a page has after every frame so far: a viewer who joins late gets it whole,
    then only the frames that follow. `update()` takes the whole reply so far, which only grows.
    `work` is how many characters the last update handed to markdown-it and Pygments (what its
    CPU is proportional to), `total_work` the sum over every update.
    """

    def __init__(self, element_id: str, text: str = ""):
        self.selector = f"#{element_id}"
        self.text = ""  # rendered so far
        self._seen = ""  # received so far
        self.final = False
        self.sent_at: float | None = None
        self.work = 0
        self.total_work = 0
        self.sent = 0  # bytes of all frames so far
        self._done = 0  # characters of text in finished blocks
        self._done_html: list[str] = []
        self._done_size = 0
        self._open_src = ""  # the HTML of the blocks after them, as the page has it
        self._open: list[Node] = []
        self._fast: _Paragraph | _Fence | _Table | None = None  # the open block, followed without re-parsing it
        self._simple = True  # no \r, \0 or BOM: the source is what markdown-it parses (it normalizes those)
        if text:  # a reply that goes on from text a page shows rendered whole (not held back)
            self._seen = text
            self._simple = not _UNSIMPLE.search(text)
            self._render(text, final=False)
            self.total_work = self.work

    @property
    def html(self) -> str:
        return "".join(self._done_html) + (self._fast.html() if self._fast else self._open_src)

    def delay(self, pending: int, now: float | None = None) -> float:
        """Seconds to wait before the next frame, with `pending` new characters waiting."""
        if self.sent_at is None:
            return 0.0
        since = (time.monotonic() if now is None else now) - self.sent_at
        every = max(MIN_INTERVAL_SECONDS, self.work / OPEN_CHARS_PER_SECOND)
        if since < every:
            return every - since
        longest = max(MAX_INTERVAL_SECONDS, every)
        if pending >= self._enough() or since >= longest:
            return 0.0
        return longest - since

    def _enough(self) -> float:
        """How many new characters pay for a frame, within the reply's budget of bytes (at most MIN_CHARS)."""
        size = self._done_size + (self._fast.size() if self._fast else len(self._open_src))
        budget = FRAME_RATIO * size - self.sent
        weight = min(4.0, max(1.0, size / max(1, len(self.text))))  # bytes of HTML a character makes
        return max(1.0, min(MIN_CHARS, (FRAME_BYTES - budget) / (weight * (FRAME_RATIO - 1))))

    def update(self, text: str, *, final: bool = False) -> list[str]:
        """Render `text` (the whole reply so far); return the frames for a page that has `html`."""
        if text == self._seen and (self.final or not final):
            return []
        self.work = 0
        if not text.startswith(self._seen):  # not a continuation: start again from what the page has
            log.warning("Streamed text does not go on from the text before it")
            self._open_src, self._open = self.html, parse_fragment(self.html)
            self._done, self._done_html, self._done_size, self._fast = 0, [], 0, None
            self._simple = not _UNSIMPLE.search(text)
        elif self._simple and _UNSIMPLE.search(text, len(self._seen)):
            self._simple = False
        self._seen = text
        self.sent_at = time.monotonic()
        frames = _frames(self._advance(text, final))
        self.total_work += self.work
        self.sent += sum(len(frame) + 2 for frame in frames)
        return frames

    def _advance(self, text: str, final: bool) -> list[Op]:
        ops: list[Op] = []
        if self._fast is not None:
            try:
                step = self._fast.step(text, final) if self._simple else None
            except Exception:  # (never seen) a bug here must not end the reply: render it all again
                log.exception("Could not follow the open block")
                return self._again(text, final)
            if step is None:  # something it does not follow: the open block is parsed again
                self._open_src = self._fast.html()
                self._open = parse_fragment(self._open_src)
                self._fast = None
            elif step.end is None:
                self.text = text[: step.shown]
                return step.ops
            else:  # finished: what follows begins new blocks
                ops = step.ops
                self._done_html.append(self._fast.html())
                self._done_size += self._fast.size()
                self._done, self._fast = step.end, None
        end = len(text) if final else max(self._done, _settled(text))
        return ops + self._render(text[:end], final)

    def _again(self, text: str, final: bool) -> list[Op]:
        """Render the whole text again, the old way only, and replace the page's copy with it."""
        self._done, self._done_html, self._done_size, self._fast, self._simple = 0, [], 0, None, False
        self._open_src, self._open = "", []
        self._render(text if final else text[: _settled(text)], final)
        return [Op(f'<div hx-swap-oob="innerHTML:{self.selector}">{self.html}</div>')]

    def _render(self, text: str, final: bool) -> list[Op]:
        """Parse the text after the finished blocks again and bring the page's copy of it up to date."""
        self.text = text
        base = self._done
        tail = text[base:]
        self.work += len(tail)
        blocks = _blocks(tail)
        starts = _line_starts(tail)
        keep = len(blocks) if final else _finished(tail, blocks, starts)
        finished = "".join(block.html for block in blocks[:keep])
        src = finished + "".join(block.html for block in blocks[keep:])
        try:
            nodes = parse_fragment(src)
            ops = _diff(self._open, self._open_src, nodes, src, self.selector, "")
        except ValueError:  # not nh3's usual output: send it whole
            log.warning("Unexpected HTML from the renderer", exc_info=True)
            nodes, ops = [], None
        replace = self._replace_open(src)
        if ops is None or _cost(replace) < _cost(ops):
            ops = replace
        if final:
            self._done = len(text)
        elif keep == len(blocks) and keep:
            self._done += starts[blocks[-1].end]
        elif keep:
            self._done += starts[blocks[keep].line]
        if finished:
            self._done_html.append(finished)
            self._done_size += len(finished)
        self._open_src = src[len(finished) :]
        self._open = nodes if not keep else parse_fragment(self._open_src) if self._open_src else []
        if final:
            self.final = True
            self.work += len(text)
            whole = render_html(text)
            if self.html != whole:  # never seen in the tests: the block split was not stable
                log.warning("Streamed HTML differs from the whole render; sending it whole")
                self._done_html, self._done_size, self._open_src, self._open = [whole], len(whole), "", []
                ops = [Op(f'<div hx-swap-oob="innerHTML:{self.selector}">{whole}</div>')]
        elif keep < len(blocks) == keep + 1 and self._simple:
            self._fast = _follow(self, text, blocks[keep], base, starts)
            if self._fast is not None:
                self._open_src, self._open = "", []
        return ops

    def _replace_open(self, src: str) -> list[Op]:
        """Remove the open blocks from the page and append their new render."""
        if any(node.tag is None for node in self._open):
            done = "".join(self._done_html)
            return [Op(f'<div hx-swap-oob="innerHTML:{self.selector}">{done}{src}</div>')]
        ops = [Op(f'<div hx-swap-oob="delete:{self.selector}>:last-child"></div>') for _node in self._open]
        if src:
            ops.append(Op(f'<div hx-swap-oob="beforeend:{self.selector}">{src}</div>'))
        return ops


_UNSIMPLE = re.compile("[\r\0\ufeff]")


def _line_starts(text: str) -> list[int]:
    """Where each line of `text` starts; the last one is the line after the last line break."""
    return [0, *(match.end() for match in _BREAK.finditer(text))]


def _finished(tail: str, blocks: list[Block], starts: list[int]) -> int:
    """How many of the leading blocks can no longer change, whatever text follows."""
    complete = len(starts) - 1  # lines ended by a line break
    done = 0
    for index, block in enumerate(blocks):
        later = index + 1 < len(blocks) and blocks[index + 1].line + 1 < complete
        if not (later or _closed(tail, block, starts, complete)):
            break
        done = index + 1
    return done


def _closed(tail: str, block: Block, starts: list[int], complete: int) -> bool:
    """Whether a block has ended in a way nothing that follows can undo."""
    if block.kind == "hr":
        return block.end <= complete
    if block.kind == "heading_open":  # its line (a setext heading: its underline), unless a table's header
        return block.end < complete or block.end == complete and "|" not in tail[starts[block.line] : starts[block.end]]
    if block.kind in ("paragraph_open", "table_open", "blockquote_open"):  # a blank line ends them
        return block.end < complete and not tail[starts[block.end] : starts[block.end + 1]].strip(" \t\r\n")
    if block.kind == "fence" and block.line + 1 < block.end <= complete:
        opening = _FENCE.match(tail, starts[block.line], starts[block.line + 1])
        last = tail[starts[block.end - 1] : starts[block.end]].rstrip("\r\n")
        return opening is not None and _closing(opening.group(2)).fullmatch(last) is not None
    return False


_FENCE = re.compile(r"( {0,3})(`{3,}|~{3,})([^\r\n]*)")


@lru_cache(maxsize=64)
def _closing(fence: str) -> re.Pattern[str]:
    """A line that closes a fence opened with `fence` (markdown-it: as long or longer, then spaces only)."""
    return re.compile(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*")


@lru_cache(maxsize=64)
def _may_close(fence: str) -> re.Pattern[str]:
    """The start of a line that may still become a closing fence."""
    return re.compile(rf" {{0,3}}{re.escape(fence[0])}*[ \t]*")


@dataclass
class _Step:
    ops: list[Op]
    shown: int  # the text rendered so far ends here
    end: int | None = None  # the block is finished: the next one begins here


def _follow(
    renderer: StreamRenderer, text: str, block: Block, base: int, starts: list[int]
) -> _Paragraph | _Fence | _Table | None:
    """Follow the one open block from now on without parsing it again whole, if it is of a kind that allows it."""
    first = base + starts[block.line]
    complete = len(starts) - 1
    if block.kind == "paragraph_open" and block.html.startswith("<p>") and block.html.endswith("</p>"):
        start = first
        while start < len(text) and text[start] in MD_TRIM_CHARS:
            start += 1
        last = base + starts[block.end - 1]
        if start < len(text) and "\n" not in text[first:start]:
            return _Paragraph(renderer, start, last, block.html[3:-4], len(text))
    if block.kind == "fence" and block.line + 1 <= complete:
        opening = _FENCE.fullmatch(text, first, base + starts[block.line + 1] - 1)
        code = block.html.find("<code")
        if opening and not opening.group(1) and code >= 0 and block.html.endswith(_CODE_END):
            info = unescapeAll(opening.group(3)).strip()
            head = block.html[: block.html.index(">", code) + 1]
            body = block.html[len(head) : -len(_CODE_END)]
            lang = info.split(maxsplit=1)[0] if info else ""
            return _Fence(renderer, opening.group(2), lang, base + starts[block.line + 1], head, body)
    if block.kind == "table_open" and block.line + 2 <= block.end <= complete and block.html.endswith("</table>"):
        lines = [text[base + starts[n] : base + starts[n + 1] - 1] for n in range(block.line, block.end)]
        head, _thead, rows = block.html.partition("</thead>\n")
        if _thead and (rows == "</table>" or rows.startswith("<tbody>\n") and rows.endswith("</tbody>\n</table>")):
            body = rows[len("<tbody>\n") : -len("</tbody>\n</table>")] if rows != "</table>" else ""
            return _Table(renderer, lines, base + starts[block.end], head + _thead, body)
    return None


_CODE_END = "</code></pre></div>"


# -- an open paragraph ------------------------------------------------------------------------------

_INDENT = re.compile(r"[ \t]*")
# A line that starts so may begin another block (and end the paragraph, or change it: a setext
# underline, a table's delimiter row): the paragraph is parsed again whole.
_BLOCK_START = frozenset("#>-+*=_`~|:<0123456789")


def _line_kind(text: str, start: int, stop: int) -> str:
    """What a line of an open paragraph is, so far: blank (spaces only), more of it, or maybe another block."""
    first = _INDENT.match(text, start, stop)
    assert first is not None
    if first.end() == stop:
        return "blank"
    if first.end() - start >= 4 or "\t" in first.group():  # indented: more of the paragraph
        return "more"
    return "other" if text[first.end()] in _BLOCK_START else "more"


class _Paragraph:
    """An open top-level paragraph: parsed again only from its last clean cut on."""

    def __init__(self, renderer: StreamRenderer, start: int, line: int, inner: str, shown: int):
        self.renderer = renderer
        self.selector = f"{renderer.selector}>:last-child"
        self.cut = start  # its text is parsed from here: what comes before renders the same whatever follows
        self.frozen: list[str] = []  # the HTML of the text before the cut
        self.frozen_size = 0
        self.active = inner  # the HTML of the text after it, as the page has it
        self.nodes = parse_fragment(inner)
        self.line = line  # where its last line begins: known to be more of the paragraph
        self.known = line
        self.seen = line  # no line break between `line` and here
        self.shown = shown  # the page shows its text up to here

    def html(self) -> str:
        return "<p>" + "".join(self.frozen) + self.active + "</p>"

    def size(self) -> int:
        return 7 + self.frozen_size + len(self.active)

    def step(self, text: str, final: bool) -> _Step | None:
        size = len(text)
        pos, end, limit = self.line, None, size
        while True:
            brk = text.find("\n", max(pos, self.seen))
            stop = brk if brk >= 0 else size
            kind = "more" if pos == self.known else _line_kind(text, pos, stop)
            if kind == "other":
                return None
            if kind == "blank":
                if brk >= 0 or final:  # a blank line: the paragraph ends before it
                    end = pos
                else:
                    limit = pos  # spaces so far: wait for what the line becomes
                break
            self.known = pos
            if brk < 0:
                if final:
                    end = size
                break
            pos = brk + 1
        self.line, self.seen = pos, size
        stop = limit if end is None else end
        src = text[self.cut : stop].rstrip(MD_TRIM_CHARS)
        scan = _scan(src)
        self.renderer.work += len(src)
        shown = len(src)
        if end is None and scan.limit < shown:  # wait for what has only begun (`**bol`), but show what was shown
            shown = max((mark for mark in scan.marks if mark <= scan.limit), default=0)
            shown = max(shown, min(self.shown - self.cut, len(src)))
        html = scan.html if shown == len(src) else self._inline(src[:shown].rstrip(MD_TRIM_CHARS))
        ops = self._ops(html)
        # (a cut where the shown text ends would lose the spaces before it: they show only with what follows)
        cut = max((mark for mark in scan.cuts if mark < shown or mark == shown == len(src)), default=0)
        frozen = ""
        if end is None and cut:
            rest = self._inline(src[cut:shown].rstrip(MD_TRIM_CHARS)) if cut < shown else ""
            if html.endswith(rest):
                frozen, html = html[: len(html) - len(rest)], rest
            else:  # (never seen) the cut was not clean after all: keep parsing from where it is
                log.debug("Not a clean cut at %d of %r", cut, src)
                cut = 0
        if frozen:
            self.frozen.append(frozen)
            self.frozen_size += len(frozen)
        self.nodes = parse_fragment(html) if html != self.active or frozen else self.nodes
        self.active, before = html, self.cut
        self.cut += cut
        self.shown = stop if shown == len(src) else before + shown  # (with the spaces after it: they count)
        return _Step(ops, self.shown, end)

    def _inline(self, src: str) -> str:
        self.renderer.work += len(src)
        return _inline_html(src)

    def _ops(self, html: str) -> list[Op]:
        """From the page's text after the cut to `html`: appended, or its last element replaced, or all of it."""
        if html.startswith(self.active):
            added = html[len(self.active) :]
            return [Op(f'<i hx-swap-oob="beforeend:{self.selector}">{added}</i>')] if added else []
        plan = _diff(self.nodes, self.active, parse_fragment(html), html, self.selector, "")
        if plan is not None:
            return plan
        return [Op(f'<p hx-swap-oob="outerHTML:{self.selector}">{"".join(self.frozen)}{html}</p>')]


@dataclass
class _Scan:
    html: str  # the text rendered, sanitized
    marks: list[int]  # word starts: where the shown text may end
    cuts: list[int]  # those before which nothing can change, whatever follows (clean cuts)
    limit: int  # text from here on waits: a construct that more text may close or change


def _inline_html(src: str) -> str:
    """Paragraph text rendered as markdown-it renders a paragraph's content, sanitized."""
    env: dict = {}
    tokens = _md.parseInline(src, env)[0].children or [] if src else []
    return _sanitizer.clean(_RENDERER.renderInline(tokens, _md.options, env))


def _scan(src: str) -> _Scan:
    """Paragraph text rendered, and where it can be cut (markdown-it's inline parser, step by step).

    A clean cut is a word start (after a space or a line break) outside every construct, with
    no emphasis delimiter before it still open or matched after it, no code span or link that
    more text could still close: the text before it renders the same whatever follows.
    """
    env: dict = {}
    state = StateInline(src, _md, env, [])
    rules = _md.inline.ruler.getRules("")
    size = len(src)
    marks: list[tuple[int, int]] = []  # (word start, how many delimiters came before it)
    runs: list[int] = []  # where the delimiter run of each delimiter begins
    barrier = size  # no clean cut after this: a construct more text could still close
    code = (-1, -1)  # the last code span
    while state.pos < size:
        pos = state.pos
        char = src[pos]
        if pos and src[pos - 1] in " \n" and char not in MD_TRIM_CHARS:
            marks.append((pos, len(state.delimiters)))
        count, delimiters = len(state.tokens), len(state.delimiters)
        for rule in rules:
            if rule(state, False):
                break
        else:
            state.append_pending(char)
            state.pos += 1
            if char == "[" and not _stays_text(state, pos):  # [label](... may yet become a link
                barrier = min(barrier, pos - 1 if src[pos - 1 : pos] == "!" else pos)
            continue
        if char == "`":
            if len(state.tokens) > count and state.tokens[-1].type == "code_inline":
                code = (pos, state.pos)
            else:  # no closing backticks (yet)
                barrier = min(barrier, pos)
        elif state.pos - pos > 1 and _md.inline.terminator_re.match(char) is None:  # a run of plain text
            space = src.rfind(" ", pos, state.pos - 1)
            if space >= 0 and src[space + 1] not in MD_TRIM_CHARS:
                marks.append((space + 1, delimiters))
            if state.pos - max(pos, space + 1) > 32 and src[state.pos - 1] not in MD_TRIM_CHARS:  # a long word
                marks.append((state.pos - 1, delimiters))  # (cut inside it: text on both sides)
        runs += [pos] * (len(state.delimiters) - delimiters)
    if state.pending:
        state.pushPending()
    for rule2 in _md.inline.ruler2.getRules(""):
        rule2(state)
    found = state.delimiters
    opener = next((n for n, delimiter in enumerate(found) if delimiter.open and delimiter.end < 0), None)
    if opener is not None:  # an emphasis opener without its closer (yet)
        barrier = min(barrier, runs[opener])
    cuts, seen, reach = [], 0, -1
    for mark, before in marks:
        if mark > barrier:
            break
        while seen < before:
            reach = max(reach, found[seen].end)
            seen += 1
        if reach < before:
            cuts.append(mark)
    released = size - barrier > HOLD_CHARS  # waited long enough: show it as it is
    limit = min(size if released else barrier, _unsettled_end(src, found, runs, code))
    html = _sanitizer.clean(_RENDERER.renderInline(_joined(state.tokens), _md.options, env))
    return _Scan(html, [mark for mark, _before in marks] if released else cuts, cuts, limit)


_TRAILING = re.compile(r"&#?[A-Za-z0-9]*\Z|<[^\s<>]*\Z|!\Z")


def _unsettled_end(src: str, delimiters: list, runs: list[int], code: tuple[int, int]) -> int:
    """Where the end of the text starts that more text could still change (its length: nowhere)."""
    size = len(src)
    at = size
    last = src[-1:]
    if last in ("*", "_", "~"):  # how it flanks, so whether it opens or closes, depends on what follows
        at = len(src.rstrip(last))
        for index, delimiter in enumerate(delimiters):
            if 0 <= delimiter.end < len(runs) and runs[delimiter.end] >= at:
                at = min(at, runs[index])
    elif last == "`" and code[1] == size:  # `a` may yet become `a``...
        at = code[0]
    elif last == "\\" and (size - len(src.rstrip("\\"))) % 2:
        at = size - 1
    trailing = _TRAILING.search(src)
    return min(at, trailing.start()) if trailing else at


def _stays_text(state: StateInline, pos: int) -> bool:
    """Whether a `[` that did not begin a link stays text whatever follows (its label ends, no `(` after)."""
    end = parseLinkLabel(state, pos, True)
    return end >= 0 and end + 1 < state.posMax and state.src[end + 1] != "("


def _joined(tokens: list[Token]) -> list[Token]:
    """markdown-it's text_join: escaped characters are text again."""
    for token in tokens:
        if token.type == "text_special":
            token.type = "text"
        if token.children:
            _joined(token.children)
    return tokens


# -- an open fenced code block ----------------------------------------------------------------------


def _resumable(lexer: Any) -> bool:
    """Whether a lexer goes on from a line start given the state stack it had there (RegexLexer's loop)."""
    if not isinstance(lexer, RegexLexer) or isinstance(lexer, ExtendedRegexLexer) or lexer.filters:
        return False
    if getattr(lexer, "tabsize", 0):
        return False
    return "stack" in inspect.signature(lexer.get_tokens_unprocessed).parameters


_TOKEN_TYPE = type(Error)


@dataclass
class _Lexed:
    tokens: list[tuple[int, Any, str]]  # (offset, token type, text), as RegexLexer yields them
    marks: list[tuple[int, tuple]]  # (line start between two tokens, the state stack there)
    roots: list[int]  # offsets between two tokens where the lexer is back in its root state


def _lex(lexer: Any, text: str, stack: tuple[str, ...], begin: int = 0) -> _Lexed:
    """Pygments' RegexLexer loop from `begin` with `stack`, noting where it could go on from later."""
    tokendefs = lexer._tokens
    statestack = list(stack)
    statetokens = tokendefs[statestack[-1]]
    tokens: list[tuple[int, Any, str]] = []
    marks: list[tuple[int, tuple]] = []
    roots: list[int] = []
    pos, size = begin, len(text)
    while True:
        if pos and text[pos - 1] == "\n" and (not marks or marks[-1][0] != pos):
            marks.append((pos, tuple(statestack)))
        if len(statestack) == 1 and (not roots or roots[-1] != pos):
            roots.append(pos)
        for rexmatch, action, new_state in statetokens:
            match = rexmatch(text, pos)
            if match:
                if action is not None:
                    if type(action) is _TOKEN_TYPE:
                        tokens.append((pos, action, match.group()))
                    else:
                        tokens.extend(action(lexer, match))
                pos = match.end()
                if new_state is not None:
                    if isinstance(new_state, tuple):
                        for state in new_state:
                            if state == "#pop":
                                if len(statestack) > 1:
                                    statestack.pop()
                            elif state == "#push":
                                statestack.append(statestack[-1])
                            else:
                                statestack.append(state)
                    elif isinstance(new_state, int):
                        if abs(new_state) >= len(statestack):
                            del statestack[1:]
                        else:
                            del statestack[new_state:]
                    elif new_state == "#push":
                        statestack.append(statestack[-1])
                    statetokens = tokendefs[statestack[-1]]
                break
        else:
            if pos >= size:
                break
            if text[pos] == "\n":
                statestack = ["root"]
                statetokens = tokendefs["root"]
                tokens.append((pos, Whitespace, "\n"))
            else:
                tokens.append((pos, Error, text[pos]))
            pos += 1
    if type(lexer).get_tokens_unprocessed is not RegexLexer.get_tokens_unprocessed:
        # It changes some tokens (not the states) after RegexLexer's loop: its own tokens.
        tokens = [(begin + at, kind, value) for at, kind, value in lexer.get_tokens_unprocessed(text[begin:], stack)]
    return _Lexed(tokens, marks, roots)


def _formatted(tokens: list[tuple[int, Any, str]], ends_line: bool) -> str:
    out = StringIO()
    _FORMATTER.format(((kind, value) for _pos, kind, value in tokens), out)
    html = out.getvalue()
    return html[:-1] if not ends_line and html.endswith("\n") else html  # (as _code_html)


# An open construct (a string, a docstring) shows once it closes, or once it spans this many lines.
OPEN_LINES = 8


class _Fence:
    """An open fenced code block: its lines highlighted as they come, the whole checked when it closes.

    Only text up to where the lexer is back in its root state shows (a string or a docstring
    shows once closed: Pygments lexes some of them differently then), and not the last token of
    an unfinished line (a keyword being typed). Should what shows still change, the page keeps
    its copy (`dirty`) and the whole highlight replaces it when the block closes.
    """

    def __init__(self, renderer: StreamRenderer, fence: str, lang: str, code: int, head: str, body: str):
        self.renderer = renderer
        self.outer = f"{renderer.selector}>:last-child"
        self.selector = f"{self.outer}>:last-child>:last-child"  # div > pre > code
        self.fence, self.lang, self.head = fence, lang, head
        self.lexer = _lexer(lang) if lang else None
        self.highlight = _resumable(self.lexer)  # else: escaped text until it closes
        self.code = code  # where its code begins
        self.start = code  # lexed again from this line start...
        self.begin = 0  # ...from this far into it, with this lexer state
        self.stack: tuple = ("root",)
        self.frozen: list[str] = []  # the HTML of the code before, as the page has it
        self.frozen_size = 0
        self.active = body  # the HTML of the rest, as the page has it
        self.nodes = parse_fragment(body)
        self.shown = code if not body else -1  # (-1: unknown, whatever the page shows)
        self.line = code  # the first line not known to be code
        self.dirty = False  # the page's copy may differ from the whole highlight
        self.whole = ""  # (the block replaced whole)

    def html(self) -> str:
        return self.whole or self.head + "".join(self.frozen) + self.active + _CODE_END

    def size(self) -> int:
        return len(self.whole) or len(self.head) + self.frozen_size + len(self.active) + len(_CODE_END)

    def step(self, text: str, final: bool) -> _Step | None:
        size = len(text)
        pos, close, end = self.line, None, None
        closing = _closing(self.fence)
        while True:
            brk = text.find("\n", pos)
            stop = brk if brk >= 0 else size
            if (brk >= 0 or final) and closing.fullmatch(text, pos, stop):
                close, end = pos, min(stop + 1, size)
                break
            if brk < 0:
                break
            pos = brk + 1
        self.line = pos
        if close is not None or final:
            return self._close(text, size if close is None else close, size if end is None else end)
        stop = pos if _may_close(self.fence).fullmatch(text, pos, size) else size
        region = text[self.start : stop]
        self.renderer.work += len(region) - self.begin
        complete = region.rfind("\n") + 1  # the complete lines end here (highlighted again no more)
        if self.highlight:
            lexed = _lex(self.lexer, region, self.stack, self.begin)
            limit = len(region)
            if complete < len(region):  # not the last token of an unfinished line: it may still change
                limit = lexed.tokens[-1][0] if lexed.tokens else self.begin
            shown = max((at for at in lexed.roots if at <= limit and not region[at - 1 : at].isspace()), default=0)
            if region.count("\n", shown) > OPEN_LINES:  # a long string: show its lines anyway
                shown = max(shown, complete)
            line = region.rfind("\n", 0, shown) + 1
            if shown > line and _may_close(self.fence).fullmatch(region, line, shown):  # ("```" then "```x")
                shown = line
            shown = max(shown, self.begin)
            keep, stack = max(
                ((at, st) for at, st in lexed.marks if at <= min(complete, shown)), default=(0, self.stack)
            )
            tokens = _cut(lexed.tokens, shown)
            before = _formatted(_cut(tokens, keep), True) if keep else ""
            after = _formatted([token for token in tokens if token[0] >= keep], region[:shown].endswith("\n"))
        else:
            shown, keep, stack = len(region), complete, self.stack
            before, after = escapeHtml(region[self.begin : keep]), escapeHtml(region[max(keep, self.begin) :])
        before, after = _sanitizer.clean(before), _sanitizer.clean(after)
        ops = self._ops(before + after)
        if ops is None:  # what the page shows changed: it keeps its copy, the rest goes on from where it ends
            self.frozen.append(self.active)
            self.frozen_size += len(self.active)
            line = text.rfind("\n", 0, self.shown) + 1
            self.start, self.begin, self.stack, self.active, self.nodes = line, self.shown - line, ("root",), "", []
            self.dirty = True
            return self.step(text, final)
        if keep:
            self.frozen.append(before)
            self.frozen_size += len(before)
        if keep or after != self.active:
            self.nodes = parse_fragment(after)
        self.shown = self.start + shown
        if keep:
            self.start, self.begin, self.stack = self.start + keep, 0, stack
        self.active = after
        return _Step(ops, self.shown)

    def _ops(self, html: str) -> list[Op] | None:
        if html.startswith(self.active):
            added = html[len(self.active) :]
            return [Op(f'<i hx-swap-oob="beforeend:{self.selector}">{added}</i>')] if added else []
        if self.shown < 0:  # (the page's copy came from a whole render)
            return [Op(f'<i hx-swap-oob="innerHTML:{self.selector}">{"".join(self.frozen)}{html}</i>')]
        return _diff(self.nodes, self.active, parse_fragment(html), html, self.selector, "")

    def _close(self, text: str, close: int, end: int) -> _Step:
        """The block is whole: highlight it whole once, send what differs from the page's copy."""
        code = text[self.code : close]
        if close == len(text) and not code[code.rfind("\n") + 1 :].strip(" \t"):  # (markdown-it drops such a line)
            code = code[: code.rfind("\n") + 1]
        self.renderer.work += len(code)
        whole = _sanitizer.clean(_code_html(code, self.lang).strip())
        if not (whole.startswith(self.head) and whole.endswith(_CODE_END)):  # (never seen) replace it all
            self.whole = whole
            return _Step([_outer(whole, parse_fragment(whole)[0], self.outer)], close, end)
        body = whole[len(self.head) : -len(_CODE_END)]
        page = "".join(self.frozen) + self.active
        if body.startswith(page):
            ops = [Op(f'<i hx-swap-oob="beforeend:{self.selector}">{body[len(page) :]}</i>')] if body != page else []
        else:
            ops = _diff(parse_fragment(page), page, parse_fragment(body), body, self.selector, "code") or []
        self.frozen, self.frozen_size, self.active = [], 0, body
        return _Step(ops, close, end)


def _cut(tokens: list[tuple[int, Any, str]], at: int) -> list[tuple[int, Any, str]]:
    """The tokens before offset `at` (the one across it cut there)."""
    out = []
    for pos, kind, value in tokens:
        if pos >= at:
            break
        out.append((pos, kind, value[: at - pos]))
    return out


# -- an open table ----------------------------------------------------------------------------------


class _Table:
    """An open table: its rows appended as their lines complete."""

    def __init__(self, renderer: StreamRenderer, lines: list[str], line: int, head: str, body: str):
        self.renderer = renderer
        self.selector = f"{renderer.selector}>:last-child"
        self.header, self.delimiter = lines[0], lines[1]
        self.columns = len(_cells(lines[0]))
        self.autocompleted = sum(self.columns - len(_cells(row)) for row in lines[2:])
        self.head = head  # up to its </thead>
        self.rows = [body] if body else []
        self.rows_size = len(body)
        self.line = line  # the first line not yet a row

    def html(self) -> str:
        body = "".join(self.rows)
        return self.head + (f"<tbody>\n{body}</tbody>\n" if body else "") + "</table>"

    def size(self) -> int:
        return len(self.head) + self.rows_size + (17 if self.rows_size else 0) + 8

    def step(self, text: str, final: bool) -> _Step | None:
        size = len(text)
        pos, end, rows = self.line, None, []
        while pos < size:
            brk = text.find("\n", pos)
            if brk < 0 and not final:
                break  # a row shows when its line is complete (else its missing cells would show empty)
            stop = brk if brk >= 0 else size
            row = self._row(text[pos:stop])
            if row is None:
                end = pos
                break
            rows.append(row)
            pos = stop + 1 if brk >= 0 else size
        if final and end is None:
            end = size
        self.line = pos
        ops = []
        if rows:
            body = "".join(rows)
            if self.rows:
                ops.append(Op(f'<tbody hx-swap-oob="beforeend:{self.selector}>:last-child">{body}</tbody>', True))
            else:
                ops.append(Op(f'<table hx-swap-oob="beforeend:{self.selector}"><tbody>\n{body}</tbody>\n</table>'))
            self.rows.append(body)
            self.rows_size += len(body)
        return _Step(ops, pos, end)

    def _row(self, line: str) -> str | None:
        """The HTML of a line that is the table's next row (None: the table ended before it)."""
        if not mdTrim(line):
            return None
        self.autocompleted += self.columns - len(_cells(line))
        if self.autocompleted > MAX_AUTOCOMPLETED_CELLS:
            return None
        source = f"{self.header}\n{self.delimiter}\n{line}\n"
        self.renderer.work += len(source)
        blocks = _blocks(source)
        if len(blocks) != 1 or blocks[0].kind != "table_open" or blocks[0].end != 3:
            return None
        _head, _tbody, rest = blocks[0].html.partition("<tbody>\n")
        row = rest[: -len("</tbody>\n</table>")]
        return row if row.count("<tr>") == 1 and rest.endswith("</tbody>\n</table>") else None


def _cells(line: str) -> list[str]:
    """A table line's cells, as markdown-it counts them."""
    columns = escapedSplit(mdTrim(line))
    if columns and columns[0] == "":
        columns.pop(0)
    if columns and columns[-1] == "":
        columns.pop()
    return columns


_MARKERS_ONLY = re.compile(r"[ \t]*(?:[-+*>#|=_~`:]+[ \t]*)*(?:\d+[.)]?)?[ \t]*")
_BACKTICKS = re.compile(r"`+")
_EMPHASIS = re.compile(r"\*\*|__|~~|(?<![\w*])\*(?=[^\s*])|(?<![\w_])_(?=[^\s_])")
_OPENERS = re.compile(r"!?\[|<(?=[A-Za-z])|&#?\w*$|\\$")


def _settled(text: str) -> int:
    """How much of a streaming text to render now: not a construct it has only begun.

    The rest of the last line is held back from its first unclosed code span, emphasis, link or
    entity; a last line that is only block markup so far ("- ", "1.", "```") waits for its
    content, and a table row until it is complete (its missing cells would render empty). Text
    shown as literal characters that then turn into markup changes the HTML in the middle of an
    element, which costs re-sending all of it. An approximation of the parser's rules, and it
    need not be more: the end renders everything. (One pass over the last line.)
    """
    start = text.rfind("\n") + 1
    line = text[start:]
    if _MARKERS_ONLY.fullmatch(line) or line.lstrip().startswith("|"):
        return start  # a table row: its missing cells would render as empty ones, to be replaced
    cut = len(line)
    spans: list[tuple[int, int]] = []  # code spans: a run of backticks up to the next run as long
    opened: tuple[int, int] | None = None
    for match in _BACKTICKS.finditer(line):
        if opened is None:
            opened = (match.start(), len(match.group()))
        elif len(match.group()) == opened[1]:
            spans.append((opened[0], match.start()))
            opened = None
    if opened is not None:
        cut = opened[0]

    marks: dict[str, list[int]] = {}
    for match in _EMPHASIS.finditer(line):
        marks.setdefault(match.group(), []).append(match.start())
    for places in marks.values():
        places = [place for place, out in zip(places, _outside(places, spans), strict=True) if out]
        if len(places) % 2:
            cut = min(cut, places[-1])
    openers = list(_OPENERS.finditer(line))
    last_gt = line.rfind(">")
    for match, out in zip(openers, _outside([match.start() for match in openers], spans), strict=True):
        if not out:
            continue
        opener, after = match.group(), match.end()
        if opener.endswith("["):
            close = line.find("]", after)
            unfinished = close < 0 or (line[close + 1 : close + 2] == "(" and line.find(")", close + 2) < 0)
        elif opener == "<":
            unfinished = last_gt < after
        else:
            unfinished = True  # an entity or a backslash at the very end
        if unfinished:
            cut = min(cut, match.start())
    return start if _MARKERS_ONLY.fullmatch(line[:cut]) else start + cut


def _outside(places: list[int], spans: list[tuple[int, int]]) -> list[bool]:
    """For each place (sorted), whether it is outside the code spans (sorted)."""
    flags, span = [], 0
    for place in places:
        while span < len(spans) and spans[span][1] <= place:
            span += 1
        flags.append(not (span < len(spans) and spans[span][0] < place < spans[span][1]))
    return flags
