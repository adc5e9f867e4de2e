"""Replies as markdown in a real Chromium: formatted while they stream, copyable code, hostile output inert.

Against a real Daphne process and the fake provider streaming in small pieces. Everything here is
synchronous: Playwright's sync API cannot run inside an asyncio loop.
"""

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from ..fake_provider import Stream, text_stream
from .conftest import assert_no_browser_errors, send, sign_up, wait_for_socket
from .live_server import ARTIFACTS

pytestmark = pytest.mark.browser

CODE = 'def greet(name):\n    return f"Hello, {name}!"\n'
REPLY = (
    "# Plan for the day\n\nHere is **the plan**, with `inline code` and a [link](https://example.com/).\n\n"
    f"```python\n{CODE}```\n\n"
    "- first item\n- second item\n\n| Step | Time |\n|:--|--:|\n| Coffee | 5 min |\n| Work | 8 h |\n\n"
    + " ".join(f"Word{i}" for i in range(120))
    + ".\n"
)


def pieces(text: str, size: int = 3) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def reply_ids(page: Page) -> tuple[str, str]:
    reply = page.locator("article.msg-assistant").last
    expect(reply).to_have_attribute("data-status", "streaming")
    article = reply.get_attribute("id")
    return article, f"{article}-text"


def test_a_reply_is_formatted_while_it_streams_and_its_code_can_be_copied(live_daphne, page, fake):
    sign_up(page, live_daphne, "reader")
    fake.push(Stream(text_stream(pieces(REPLY)), delay=0.02))  # about 5 s
    send(page, "What is the plan?")
    article, text = reply_ids(page)

    # Formatted before the reply ends: the heading, the highlighted code with its button, the table.
    streaming = f'#{article}[data-status="streaming"] #{text}'
    expect(page.locator(f"{streaming} > h1")).to_have_text("Plan for the day")
    expect(page.locator(f"{streaming} strong")).to_have_text("the plan")
    expect(page.locator(f"{streaming} .code-block pre code span.k").first).to_have_text("def")
    expect(page.locator(f"{streaming} .code-block button.copy-code")).to_have_count(1)
    expect(page.locator(f"{streaming} table tbody tr")).to_have_count(2)
    assert "**" not in page.locator(f"#{text}").text_content()  # never shown as raw markdown
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(Path(ARTIFACTS) / "markdown-streaming-1280.png"))
    expect(page.locator(f"#{article}")).to_have_attribute("data-status", "complete", timeout=20_000)

    live = page.locator(f"#{text}").inner_html()
    assert live.count("<h1>") == 1 and live.count('class="code-block"') == 1 and "<table>" in live
    assert "Word119." in page.locator(f"#{text}").text_content()
    page.locator(f"#{text} .code-block").scroll_into_view_if_needed()
    page.screenshot(path=str(Path(ARTIFACTS) / "markdown-finished-1280.png"))
    link = page.locator(f"#{text} a")
    expect(link).to_have_attribute("href", "https://example.com/")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")

    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_daphne.url)
    copy = page.locator(f"#{text} button.copy-code")
    copy.click()
    expect(copy).to_have_class(re.compile(r"\bcopied\b"))
    assert page.evaluate("navigator.clipboard.readText()") == CODE

    # The page that watched the stream shows exactly what a reload renders from the database.
    page.wait_for_timeout(1600)  # the button's "copied" mark goes away
    live = page.locator(f"#{text}").inner_html()
    page.reload()
    wait_for_socket(page)
    assert page.locator(f"#{text}").inner_html() == live
    assert_no_browser_errors(page)


HOSTILE = (
    "Look: <script>window.__pwned = 'script'</script>\n\n"
    "<img src=x onerror=\"window.__pwned = 'img'\">\n\n"
    "<iframe src=\"javascript:window.__pwned = 'iframe'\"></iframe>\n\n"
    "<svg onload=\"window.__pwned = 'svg'\"></svg> <b onmouseover=\"window.__pwned = 'hover'\">hover me</b>\n\n"
    "[click me](javascript:window.__pwned='link') and [data](data:text/html,<script>alert(1)</script>)\n\n"
    "<a href=\"javascript:window.__pwned='raw'\">raw link</a>\n\n"
    "![tracker]({image})\n\n"
    "```html\n<script>window.__pwned = 'code'</script>\n```\n"
)


