"""Simplified Chinese in a real Chromium: the switcher, the chat page, a streamed reply, and a browser
that asks for Chinese before anyone signs in. Screenshots go to tests/artifacts/.
"""

import time

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from conversations.models import Profile

from .conftest import (
    CONVERSATION_URL,
    PASSWORD,
    SAMPLE,
    assert_no_browser_errors,
    assert_socket_never_dropped,
    orm,
    send,
    wait_for_socket,
)
from .conftest import SCREENSHOTS as ARTIFACTS

pytestmark = pytest.mark.browser


def shoot(page: Page, name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def saved_language(username: str) -> str:
    def query():
        user = get_user_model().objects.get(username=username)
        return Profile.objects.filter(user=user).values_list("language", flat=True).first() or ""

    return orm(query)


def switch_language(page: Page, language: str, button: str):
    page.select_option("#language-select", language)
    page.get_by_role("button", name=button).click()


def test_a_user_switches_to_chinese_and_chats_in_it(live_daphne, page, fake):
    page.goto(live_daphne.url + "/signup/")
    expect(page.get_by_role("heading", name="Create an account")).to_be_visible()
    expect(page.get_by_label("Language")).to_have_value("en")

    switch_language(page, "zh-hans", "Switch")
    expect(page.get_by_role("heading", name="创建账号")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(page.get_by_label("语言")).to_have_value("zh-hans")

    page.fill("#id_username", "lin")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.get_by_role("button", name="注册").click()
    page.wait_for_url(CONVERSATION_URL)
    wait_for_socket(page)  # the socket has sent its first frame: the composer's buttons
    assert saved_language("lin") == "zh-hans"  # picked before signing up, kept for the account

    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(page.locator("#send")).to_have_text("发送")  # rendered by the socket
    expect(page.locator("#new-chat")).to_have_text("+ 新聊天")
    expect(page.locator("#composer-input")).to_have_attribute("placeholder", "消息（Enter 发送，Shift+Enter 换行）")
    expect(page.get_by_role("textbox", name="消息")).to_be_visible()
    expect(page.get_by_role("button", name="退出登录")).to_be_visible()
    expect(page.locator(".empty-state")).to_have_text("发送一条消息开始聊天。回复来自 Environment (OPENAI_BASE_URL)。")

    fake.pace = 0.05
    message = "请跟着我说 " + " ".join(f"词{i}" for i in range(30))
    expected = f"You said: {message}"
    send(page, message)
    reply = page.locator("article.msg-assistant")
    expect(reply).to_have_count(1)
    reply_id = reply.get_attribute("id")
    expect(reply.locator(".msg-role")).to_have_text("助手")
    expect(page.locator("#stop")).to_have_text("停止")

    samples, shot, deadline = [], False, time.monotonic() + 20
    while time.monotonic() < deadline:
        sample = page.evaluate(SAMPLE, reply_id)
        samples.append(sample)
        if not shot and sample["status"] == "streaming" and len(sample["text"] or "") > 40:
            shoot(page, "i18n-zh-streaming-1280.png")  # half-way through
            shot = True
        if sample["status"] != "streaming":
            break
        time.sleep(0.02)
    streamed = [s for s in samples if s["status"] == "streaming" and s["text"]]
    assert len({s["text"] for s in streamed}) >= 3, "expected several partial texts while streaming"
    assert all(expected.startswith(s["text"]) for s in streamed), streamed
    assert samples[-1]["status"] == "complete", samples[-1]
    expect(page.locator(f"#{reply_id}-text")).to_have_text(expected)
    footer = page.locator(f"#{reply_id} .msg-meta")
    expect(footer.get_by_role("button", name="重新生成")).to_be_visible()
    expect(footer.get_by_role("button", name="复制")).to_be_visible()
    expect(footer).to_contain_text("个 token")
    expect(page.locator("#send")).to_have_text("发送")
    assert_socket_never_dropped(page)
    shoot(page, "i18n-zh-chat-1280.png")

    # The saved choice wins over a browser that asks for English, on the page and on the socket.
    page.set_extra_http_headers({"Accept-Language": "en-US,en;q=0.9"})
    page.context.clear_cookies(name="django_language")
    page.reload()
    wait_for_socket(page)
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(page.locator(f"#{reply_id} .msg-role")).to_have_text("助手")
    expect(page.locator("#send")).to_have_text("发送")

    page.set_viewport_size({"width": 375, "height": 800})
    page.reload()  # laid out for a phone from the start, no transition caught half-way
    wait_for_socket(page)
    expect(page.locator("#send")).to_have_text("发送")
    shoot(page, "i18n-zh-chat-375.png")

    # And back to English from the sidebar's switcher.
    page.set_viewport_size({"width": 1280, "height": 800})
    switch_language(page, "en", "切换")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert CONVERSATION_URL.search(page.url)  # back on the same conversation
    wait_for_socket(page)
    expect(page.locator("#send")).to_have_text("Send")
    expect(page.locator(f"#{reply_id} .msg-role")).to_have_text("Assistant")
    assert saved_language("lin") == "en"
    assert_no_browser_errors(page)


def test_a_chinese_browser_gets_chinese_pages_before_signing_in(live_daphne, browser_page):
    browser = browser_page.context.browser
    context = browser.new_context(locale="zh-CN", viewport={"width": 375, "height": 740})
    try:
        page = context.new_page()
        page.goto(live_daphne.url + "/accounts/login/")
        expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
        expect(page.get_by_role("heading", name="登录")).to_be_visible()
        expect(page.get_by_label("用户名")).to_be_visible()
        expect(page.get_by_label("语言")).to_have_value("zh-hans")
        shoot(page, "i18n-zh-login-375.png")

        # A wrong password: Django's own message, in Chinese too.
        page.get_by_label("用户名").fill("nobody")
        page.get_by_label("密码").fill("wrong-password-123")
        page.get_by_role("button", name="登录").click()
        expect(page.locator(".error")).to_contain_text("请输入一个正确的")

        # The switcher's cookie beats the browser's Accept-Language.
        switch_language(page, "en", "切换")
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        page.reload()
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        expect(page.locator("html")).to_have_attribute("lang", "en")
    finally:
        context.close()
