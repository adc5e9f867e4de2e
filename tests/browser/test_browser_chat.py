"""The chat page in a real Chromium, against a real Daphne process and the fake provider.

Everything here is synchronous: Playwright's sync API cannot run inside an asyncio loop.
"""

import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from ..fake_provider import Reply
from .conftest import (
    CONVERSATION_URL,
    SAMPLE,
    assert_no_browser_errors,
    assert_socket_never_dropped,
    expect_composer_ready,
    send,
    sign_up,
    text_of,
    wait_for_socket,
)
from .live_server import ARTIFACTS

pytestmark = pytest.mark.browser


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
