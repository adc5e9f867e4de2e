"""Model output to safe HTML, whole or while it streams (DESIGN: everything a model returns is untrusted).

markdown-it-py parses (raw HTML off; tables, strikethrough, task lists), Pygments highlights
code, nh3 sanitizes: no raw HTML from the model, links only to http, https and mailto with
rel="noopener noreferrer nofollow", and images become a button that loads them only when clicked
(static/js/markdown.js).

The HTML of a reply is the HTML of its top-level blocks, one element each, side by side. While a
reply streams, `StreamRenderer` re-renders only the blocks that may still change (the open one,
usually) and sends the page only what changed, as htmx out-of-band swaps addressed from the
reply's element down its last children: text appended to the end of a paragraph or a code
block, a new block appended, at worst one element replaced. A block is finished, and never
parsed again, once a later block has begun on a complete line followed by another complete line
(so no look-ahead of the parser can still change where it ends). Rendering a text in pieces
therefore gives exactly the HTML of rendering it whole, which `finish()` checks.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import nh3
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml, unescapeAll
from mdit_py_plugins.tasklists import tasklists_plugin
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

log = logging.getLogger(__name__)

# While a reply streams, its HTML goes out at most this often (the first piece at once)...
MIN_INTERVAL_SECONDS = 0.15
# ...and, between those, only once this much new text has come, or this long has passed: a frame
# costs about 60 bytes of envelope, so a frame per token would send many times the reply's size.
MIN_CHARS = 80
MAX_INTERVAL_SECONDS = 0.5
# Each frame re-parses the unfinished blocks: a very long one is re-parsed less often (CPU).
OPEN_CHARS_PER_SECOND = 8000

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
    lines = [group[0].map[0] if group[0].map else 0 for group in groups]
    # One call to the sanitizer for them all, then split where its elements begin and end.
    html = _sanitizer.clean("".join(raw))
    spans = _elements(html)
    if len(spans) == len(groups):
        return [Block(line, html[start:end]) for line, (start, end) in zip(lines, spans, strict=True)]
    blocks = [Block(line, _sanitizer.clean(part).strip()) for line, part in zip(lines, raw, strict=True)]
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
    then only the frames that follow.
    """

    def __init__(self, element_id: str, text: str = ""):
        self.selector = f"#{element_id}"
        self.text = ""  # rendered so far
        self._seen = ""  # received so far
        self.final = False
        self.sent_at: float | None = None
        self._done = 0  # characters of text in finished blocks
        self._done_html = ""
        self._open_src = ""  # the HTML of the blocks after them, as the page has it
        self._open: list[Node] = []
        if text:  # a reply that goes on from text a page shows rendered whole (not held back)
            self._seen = text
            self._render(text, final=False)

    @property
    def html(self) -> str:
        return self._done_html + self._open_src

    def delay(self, pending: int, now: float | None = None) -> float:
        """Seconds to wait before the next frame, with `pending` new characters waiting."""
        if self.sent_at is None:
            return 0.0
        since = (time.monotonic() if now is None else now) - self.sent_at
        every = max(MIN_INTERVAL_SECONDS, (len(self.text) - self._done) / OPEN_CHARS_PER_SECOND)
        if since < every:
            return every - since
        longest = max(MAX_INTERVAL_SECONDS, every)
        if pending >= MIN_CHARS or since >= longest:
            return 0.0
        return longest - since

    def update(self, text: str, *, final: bool = False) -> list[str]:
        """Render `text` (the whole reply so far); return the frames for a page that has `html`."""
        if text == self._seen and (self.final or not final):
            return []
        self._seen = text
        self.sent_at = time.monotonic()
        return self._render(text if final else text[: _settled(text)], final)

    def _render(self, text: str, final: bool) -> list[str]:
        self.text = text
        tail = text[self._done :]
        blocks = _blocks(tail)
        keep = len(blocks) if final else _finished(tail, blocks)
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
        elif keep:
            self._done += _line_offset(tail, blocks[keep].line)
        self._done_html += finished
        self._open_src = src[len(finished) :]
        self._open = parse_fragment(self._open_src) if self._open_src else []
        if final:
            self.final = True
            whole = render_html(text)
            if self.html != whole:  # never seen in the tests: the block split was not stable
                log.warning("Streamed HTML differs from the whole render; sending it whole")
                self._done_html, self._open_src, self._open = whole, "", []
                ops = [Op(f'<div hx-swap-oob="innerHTML:{self.selector}">{whole}</div>')]
        return _frames(ops)

    def _replace_open(self, src: str) -> list[Op]:
        """Remove the open blocks from the page and append their new render."""
        if any(node.tag is None for node in self._open):
            return [Op(f'<div hx-swap-oob="innerHTML:{self.selector}">{self._done_html}{src}</div>')]
        ops = [Op(f'<div hx-swap-oob="delete:{self.selector}>:last-child"></div>') for _node in self._open]
        if src:
            ops.append(Op(f'<div hx-swap-oob="beforeend:{self.selector}">{src}</div>'))
        return ops


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
    need not be more: the end renders everything.
    """
    start = text.rfind("\n") + 1
    line = text[start:]
    if _MARKERS_ONLY.fullmatch(line) or line.lstrip().startswith("|"):
        return start  # a table row: its missing cells would render as empty ones, to be replaced
    cut = len(line)
    runs = [(m.start(), len(m.group())) for m in _BACKTICKS.finditer(line)]
    code_spans = []
    while runs:
        at, size = runs.pop(0)
        close = next((i for i, (_, other) in enumerate(runs) if other == size), None)
        if close is None:
            cut = min(cut, at)
            break
        code_spans.append((at, runs[close][0]))
        runs = runs[close + 1 :]
    outside = [m for m in _EMPHASIS.finditer(line) if not any(a < m.start() < b for a, b in code_spans)]
    for mark in {m.group() for m in outside}:
        places = [m.start() for m in outside if m.group() == mark]
        if len(places) % 2:
            cut = min(cut, places[-1])
    for match in _OPENERS.finditer(line):
        if any(a < match.start() < b for a, b in code_spans):
            continue
        opener, rest = match.group(), line[match.end() :]
        if opener.endswith("["):
            link = re.match(r"[^\]]*\](\([^)]*\)?)?", rest)
            unfinished = link is None or (link.group(1) is not None and not link.group(1).endswith(")"))
        elif opener == "<":
            unfinished = ">" not in rest
        else:
            unfinished = True  # an entity or a backslash at the very end
        if unfinished:
            cut = min(cut, match.start())
    return start if _MARKERS_ONLY.fullmatch(line[:cut]) else start + cut


def _finished(tail: str, blocks: list[Block]) -> int:
    """How many of the leading blocks can no longer change, whatever text follows."""
    complete = len(_BREAK.findall(tail))  # lines ended by a line break
    done = 0
    for index in range(1, len(blocks)):
        if blocks[index].line + 1 < complete:
            done = index
        else:
            break
    return done


def _line_offset(text: str, line: int) -> int:
    """Where line number `line` (from 0) starts in `text`."""
    if line == 0:
        return 0
    for count, match in enumerate(_BREAK.finditer(text), start=1):
        if count == line:
            return match.end()
    return len(text)
