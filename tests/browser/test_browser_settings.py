"""The chat settings drawer and presets in a real Chromium, against a real Daphne and the fake provider.

Synchronous on purpose: Playwright's sync API cannot run inside an asyncio loop.
"""

import pytest
from playwright.sync_api import Page, expect

from conversations.models import Conversation

from .conftest import assert_no_browser_errors, expect_composer_ready, orm, send, sign_up, wait_for_socket

pytestmark = pytest.mark.browser

ALWAYS = {"model", "messages", "stream", "stream_options", "user"}


def saved_params(username: str) -> dict:
    return orm(lambda: Conversation.objects.get(owner__username=username).params)


def open_settings(page: Page):
    page.locator("#settings-drawer > summary").click()
    expect(page.locator("#settings-drawer .drawer")).to_be_visible()


def change(page: Page, selector: str, value: str):
    """Type into a field and leave it (a change event): wait for the server's answer to the save."""
    with page.expect_response(lambda r: r.url.endswith("/settings/") and r.request.method == "POST"):
        page.locator(selector).fill(value)
        page.locator(selector).press("Tab")


def test_settings_are_saved_on_change_and_reach_the_provider(live_daphne, page, fake):
    sign_up(page, live_daphne, "tuner")
    open_settings(page)

    change(page, "#param-temperature", "0.4")
    expect(page.locator("#settings-status")).to_have_text("Saved")
    change(page, "#param-stop-1", "END")
    change(page, "#param-stop-2", r"\n\n")
    expect(page.locator("#settings-status")).to_have_text("Saved")
    expect(page.locator(".field-error:visible")).to_have_count(0)
    page.screenshot(path=str(live_daphne.log_path.parent / "settings-1280.png"))

    page.locator("#settings-drawer .drawer-head").get_by_role("button", name="Close").click()
    expect(page.locator("#settings-drawer .drawer")).to_be_hidden()
    send(page, "Hi there")
    expect(page.locator("article.msg-assistant")).to_have_attribute("data-status", "complete")
    expect_composer_ready(page)
    body = fake.completions()[0].body
    assert set(body) - ALWAYS == {"temperature", "stop"}
    assert body["temperature"] == 0.4 and body["stop"] == ["END", "\n\n"]

    # A bad value: an inline message, what was typed stays, and nothing is saved.
    open_settings(page)
    change(page, "#param-temperature", "5")
    expect(page.locator("#param-temperature-error")).to_have_text("Enter a number from 0 to 2.")
    expect(page.locator("#param-temperature-error")).to_be_visible()
    expect(page.locator("#settings-status")).to_have_text("Not saved: fix the fields marked below.")
    expect(page.locator("#param-temperature")).to_have_value("5")
    assert saved_params("tuner") == {"temperature": 0.4, "stop": ["END", "\n\n"]}

    change(page, "#param-temperature", "0.6")  # fixed: the message goes, the value is saved
    expect(page.locator("#param-temperature-error")).to_be_hidden()
    expect(page.locator("#settings-status")).to_have_text("Saved")
    assert saved_params("tuner")["temperature"] == 0.6

    page.reload()  # the drawer shows what was saved
    wait_for_socket(page)
    open_settings(page)
    expect(page.locator("#param-temperature")).to_have_value("0.6")
    expect(page.locator("#param-stop-2")).to_have_value(r"\n\n")
    assert_no_browser_errors(page)


def test_typing_into_the_next_field_while_a_save_runs_is_not_lost(live_daphne, page, fake):
    sign_up(page, live_daphne, "quick")
    open_settings(page)
    page.locator("#param-temperature").fill("0.3")
    with page.expect_response(lambda r: r.url.endswith("/settings/")):
        page.locator("#param-temperature").press("Tab")  # the save starts; focus is now in top_p
        page.keyboard.type("0.9")
    expect(page.locator("#param-top_p")).to_be_focused()
    expect(page.locator("#param-top_p")).to_have_value("0.9")
    page.keyboard.press("Tab")
    expect(page.locator("#settings-status")).to_have_text("Saved")
    page.wait_for_function("() => document.getElementById('param-top_p').value === '0.9'")
    for _ in range(50):
        if "top_p" in saved_params("quick"):
            break
        page.wait_for_timeout(100)
    assert saved_params("quick") == {"temperature": 0.3, "top_p": 0.9}
    assert_no_browser_errors(page)


def test_a_preset_saved_in_one_chat_starts_the_next(live_daphne, page, fake):
    sign_up(page, live_daphne, "planner")
    open_settings(page)
    change(page, "#param-seed", "1234")
    page.locator("#param-system_prompt").fill("Plan carefully.")
    with page.expect_response(lambda r: r.url.endswith("/settings/")):
        page.locator("#param-system_prompt").press("Tab")
    page.locator("#preset-name").fill("Careful")
    page.get_by_role("button", name="Save preset").click()
    expect(page.locator("#presets")).to_contain_text("Saved “Careful”.")
    expect(page.locator(".preset-list .preset-name")).to_have_text(["Careful"])

    send(page, "First chat")  # so that New chat makes a new conversation
    expect(page.locator("article.msg-assistant")).to_have_attribute("data-status", "complete")
    page.reload()
    wait_for_socket(page)
    first_url = page.url
    page.locator("#new-chat-preset").select_option(label="Careful")
    page.locator("#new-chat").click()
    page.wait_for_url(lambda url: url != first_url)
    wait_for_socket(page)
    send(page, "Second chat")
    expect(page.locator("article.msg-assistant")).to_have_attribute("data-status", "complete")
    body = fake.completions()[-1].body
    assert body["seed"] == 1234 and set(body) - ALWAYS == {"seed"}
    assert body["messages"][0] == {"role": "system", "content": "Plan carefully."}
    assert_no_browser_errors(page)


def test_the_drawer_fits_a_phone(live_daphne, page, fake):
    page.set_viewport_size({"width": 375, "height": 740})
    sign_up(page, live_daphne, "pocket")
    open_settings(page)
    box = page.locator("#settings-drawer .drawer").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    temperature = page.locator("#param-temperature")
    temperature.scroll_into_view_if_needed()
    field = temperature.bounding_box()
    assert field is not None and field["x"] >= 0 and field["x"] + field["width"] <= 375
    change(page, "#param-max_tokens", "zero")
    expect(page.locator("#param-max_tokens-error")).to_have_text("Enter a whole number, such as 256.")
    page.locator("#param-max_tokens-error").scroll_into_view_if_needed()
    page.screenshot(path=str(live_daphne.log_path.parent / "settings-375.png"))
    assert_no_browser_errors(page)
