"""The chat page in a real Chromium, against a real Daphne process and the fake provider.

Everything here is synchronous: Playwright's sync API cannot run inside an asyncio loop.
"""

# The fixtures imported from .live_server are (re)bound as test parameters, as pytest intends.
# ruff: noqa: F811

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .fake_provider import Reply
from .live_server import ARTIFACTS, browser_page, live_daphne  # noqa: F401

pytestmark = pytest.mark.browser

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
def page(browser_page):
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


def test_a_new_user_sends_with_enter_and_watches_the_reply_stream(live_daphne, page, fake):
    sign_up(page, live_daphne, "streamer")
    fake.pace = 0.05  # about 2.5 s for the 48 words below
    message = "Please repeat after me " + " ".join(f"word{i}" for i in range(44))
    expected = f"You said: {message}"

    send(page, message)

    expect(page.locator("article.msg-user .msg-text")).to_have_text(message)
    reply = page.locator("article.msg-assistant")
    expect(reply).to_have_count(1)
    reply_id = reply.get_attribute("id")

    samples = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        sample = page.evaluate(SAMPLE, reply_id)
        samples.append(sample)
        if sample["status"] != "streaming":
            break
        time.sleep(0.02)
    streamed = [s for s in samples if s["status"] == "streaming" and s["text"]]
    assert streamed, f"no text was shown while streaming: {samples}"
    assert all(s["visible"] for s in streamed)
    assert all(expected.startswith(s["text"]) for s in streamed), streamed
    assert len(streamed[-1]["text"]) > len(streamed[0]["text"]), "the text did not grow while streaming"
    assert len({s["text"] for s in streamed}) >= 3, "expected several partial texts while streaming"
    assert len(streamed[0]["text"]) < len(expected), "the first partial text was already the whole reply"
    assert all(s["sendDisabled"] for s in streamed), "Send was enabled while a reply was streaming"
    assert samples[-1]["status"] == "complete", samples[-1]

    expect(page.locator(f"#{reply_id}-text")).to_have_text(expected)
    expect(page.locator(f"#{reply_id} .msg-error")).to_have_count(0)
    expect_composer_ready(page)
    expect(page.locator("#composer-input")).to_be_focused()
    # The first words became the title, live, in the header and the sidebar.
    expect(page.locator("#conv-title")).to_have_value("Please repeat after me word0 word1 word2 word3…")
    expect(page.locator("#sidebar-list a[aria-current=page]")).to_have_text(
        "Please repeat after me word0 word1 word2 word3…"
    )
    assert_socket_never_dropped(page)

    page.reload()
    wait_for_socket(page)
    expect(page.locator("article.msg")).to_have_count(2)
    expect(page.locator("article.msg-user .msg-text")).to_have_text(message)
    expect(page.locator(f"#{reply_id}")).to_have_attribute("data-status", "complete")
    assert text_of(page, f"#{reply_id}-text").strip() == expected
    expect_composer_ready(page)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(Path(ARTIFACTS) / "chat-1280.png"))
    assert_no_browser_errors(page)


def test_b_shift_enter_inserts_a_newline_instead_of_sending(live_daphne, page, fake):
    sign_up(page, live_daphne, "poet")
    box = page.locator("#composer-input")
    box.click()
    box.press_sequentially("line one")
    box.press("Shift+Enter")
    box.press_sequentially("line two")

    expect(box).to_have_value("line one\nline two")
    page.wait_for_timeout(500)  # give a wrongly sent message time to show up
    expect(page.locator("article.msg")).to_have_count(0)
    assert fake.completions() == []

    box.press("Enter")  # and a plain Enter does send it, newline included
    expect(page.locator("article.msg-assistant")).to_have_attribute("data-status", "complete")
    assert text_of(page, "article.msg-user .msg-text") == "line one\nline two"
    assert fake.completions()[0].body["messages"][-1]["content"] == "line one\nline two"
    expect_composer_ready(page)
    assert len(fake.completions()) == 1  # only the Enter sent anything
    assert_socket_never_dropped(page)
    assert_no_browser_errors(page)


