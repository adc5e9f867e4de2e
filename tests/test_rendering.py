"""The renderer: markdown to safe HTML, whole or in pieces while a reply streams (conversations/rendering.py)."""

import logging
import random
import re

import pytest

from conversations import rendering
from conversations.rendering import (
    MAX_INTERVAL_SECONDS,
    MIN_CHARS,
    MIN_INTERVAL_SECONDS,
    OPEN_CHARS_PER_SECOND,
    StreamRenderer,
    _settled,
    render_html,
)

from .frames import Page, plain

# -- markdown ----------------------------------------------------------------------------------


def test_it_renders_tables_strikethrough_and_task_lists():
    html = render_html("| a | b |\n|:--|--:|\n| 1 | 2 |\n\n~~gone~~\n\n- [x] done\n- [ ] open\n")
    assert '<th style="text-align:left">a</th>' in html and '<td style="text-align:right">2</td>' in html
    assert "<s>gone</s>" in html
    assert '<ul class="contains-task-list">' in html
    assert html.count('type="checkbox"') == 2 and html.count('checked="checked"') == 1
    assert html.count('disabled="disabled"') == 2


def test_it_highlights_code_and_gives_each_block_a_copy_button():
    html = render_html("```python\ndef add(a, b):\n    return a + b\n```\n\n```\nplain <text>\n```\n\n    indented\n")
    assert html.count('<button type="button" class="copy-code" aria-label="Copy code">Copy</button>') == 3
    assert '<code class="language-python"><span class="k">def</span>' in html
    assert '<span class="code-lang">python</span>' in html
    assert "plain &lt;text&gt;" in html  # no language: escaped, not highlighted
    assert "<code>indented\n</code>" in html
    # The code inside is exactly the code written (what the copy button copies).
    assert plain(html.split("<pre>")[1].split("</pre>")[0]) == "def add(a, b):\n    return a + b\n"


def test_every_top_level_block_is_one_element():
    html = render_html("# T\n\npara\n\n- a\n- b\n\n> q\n\n---\n\n```\nx\n```\n\n| a |\n|---|\n| 1 |\n")
    tops = re.findall(r"(?:^|(?<=>))<(h1|p|ul|blockquote|hr|div|table)\b", html)
    assert tops[:4] == ["h1", "p", "ul", "blockquote"]
    assert not html.startswith("\n") and "</p>\n<ul>" not in html  # nothing between blocks


# -- hostile output ----------------------------------------------------------------------------

HOSTILE = [
    "<script>window.pwned = 1</script>",
    '<img src=x onerror="window.pwned = 1">',
    '<iframe src="https://evil.example/"></iframe>',
    '<svg onload="window.pwned = 1"><circle r="1"/></svg>',
    "<style>body { display: none }</style>",
    '<a href="javascript:alert(1)">click</a>',
    '<div onclick="alert(1)">x</div>',
    "<math><mi xlink:href='javascript:alert(1)'>x</mi></math>",
]


@pytest.mark.parametrize("source", HOSTILE)
def test_raw_html_from_the_model_is_shown_as_text(source):
    html = render_html(f"Before {source} after\n\n{source}\n")
    assert "<script" not in html and "<iframe" not in html and "<img" not in html and "<svg" not in html
    assert "<style" not in html and "<math" not in html and "<div onclick" not in html
    assert not re.search(r"<[^>]+\son\w+=", html)  # no event handler attribute on any tag
    assert source in plain(html)  # shown as the text it is


@pytest.mark.parametrize(
    "link",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](java&#x09;script:alert(1))",
        "[x](&#106;avascript:alert(1))",
        "[x](vbscript:msgbox(1))",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        "[x](file:///etc/passwd)",
        "[x](/admin/)",
        "[x](//evil.example/)",
        "<javascript:alert(1)>",
        "[x][ref]\n\n[ref]: javascript:alert(1)",
    ],
)
def test_unsafe_links_stay_text(link):
    html = render_html(link)
    assert "<a " not in html and "href" not in html