def test_hostile_output_never_runs_and_images_wait_for_a_click(live_daphne, page, fake):
    dialogs, requests = [], []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("request", lambda request: requests.append(request.url))
    sign_up(page, live_daphne, "target")
    image = f"{live_daphne.url}/static/favicon.svg?tracker=1"
    fake.push(Stream(text_stream(pieces(HOSTILE.format(image=image), 5)), delay=0.01))
    send(page, "Say something nasty")
    article, text = reply_ids(page)
    expect(page.locator(f"#{article}")).to_have_attribute("data-status", "complete", timeout=20_000)

    def assert_inert():
        body = page.locator(f"#{text}")
        for tag in ("script", "iframe", "img", "svg", "b"):
            expect(body.locator(tag)).to_have_count(0)
        assert "<script>window.__pwned = 'script'</script>" in body.text_content()  # shown as text
        assert body.locator("a").count() == 0  # javascript: and data: links stay text
        body.get_by_text("hover me").hover()
        body.get_by_text("click me").click()
        assert page.evaluate("window.__pwned") is None
        assert dialogs == []
        assert not any("tracker=1" in url for url in requests), "the image was loaded without a click"

    assert_inert()
    page.reload()
    wait_for_socket(page)
    assert_inert()

    # Only a click loads the image, then it shows.
    button = page.locator(f"#{text} button.md-image")
    expect(button).to_have_attribute("data-src", image)
    with page.expect_request(lambda request: "tracker=1" in request.url):
        button.click()
    expect(page.locator(f"#{text} img")).to_have_attribute("src", image)
    assert page.evaluate("window.__pwned") is None
    assert_no_browser_errors(page)


LONG = "A" * 30_000
WIDE = (
    f"Plain {LONG}\n\n`{LONG}`\n\n**{LONG}**\n\n[{LONG}](https://example.com/{LONG})\n\n"
    f"| a | b |\n|---|---|\n| {LONG} | x |\n\n```\n{LONG}\n```\n\n# {LONG}\n\n> {LONG}\n"
)


# The page's width, how far the conversation scrolls sideways, and the reply's blocks that stick
# out of it (a code block or a table may scroll inside itself, but its box must fit).
FITS = """(id) => {
  const text = document.getElementById(id), list = document.getElementById("messages");
  const wide = [];
  for (const child of text.children) {
    const scrolls = child.matches(".code-block, table");
    if (child.getBoundingClientRect().right > window.innerWidth + 0.5
        || (!scrolls && child.scrollWidth > child.clientWidth + 1)) wide.push(child.tagName);
  }
  return {page: document.documentElement.scrollWidth, viewport: window.innerWidth,
          list: list.scrollWidth - list.clientWidth, wide};
}"""


@pytest.mark.parametrize("width", [375, 1280])
def test_a_30000_character_string_does_not_widen_the_page(live_daphne, page, fake, width):
    page.set_viewport_size({"width": width, "height": 800})
    sign_up(page, live_daphne, f"wide{width}")
    fake.push(Stream(text_stream(pieces(WIDE, 4000)), delay=0.05))
    send(page, "Send me something long")
    article, text = reply_ids(page)

    def assert_fits(when: str):
        sizes = page.evaluate(FITS, text)
        assert sizes["page"] <= sizes["viewport"], f"{when}: the page scrolls sideways: {sizes}"
        assert sizes["list"] <= 0, f"{when}: the conversation scrolls sideways: {sizes}"
        assert sizes["wide"] == [], f"{when}: blocks wider than the page: {sizes}"

    expect(page.locator(f"#{text} p").first).to_contain_text("Plain AAAA")
    assert_fits("while streaming")
    expect(page.locator(f"#{article}")).to_have_attribute("data-status", "complete", timeout=20_000)
    assert page.locator(f"#{text}").text_content().count(LONG) >= 7
    assert_fits("when finished")
    page.reload()
    wait_for_socket(page)
    assert_fits("after a reload")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(Path(ARTIFACTS) / f"long-string-{width}.png"))
    assert_no_browser_errors(page)
