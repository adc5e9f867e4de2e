"""What the browser tests share: the live Daphne and Chromium fixtures, a page that records its errors and
socket traffic, and the steps every test takes (sign up, send, wait for the socket, read the database).

Everything here is synchronous: Playwright's sync API cannot run inside an asyncio loop.
"""

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import Page, expect

from .live_server import browser_page, live_daphne  # noqa: F401 (fixtures of every browser test)

# Screenshots of the page around the chat, in light and dark, and in Chinese (tests/artifacts/).
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts"

PASSWORD = "Lantern-quarry-4817"
CONVERSATION_URL = re.compile(r"/c/[0-9a-f-]{36}/$")

# Counts socket openings and received frames, so a test can wait for a live socket.
SOCKET_PROBE = """
window.__wsOpen = 0;
window.__wsFrames = 0;
document.addEventListener("htmx:wsOpen", function () { window.__wsOpen += 1; });
document.addEventListener("htmx:wsAfterMessage", function () { window.__wsFrames += 1; });
"""


@pytest.fixture
def page(browser_page):  # noqa: F811 - the fixture imported above, as pytest passes it
    """The browser page with the socket probe installed, uncaught JS errors and console errors recorded."""
    browser_page.add_init_script(SOCKET_PROBE)
    browser_page.js_errors = []
    browser_page.on("pageerror", lambda error: browser_page.js_errors.append(str(error)))
    browser_page.console_errors = []

    def on_console(msg):
        if msg.type == "error":
            browser_page.console_errors.append(f"{msg.text} ({msg.location.get('url')})")

    browser_page.on("console", on_console)

    # Print the socket traffic: pytest shows it when a test fails.
    def on_websocket(ws):
        print(f"[ws open] {ws.url}")
        ws.on("framesent", lambda payload: print(f"[ws >] {str(payload)[:300]}"))
        ws.on("framereceived", lambda payload: print(f"[ws <] {str(payload)[:300]}"))
        ws.on("close", lambda _ws: print("[ws closed]"))

    browser_page.on("websocket", on_websocket)
    yield browser_page


def wait_for_socket(page: Page):
    """Wait until the page's websocket is open and the server's first frame has been swapped in."""
    page.wait_for_function("window.__wsOpen > 0 && window.__wsFrames > 0")


def sign_up(page: Page, server, username: str):
    page.goto(server.url + "/signup/")
    page.fill("#id_username", username)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(CONVERSATION_URL)
    wait_for_socket(page)
    expect(page.locator("#composer-input")).to_be_focused()


def send(page: Page, text: str):
    box = page.locator("#composer-input")
    box.fill(text)
    box.press("Enter")


def text_of(page: Page, selector: str) -> str:
    return page.locator(selector).evaluate("element => element.textContent")


def assert_no_browser_errors(page: Page):
    assert page.js_errors == []
    assert page.console_errors == []


def assert_socket_never_dropped(page: Page):
    """The page's websocket opened once since the page loaded: no crash, no reconnect."""
    assert page.evaluate("window.__wsOpen") == 1, "the websocket was closed and reopened during the test"


def expect_composer_ready(page: Page):
    expect(page.locator("#composer-input")).to_have_value("")
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_have_count(0)
    expect(page.locator("#composer-actions")).to_have_attribute("data-busy", "false")


SAMPLE = """(id) => {
  const article = document.getElementById(id);
  const text = document.getElementById(id + "-text");
  const send = document.getElementById("send");
  return {
    status: article ? article.dataset.status : null,
    text: text ? text.textContent : null,
    visible: text ? text.checkVisibility() : false,
    sendDisabled: send ? send.disabled : null,
  };
}"""


def orm(fn, *args):
    """Run database code in a thread of its own.

    Playwright's sync API keeps an asyncio loop running in the test's thread, where Django
    refuses synchronous queries.
    """

    def call():
        try:
            return fn(*args)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()