def test_safe_links_open_apart_and_pass_no_referrer():
    html = render_html("[site](https://example.com/a?b=1&c=2) [plain](http://example.org) <me@example.com>")
    links = re.findall(r"<a [^>]+>", html)
    assert len(links) == 3
    assert 'href="https://example.com/a?b=1&amp;c=2"' in links[0] and 'href="mailto:me@example.com"' in links[2]
    for link in links:
        assert 'rel="noopener noreferrer nofollow"' in link and 'target="_blank"' in link


def test_images_are_not_loaded_until_clicked():
    html = render_html(
        '![a cat](https://img.example/cat.png "Cat") and ![x](javascript:alert(1)) ![y](data:image/png;base64,AA==)'
    )
    assert "<img" not in html and "src=" not in html.replace("data-src=", "")
    assert html.count('class="md-image"') == 1
    assert 'data-src="https://img.example/cat.png"' in html and 'data-alt="a cat"' in html
    assert "Load image “a cat” from img.example" in html


def test_a_30000_character_string_stays_whole():
    word = "A" * 30_000
    html = render_html(f"{word}\n\n`{word}`\n\n```\n{word}\n```\n")
    assert html.count(word) == 3


def test_an_unterminated_fence_renders_as_code():
    html = render_html("Intro\n\n```js\nconst a = 1;\nconst b")
    assert '<code class="language-js">' in html and plain(html).endswith("const a = 1;\nconst b")


# -- streaming ---------------------------------------------------------------------------------

DOCUMENTS = [
    "Hello there, how are *you* today? Fine, `thanks`.",
    "# Title\n\nA paragraph\nover two lines.\n\nAnother one with **bold** and [a link](https://x.example).\n",
    "1. one\n2. two\n\n3. three (loose now)\n\n   continued\n4. four\n\nAfter the list.\n",
    "- a\n  - nested a\n    - deeper\n- b\n\n  para in b\n- c\n* other bullet\n+ and another\n",
    "Paragraph then a list\n- item\n- item 2\nlazy line\n\n2. starts at two\n3. three\n",
    "| h1 | h2 | h3 |\n|:---|:--:|---:|\n| a | b | c |\n| d | e |\n| f | g | h | i |\ntext row?\n\nAfter.\n",
    "Intro text\n| x | y |\n|---|---|\n| 1 | 2 |\n\n| not | a table\n|---\n",
    "> quote\n> > nested\n> > more\n> back\nlazy\n\n> second quote\n\n>> tight nested\n",
    "```python\ndef f(x):\n    '''doc\n    string'''\n    return x * 2  # c\n```\n\n"
    "~~~\ntilde fence\n~~~\n\n````md\n```\ninner\n```\n````\n",
    "Setext\n===\n\nAnother\n---\n\nnot a heading\n- - -\n\n***\n",
    "    indented code\n\n    still code\n\nparagraph\n\n\tTabbed code\n",
    "Text with trailing spaces  \nhard break\\\nand more.\n\n&copy; &amp; &#35; < > \" '\n",
    "- [ ] task one\n- [x] task two\n  - [ ] sub task\n\n1. [x] ordered task\n",
    "Windows\r\nline\r\nendings\r\n\r\n- a\r\n- b\r\n\r\n```\r\ncode\r\n```\r\n",
    "Unclosed *emphasis and `code and [link](https://x.example and ~~strike\n\nnext",
    "```js\nconst s = `template ${x}`;\n/* never closed comment\nlet y = 2;\n",
    "# A\n## B\n### C\n#### D\n##### E\n###### F\n####### not\n",
    "1) paren list\n2) two\n\n10. ten\n11. eleven\n\n- \n-\n  empty items\n",
    "> ```\n> code in quote\n> ```\n> - list in quote\n>   1. nested\n\n- > quote in list\n  > more\n",
    "<script>alert(1)</script>\n\n<div>html block</div>\n\n[x](javascript:alert(1)) ![i](https://i.example/i.png)\n",
    "A" * 3000 + "\n\n" + "word " * 400 + "\n",
    "",
    "\n\n\n",
    "Ends without newline and a heading\n# Head",
]