def test_c_rename_then_delete_a_conversation(live_daphne, page, fake):
    sign_up(page, live_daphne, "organizer")
    send(page, "Plan a picnic")
    expect(page.locator("article.msg-assistant")).to_have_attribute("data-status", "complete")
    sidebar_links = page.locator("#sidebar-list a")
    expect(sidebar_links).to_have_text(["Plan a picnic"])

    page.locator("#conv-title").fill("Picnic plans")
    page.locator("#title-form").get_by_role("button", name="Rename").click()
    expect(sidebar_links).to_have_text(["Picnic plans"])
    expect(page.locator("#sidebar-list a[aria-current=page]")).to_have_text("Picnic plans")
    expect(page.locator("#conv-title")).to_have_value("Picnic plans")
    expect(page.locator("#title-form .error")).to_have_count(0)
    assert_socket_never_dropped(page)

    page.reload()  # the new title was saved
    expect(page).to_have_title("Picnic plans · Chat")
    expect(page.locator("#conv-title")).to_have_value("Picnic plans")
    expect(sidebar_links).to_have_text(["Picnic plans"])

    conversation_url = page.url
    delete = page.get_by_role("button", name="Delete", exact=True)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("#conversation-menu > summary").click()  # Delete is in the conversation's menu
    delete.click()
    page.wait_for_timeout(300)
    assert page.url == conversation_url  # dismissing the confirm keeps the conversation
    response = page.reload()
    assert response is not None and response.status == 200
    expect(sidebar_links).to_have_text(["Picnic plans"])

    dialogs = []

    def accept(dialog):
        dialogs.append((dialog.type, dialog.message))
        dialog.accept()

    page.once("dialog", accept)
    page.locator("#conversation-menu > summary").click()
    delete.click()
    page.wait_for_url(lambda url: url != conversation_url and CONVERSATION_URL.search(url) is not None)
    assert dialogs == [("confirm", "Delete this conversation? This cannot be undone.")]
    expect(sidebar_links).to_have_count(0)
    expect(page.locator("#sidebar-list")).to_contain_text("No conversations yet.")
    expect(page.locator("article.msg")).to_have_count(0)

    assert_no_browser_errors(page)
    response = page.goto(conversation_url)  # the browser logs this expected 404 as a console error
    assert response is not None and response.status == 404


def test_d_a_provider_failure_shows_the_error_and_retry_completes(live_daphne, page, fake):
    sign_up(page, live_daphne, "unlucky")
    fake.push(Reply(500, b"<html><title>Bad Gateway</title></html>", "text/html"))
    send(page, "Are you there?")

    failed = page.locator("article.msg-assistant")
    expect(failed).to_have_attribute("data-status", "error")
    expect(failed.locator(".msg-error")).to_have_text(
        "The provider had an internal error (HTTP 500). It answered with an HTML page titled “Bad Gateway”."
    )
    retry = failed.get_by_role("button", name="Retry")
    expect(retry).to_be_visible()
    expect_composer_ready(page)
    failed_id = failed.get_attribute("id")

    retry.click()

    expect(page.locator(f"#{failed_id}")).to_have_count(0)  # the failed reply is replaced
    reply = page.locator("article.msg-assistant")
    expect(reply).to_have_count(1)
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator(".msg-text")).to_have_text("You said: Are you there?")
    expect(reply.locator(".msg-error")).to_have_count(0)
    expect(reply.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.locator("#notices")).to_be_empty()
    expect_composer_ready(page)
    assert len(fake.completions()) == 2
    assert_socket_never_dropped(page)

    page.reload()  # and that is what was saved
    wait_for_socket(page)
    expect(page.locator("article.msg")).to_have_count(2)
    expect(page.locator("article.msg-assistant")).to_have_attribute("data-status", "complete")
    expect(page.locator("article.msg-assistant .msg-text")).to_have_text("You said: Are you there?")
    assert_no_browser_errors(page)