def random_document(rnd: random.Random) -> str:
    parts = [
        lambda: (
            "Para "
            + " ".join(
                rnd.choice(["word", "*em*", "**b**", "`c`", "[l](https://l.example)", "x_y"])
                for _ in range(rnd.randint(1, 12))
            )
        ),
        lambda: "#" * rnd.randint(1, 3) + " Heading " + str(rnd.randint(0, 99)),
        lambda: "\n".join(f"{rnd.choice(['-', '*', '1.', '2)'])} item {i}" for i in range(rnd.randint(1, 4))),
        lambda: "\n".join(f"  - sub {i}" for i in range(rnd.randint(1, 3))),
        lambda: "```" + rnd.choice(["", "python", "js", "nosuchlang"]) + "\nx = 1\nif x:\n    y = '''s'''\n```",
        lambda: "| a | b |\n|---|:-:|\n" + "\n".join(f"| {i} | {i * i} |" for i in range(rnd.randint(0, 3))),
        lambda: "> " + "\n> ".join(rnd.choice(["quote", "> deeper", "- li"]) for _ in range(rnd.randint(1, 3))),
        lambda: rnd.choice(["---", "***", "Setext\n===", "Setext2\n---"]),
        lambda: "    code line\n    another",
        lambda: "1. a\n\n2. b",
    ]
    blocks = [rnd.choice(parts)() for _ in range(rnd.randint(1, 8))]
    return "".join(block + "\n" * rnd.randint(0, 3) for block in blocks).rstrip("\n" if rnd.random() < 0.3 else "")


def stream(text: str, rnd: random.Random, max_piece: int) -> tuple[Page, StreamRenderer, list[str]]:
    """Feed `text` in random pieces; check the page after each frame against the renderer's own HTML."""
    renderer = StreamRenderer("msg-1-text")
    page = Page()
    page.apply('<div id="msg-1-text" class="msg-text markdown"></div>')
    frames: list[str] = []
    at = 0
    while at < len(text):
        at = min(len(text), at + rnd.randint(1, max_piece))
        for frame in renderer.update(text[:at]):
            frames.append(frame)
            page.apply(frame)
        assert page.text_html(1) == renderer.html, f"after {text[:at]!r}"
    for frame in renderer.update(text, final=True):
        frames.append(frame)
        page.apply(frame)
    return page, renderer, frames


@pytest.mark.parametrize("index", range(len(DOCUMENTS)))
def test_streaming_in_pieces_gives_the_html_of_rendering_whole(index, caplog):
    text = DOCUMENTS[index]
    whole = render_html(text)
    for seed in range(25):
        rnd = random.Random(seed)
        page, renderer, _frames = stream(text, rnd, rnd.choice([1, 3, 8, 40]))
        assert renderer.html == whole
        assert page.text_html(1) == whole, f"seed {seed}"
    assert "differs from the whole render" not in caplog.text  # never repaired by resending it whole


def test_streaming_random_documents_gives_the_html_of_rendering_whole(caplog):
    caplog.set_level(logging.WARNING)
    for seed in range(300):
        rnd = random.Random(seed)
        text = random_document(rnd)
        page, renderer, _frames = stream(text, rnd, rnd.choice([1, 2, 5, 13]))
        assert page.text_html(1) == render_html(text) == renderer.html, f"seed {seed}: {text!r}"
    assert "differs from the whole render" not in caplog.text


def test_a_viewer_who_joins_late_ends_with_the_same_html():
    text = DOCUMENTS[1] + DOCUMENTS[5] + DOCUMENTS[8] + DOCUMENTS[2]
    rnd = random.Random(7)
    renderer = StreamRenderer("msg-1-text")
    early, late = Page(), None
    early.apply('<div id="msg-1-text" class="msg-text markdown"></div>')
    at = 0
    while at < len(text):
        at = min(len(text), at + rnd.randint(1, 9))
        for frame in renderer.update(text[:at]):
            early.apply(frame)
            if late is not None:
                late.apply(frame)
        if late is None and at > len(text) // 2:
            # The generation's snapshot: its HTML after every frame so far; then only later frames.
            late = Page()
            late.apply(f'<div id="msg-1-text" class="msg-text markdown" hx-swap-oob="true">{renderer.html}</div>')
            assert late.text_html(1) == early.text_html(1)
    for frame in renderer.update(text, final=True):
        early.apply(frame)
        late.apply(frame)
    assert late.text_html(1) == early.text_html(1) == render_html(text)


def shown_after(frames: list[str]) -> str:
    """The reply's HTML on a page whose copy started empty, after `frames`."""
    page = Page()
    page.apply('<div id="msg-1-text"></div>')
    for frame in frames:
        page.apply(frame)
    return page.text_html(1)


def words(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


def test_finished_blocks_are_sent_once():
    first = "The first paragraph has a unique word: zanzibar.\n\n"
    text = first + "Second paragraph " * 20 + "\n\nThird " * 30
    renderer, so_far, frames = StreamRenderer("msg-1-text"), "", []
    for word in words(text):
        so_far += word
        frames += renderer.update(so_far)
    frames += renderer.update(text, final=True)
    assert sum(frame.count("zanzibar") for frame in frames) == 1
    # Text is appended to the open paragraph, not re-sent with it.
    assert sum(frame.count("Second") for frame in frames) == 20


def test_only_changes_travel_inside_a_code_block():
    code = "```python\n" + "".join(f"value_{i} = compute({i}, 'label {i}')\n" for i in range(60)) + "```\n"
    renderer, so_far, frames = StreamRenderer("msg-1-text"), "", []
    for word in words(code):
        so_far += word
        frames += renderer.update(so_far)
    frames += renderer.update(code, final=True)
    assert shown_after(frames) == render_html(code)
    # The block is about 13 kB: re-rendering it is not re-sending it.
    assert max(len(frame) for frame in frames) < 600


def test_table_rows_travel_in_messages_of_their_own():
    renderer = StreamRenderer("msg-1-text")
    renderer.update("| a | b |\n|---|---|\n| 1 | 2 |\n")
    frames = renderer.update("| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n")
    rows = [frame for frame in frames if "<tr>" in frame]
    assert rows and all(frame.startswith("<tbody ") for frame in rows)  # a <div> would lose the row


def test_frames_wait_for_enough_new_text_or_time():
    renderer = StreamRenderer("msg-1-text")
    assert renderer.delay(1, now=0.0) == 0  # the first text goes out at once
    renderer.update("Hi")
    sent = renderer.sent_at
    assert renderer.delay(500, now=sent + 0.05) == pytest.approx(MIN_INTERVAL_SECONDS - 0.05)
    assert renderer.delay(MIN_CHARS, now=sent + MIN_INTERVAL_SECONDS + 1e-6) == 0
    assert renderer.delay(1, now=sent + MIN_INTERVAL_SECONDS + 1e-6) == pytest.approx(
        MAX_INTERVAL_SECONDS - MIN_INTERVAL_SECONDS, abs=1e-5
    )
    assert renderer.delay(1, now=sent + MAX_INTERVAL_SECONDS + 1e-6) == 0


def test_a_very_long_open_block_is_rendered_less_often():
    renderer = StreamRenderer("msg-1-text")
    renderer.update("word " * 3000)  # 15,000 characters in one paragraph, still open
    assert renderer.delay(10_000, now=renderer.sent_at + MAX_INTERVAL_SECONDS) == pytest.approx(
        15_000 / OPEN_CHARS_PER_SECOND - MAX_INTERVAL_SECONDS, abs=1e-3
    )


def test_a_continued_reply_starts_from_the_html_it_has():
    before = "# Part one\n\nSome **bold"  # ends inside a construct: the page shows it rendered whole
    renderer = StreamRenderer("msg-1-text", before)
    assert renderer.html == render_html(before)
    page = Page()
    page.apply(f'<div id="msg-1-text" class="msg-text markdown">{render_html(before)}</div>')
    text = before + " continued** here.\n\n- and a list\n"
    for frame in renderer.update(text) + renderer.update(text, final=True):
        page.apply(frame)
    assert page.text_html(1) == render_html(text)


@pytest.mark.parametrize(
    ("streamed", "shown"),
    [
        ("Text with `co", "<p>Text with</p>"),
        ("Some **bol", "<p>Some</p>"),
        ("A [link](https://exa", "<p>A</p>"),
        ("Intro\n\n- ", "<p>Intro</p>"),
        ("Intro\n\n12", "<p>Intro</p>"),
        ("| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4", "<table>"),
    ],
)
def test_markup_that_has_only_begun_waits_while_streaming(streamed, shown):
    renderer = StreamRenderer("msg-1-text")
    renderer.update(streamed)
    assert renderer.html.startswith(shown)
    assert "<td>3</td>" not in renderer.html and "**" not in renderer.html and "`" not in renderer.html
    renderer.update(streamed, final=True)  # the end shows everything, as the whole render does
    assert renderer.html == render_html(streamed)


# -- long replies: the work of an update does not grow with the reply (issue 11) -----------------

_WORDS = (
    "the of and to in is that it for as with was on be at by this had not are but from or have an they which one "
    "you were her all she there would their we him been has when who will more no if out so said what up its about "
    "cache request server latency thread buffer parser renderer stream token browser response memory process"
)
VOCABULARY = _WORDS.split()


def prose(rnd: random.Random, chars: int) -> str:
    """Sentences of realistic words with some inline markup now and then, on one line."""
    out, size = [], 0
    while size < chars:
        word = rnd.choice(VOCABULARY)
        if rnd.random() < 0.04:
            word = rnd.choice(
                [
                    f"**{word} {word}**",
                    f"`{word}_{size}()`",
                    f"[{word}](https://x.example/{word}?n={size})",
                    f"*{word}*",
                ]
            )
        if rnd.random() < 0.08:
            word += rnd.choice([".", ",", "?", "!", ":"])
        out.append(word)
        size += len(word) + 1
    return " ".join(out) + "."


def long_paragraph(scale: float) -> str:
    return "## A heading\n\n" + prose(random.Random(1), int(5000 * scale)) + "\n"


def long_code(scale: float) -> str:
    lines = []
    for index in range(int(30 * scale)):
        lines += [
            f"def step_{index}(values: list[int], factor: float = {index}.5) -> float:",
            f'    """Sum the values, scaled by {index} for the multiples of {index % 7 + 2}."""',
            "    total = 0.0  # the sum so far",
            "    for position, value in enumerate(values):",
            f"        if value % {index % 7 + 2} == 0:",
            "            total += value * factor",
            "        else:",
            f"            total -= position / {index % 7 + 2}",
            "    return round(total, 2) if total else float('nan')",
            "",
        ]
    return "Here it is:\n\n```python\n" + "\n".join(lines) + "\n```\n\nThat is all.\n"


def long_table(scale: float) -> str:
    rnd = random.Random(3)
    rows = [
        f"| item {n} | {rnd.randint(1, 9999)} | {' '.join(rnd.sample(VOCABULARY, 3))} | **ok** |"
        for n in range(int(200 * scale))
    ]
    return "The figures:\n\n| Name | Count | Notes | Status |\n|:--|--:|:--|:-:|\n" + "\n".join(rows) + "\n\nDone.\n"


def short_paragraphs(scale: float) -> str:
    rnd = random.Random(4)
    return "".join(prose(rnd, rnd.randint(120, 320)) + "\n\n" for _ in range(int(20 * scale)))


SHAPES = {"paragraph": long_paragraph, "code": long_code, "table": long_table, "paragraphs": short_paragraphs}


def pieces(text: str) -> list[str]:
    """Word-sized tokens as a model streams them: a leading space stays with its word, long words split."""
    out = []
    for piece in re.findall(r"\n|[ \t]*[A-Za-z]+|[ \t]*\d+|[ \t]*[^\sA-Za-z\d]|[ \t]+", text):
        out += [piece[at : at + 6] for at in range(0, len(piece), 6)]
    assert "".join(out) == text
    return out


SPANS = re.compile(r"</?span[^>]*>")


def follow(text: str, parts: list[str], *, check: bool = True) -> tuple[StreamRenderer, list[int]]:
    """Stream `text` in `parts`; if `check`, after each update the page is the renderer's HTML and the
    whole render of what it has rendered so far (its settled part; inside a code block that is still
    open, but for the highlighting's spans); at the end, the whole render. Returns each update's work."""
    renderer, page, so_far, work = StreamRenderer("msg-1-text"), Page(), "", []
    page.apply('<div id="msg-1-text" class="msg-text markdown"></div>')
    for part in parts:
        so_far += part
        for frame in renderer.update(so_far):
            page.apply(frame)
        work.append(renderer.work)
        if check:
            assert page.text_html(1) == renderer.html, f"after {so_far[-80:]!r}"
            assert so_far.startswith(renderer.text)
            whole = render_html(renderer.text)
            if whole != renderer.html:  # only while a code block is open: its last tokens may change colour
                assert SPANS.sub("", whole) == SPANS.sub("", renderer.html), f"after {so_far[-80:]!r}"
                assert whole.endswith("</code></pre></div>"), f"after {so_far[-80:]!r}"
    for frame in renderer.update(so_far, final=True):
        page.apply(frame)
    assert page.text_html(1) == render_html(text) == renderer.html
    return renderer, work


@pytest.mark.parametrize("shape", SHAPES)
def test_each_long_shape_streams_exactly_as_it_renders_whole(shape, caplog):
    text = SHAPES[shape](0.4 if shape.startswith("paragraph") else 0.2)  # 2,000 characters, 60 lines, 40 rows
    for parts in (pieces(text), words(text)):
        follow(text, parts)
    assert "differs from the whole render" not in caplog.text


def test_a_code_block_is_highlighted_while_it_streams_as_when_it_is_whole():
    text = long_code(0.2)
    renderer, page, so_far, highlighted = StreamRenderer("msg-1-text"), Page(), "", False
    page.apply('<div id="msg-1-text"></div>')
    for part in pieces(text):
        so_far += part
        for frame in renderer.update(so_far):
            page.apply(frame)
            assert len(frame) < 1000  # lines appended, never the block again
        # Python's lexer goes on line by line: what shows is what the whole render of it shows.
        assert page.text_html(1) == render_html(renderer.text), f"after {so_far[-80:]!r}"
        highlighted |= "\n```\n" not in so_far and '<span class="sd">"""Sum' in page.text_html(1)
    assert highlighted  # (docstrings show once closed: Pygments lexes them whole)
    for frame in renderer.update(so_far, final=True):
        page.apply(frame)
    assert page.text_html(1) == render_html(text)


@pytest.mark.parametrize(
    "text",
    [
        "Some **bold text** and *emphasis*, ~~gone~~, a [link](https://x.example/a_b?c=1&d=2) and `co*de`, "
        "an ![image](https://i.example/i.png) and __strong__ then a_b_c and 2 * 3 * 4.\nA second line  \nhard break.",
        "Unclosed *star and [bracket and `tick, then more words to go past them. " * 8,
        "Intro:\n\n```js\nconst a = `x`; /* a\nlong comment */\nlet b = 'q';\n```\nAfter the code.\n\n"
        "~~~\nplain <b>\n~~~",
        "A list:\n\n- one *em*\n- two\n  - nested [l](https://l.example)\n- three\n\n1. first\n2. second\n\n   loose\n",
        "Para then a list\n- item\nPara then a heading\n# Heading\nSetext\n---\n| a | b |\n|---|---|\n| 1 | 2 |\n"
        "> quote\n",
        "Ends inside a fence\n\n```python\ndef f():\n    return '''text\n",
    ],
)
def test_tricky_text_streams_exactly(text, caplog):
    for parts in (pieces(text), words(text), list(text)):
        follow(text, parts)
    assert "differs from the whole render" not in caplog.text


@pytest.mark.parametrize("shape", SHAPES)
def test_the_work_of_an_update_does_not_grow_with_the_reply(shape):
    """Characters handed to markdown-it and Pygments: a bounded number per update, linear in all."""
    totals = []
    for scale in (1, 4):
        text = SHAPES[shape](scale)
        renderer, work = follow(text, pieces(text), check=False)
        # Per update a few hundred characters; once per code block, when it closes, the whole block.
        assert len([each for each in work if each > 400]) <= text.count("```") // 2, max(work)
        totals.append(renderer.total_work / len(text))
    assert totals[1] < 25 and totals[1] < totals[0] * 1.2  # (it was quadratic: re-parsing the open block)


def test_streamed_bytes_stay_within_three_times_the_html_at_fifty_tokens_a_second():
    for shape, make in SHAPES.items():
        text = make(1)
        parts = pieces(text)
        renderer, sent, now, pending, done = StreamRenderer("msg-1-text"), [], 0.0, "", ""
        for part in parts:  # one token every 20 ms; a frame whenever the renderer's throttle allows
            now += 0.02
            pending += part
            if renderer.delay(len(pending), now=now) <= 0:
                done += pending
                pending = ""
                sent += renderer.update(done)
                renderer.sent_at = now
        sent += renderer.update(text, final=True)
        assert shown_after(sent) == render_html(text)
        assert sum(len(frame) for frame in sent) <= 3 * len(render_html(text)), shape
        assert len(sent) >= len(parts) / 20, shape  # (at least 2.5 frames a second)


def test_a_text_that_does_not_go_on_from_the_last_is_rendered_again():
    renderer, page = StreamRenderer("msg-1-text"), Page()
    page.apply('<div id="msg-1-text"></div>')
    for text in ("First **para**graph\n\nand a second", "Something else\n\n- entirely"):
        for frame in renderer.update(text):
            page.apply(frame)
    for frame in renderer.update("Something else\n\n- entirely", final=True):
        page.apply(frame)
    assert page.text_html(1) == render_html("Something else\n\n- entirely")


def _old_settled(text: str) -> int:
    """The rule as it was before it became one pass (a reference for the test below)."""
    markers = re.compile(r"[ \t]*(?:[-+*>#|=_~`:]+[ \t]*)*(?:\d+[.)]?)?[ \t]*")
    emphasis = re.compile(r"\*\*|__|~~|(?<![\w*])\*(?=[^\s*])|(?<![\w_])_(?=[^\s_])")
    start = text.rfind("\n") + 1
    line = text[start:]
    if markers.fullmatch(line) or line.lstrip().startswith("|"):
        return start
    cut = len(line)
    runs = [(m.start(), len(m.group())) for m in re.finditer(r"`+", line)]
    code_spans = []
    while runs:
        at, size = runs.pop(0)
        close = next((i for i, (_, other) in enumerate(runs) if other == size), None)
        if close is None:
            cut = min(cut, at)
            break
        code_spans.append((at, runs[close][0]))
        runs = runs[close + 1 :]
    outside = [m for m in emphasis.finditer(line) if not any(a < m.start() < b for a, b in code_spans)]
    for mark in {m.group() for m in outside}:
        places = [m.start() for m in outside if m.group() == mark]
        if len(places) % 2:
            cut = min(cut, places[-1])
    for match in re.finditer(r"!?\[|<(?=[A-Za-z])|&#?\w*$|\\$", line):
        if any(a < match.start() < b for a, b in code_spans):
            continue
        opener, rest = match.group(), line[match.end() :]
        if opener.endswith("["):
            link = re.match(r"[^\]]*\](\([^)]*\)?)?", rest)
            unfinished = link is None or (link.group(1) is not None and not link.group(1).endswith(")"))
        elif opener == "<":
            unfinished = ">" not in rest
        else:
            unfinished = True
        if unfinished:
            cut = min(cut, match.start())
    return start if markers.fullmatch(line[:cut]) else start + cut


def test_the_settled_rule_is_the_same_in_one_pass():
    rnd = random.Random(5)
    alphabet = ["a", "b", " ", "*", "**", "_", "__", "~~", "`", "``", "[", "]", "(", ")", "!", "<", ">", "&", "#", "\\"]
    alphabet += ["- ", "1.", "|", "\n", "x_y", "**b**", "`c`", "[l](u)", "&amp;"]
    for _ in range(3000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 24)))
        assert _settled(text) == _old_settled(text), repr(text)


def test_a_failure_while_following_the_open_block_renders_it_all_again(monkeypatch, caplog):
    def broken(self, text, final):
        raise RuntimeError("a bug")

    text = "# Title\n\nA paragraph that goes on and on, " * 3
    renderer, page = StreamRenderer("msg-1-text"), Page()
    page.apply('<div id="msg-1-text"></div>')
    for at in range(10, len(text), 7):
        if at > len(text) // 2:
            monkeypatch.setattr(rendering._Paragraph, "step", broken)
        for frame in renderer.update(text[:at]):
            page.apply(frame)
        assert page.text_html(1) == renderer.html
    for frame in renderer.update(text, final=True):
        page.apply(frame)
    assert page.text_html(1) == render_html(text)
    assert "Could not follow the open block" in caplog.text
