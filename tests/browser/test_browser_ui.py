"""The page around the chat in a real Chromium: phone and desktop layouts, light and dark, keyboard
shortcuts, copy, following the stream, reading replies out, labels and focus.

Screenshots at 375 px and 1280 px, light and dark, go to tests/artifacts/.
"""

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from conversations.models import Conversation, Provider

from ..fake_provider import Stream, text_stream
from .conftest import CONVERSATION_URL, assert_no_browser_errors, orm, send, sign_up, wait_for_socket
from .conftest import SCREENSHOTS as ARTIFACTS

pytestmark = pytest.mark.browser

REPLY = """Here is a plan for **three days in Kyoto** in autumn:

1. Fushimi Inari early in the morning, then Tofuku-ji for the maples.
2. Arashiyama: the bamboo grove, Tenryu-ji and a walk along the river.
3. Higashiyama: Kiyomizu-dera, Sannenzaka and Gion at dusk.

| Day | Budget (yen) |
|-----|-------------:|
| 1   | 4,000        |
| 2   | 5,500        |

```python
total = sum([4000, 5500, 3500])
print(f"{total:,} yen")
```

Book the ryokan early: autumn weekends fill up."""


def furnish(username: str) -> str:
    """Conversations for `username` as a person would have them (one pinned, one long reply); returns one's code."""

    def make():
        user = get_user_model().objects.get(username=username)
        provider = Provider.objects.default()
        for title in ["Sourdough starter schedule", "Quarterly report outline", "Fixing a flaky test"]:
            c = Conversation.objects.create(owner=user, provider=provider, title=title, title_source="user")
            q = c.messages.create(role="user", content=f"Help with: {title}")
            c.messages.create(role="assistant", parent=q, content="Sure.")
        Conversation.objects.filter(owner=user, title="Fixing a flaky test").update(pinned=True)
        trip = Conversation.objects.create(
            owner=user, provider=provider, title="Kyoto in autumn", title_source="model", model="fake-model"
        )
        q = trip.messages.create(role="user", content="Plan three days in Kyoto in autumn, on a budget.")
        a = trip.messages.create(
            role="assistant", parent=q, content=REPLY, model="fake-model", prompt_tokens=18, completion_tokens=164
        )
        Conversation.objects.filter(pk=trip.pk).update(active_leaf=a)
        return str(trip.code)

    return orm(make)


def shoot(page: Page, name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


@pytest.mark.parametrize("width", [375, 1280])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_follow_the_system_theme_at_phone_and_desktop_width(live_daphne, page, fake, width, scheme):
    page.emulate_media(color_scheme=scheme)
    page.set_viewport_size({"width": width, "height": 800})
    sign_up(page, live_daphne, f"viewer{width}{scheme}")
    code = furnish(f"viewer{width}{scheme}")
    page.goto(f"{live_daphne.url}/c/{code}/")
    wait_for_socket(page)
    expect(page.locator("html")).to_have_attribute("data-theme", scheme)  # no choice saved: the system's
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == ("rgb(22, 23, 22)" if scheme == "dark" else "rgb(247, 247, 245)")
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing sticks out sideways
    if width == 375:
        expect(page.locator("#sidebar")).not_to_be_in_viewport()
        expect(page.locator("#sidebar-toggle")).to_be_visible()
    else:
        expect(page.locator("#sidebar")).to_be_visible()
        expect(page.locator("#sidebar-toggle")).to_be_hidden()
    shoot(page, f"ui-{width}-{scheme}.png")
    if width == 375:
        page.locator("#sidebar-toggle").click()
        expect(page.locator("#sidebar")).to_be_in_viewport()
        page.wait_for_timeout(300)  # the slide-in
        shoot(page, f"ui-{width}-{scheme}-drawer.png")
    else:
        page.locator("#conversation-menu > summary").click()
        shoot(page, f"ui-{width}-{scheme}-menu.png")
    assert_no_browser_errors(page)


def test_the_dark_mode_toggle_overrides_the_system_and_is_remembered(live_daphne, page, fake):
    page.emulate_media(color_scheme="light")
    sign_up(page, live_daphne, "nightowl")
    toggle = page.get_by_role("button", name="Dark mode")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(22, 23, 22)"
    page.reload()
    wait_for_socket(page)
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")  # saved in this browser
    page.emulate_media(color_scheme="dark")
    page.get_by_role("button", name="Dark mode").click()  # light, although the system is dark now
    page.reload()
    wait_for_socket(page)
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(247, 247, 245)"
    assert_no_browser_errors(page)


def test_at_phone_width_the_sidebar_is_a_drawer(live_daphne, page, fake):
    page.set_viewport_size({"width": 375, "height": 740})
    sign_up(page, live_daphne, "thumbs")
    furnish("thumbs")
    page.reload()
    wait_for_socket(page)
    sidebar, toggle = page.locator("#sidebar"), page.locator("#sidebar-toggle")
    expect(sidebar).not_to_be_in_viewport()
    assert page.evaluate("document.getElementById('sidebar').inert")  # not reachable by Tab while closed
    expect(toggle).to_have_attribute("aria-expanded", "false")

    toggle.click()
    expect(sidebar).to_be_in_viewport(ratio=1)
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#sidebar-q")).to_be_focused()
    page.keyboard.press("Escape")
    expect(sidebar).not_to_be_in_viewport()
    expect(toggle).to_be_focused()

    toggle.click()
    page.mouse.click(360, 400)  # on the backdrop, beside the drawer
    expect(sidebar).not_to_be_in_viewport()

    toggle.click()
    page.locator("#sidebar-list").get_by_role("link", name="Quarterly report outline").click()
    expect(page.locator("#conv-title")).to_have_value("Quarterly report outline")
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375

    page.set_viewport_size({"width": 1280, "height": 800})  # a wide window shows it again, usable
    expect(sidebar).to_be_in_viewport()
    assert not page.evaluate("document.getElementById('sidebar').inert")
    assert_no_browser_errors(page)


def test_ctrl_shift_o_starts_a_new_chat(live_daphne, page, fake):
    sign_up(page, live_daphne, "hotkey")
    send(page, "First chat")
    expect(page.locator("article.msg-assistant")).to_have_attribute("data-status", "complete")
    first = page.url
    page.locator("#composer-input").press("Control+Shift+O")
    page.wait_for_url(lambda url: url != first and CONVERSATION_URL.search(url) is not None)
    wait_for_socket(page)
    expect(page.locator("article.msg")).to_have_count(0)
    expect(page.locator("#sidebar-list a")).to_have_text(["First chat"])
    assert page.get_by_role("button", name="+ New chat").get_attribute("aria-keyshortcuts") == "Control+Shift+O"
    assert_no_browser_errors(page)


def test_copy_puts_the_message_as_written_on_the_clipboard(live_daphne, page, fake):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_up(page, live_daphne, "copier")
    code = furnish("copier")
    page.goto(f"{live_daphne.url}/c/{code}/")
    wait_for_socket(page)
    reply = page.locator("article.msg-assistant")
    button = reply.locator(".msg-meta button.copy")
    button.click()
    expect(button).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == REPLY  # the markdown, not the rendered text
    expect(button).to_have_text("Copy", timeout=3000)
    page.locator("article.msg-user .msg-meta button.copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == "Plan three days in Kyoto in autumn, on a budget."
    assert_no_browser_errors(page)


def at_bottom(page: Page) -> bool:
    return page.evaluate(
        "(el => el.scrollHeight - el.scrollTop - el.clientHeight < 80)(document.getElementById('messages'))"
    )


# Records what the live region announces (each added line) and whether the reply was still streaming.
HEARD = """() => {
  window.__heard = [];
  new MutationObserver(records => {
    for (const record of records) for (const node of record.addedNodes) {
      const reply = document.querySelector("article.msg-assistant");
      window.__heard.push([reply ? reply.dataset.status : null, node.textContent]);
    }
  }).observe(document.getElementById("announcer"), {childList: true});
}"""


def test_the_view_follows_the_stream_until_the_reader_scrolls_up_and_replies_are_read_out(live_daphne, page, fake):
    page.set_viewport_size({"width": 1280, "height": 600})
    sign_up(page, live_daphne, "reader")
    sentences = [f"Sentence number {i} is here.\n\n" for i in range(60)]
    fake.push(Stream(text_stream(sentences), delay=0.1))  # about 6 s
    page.evaluate(HEARD)
    send(page, "Tell me a long story")
    reply = page.locator("article.msg-assistant")
    expect(reply).to_have_attribute("data-status", "streaming")
    page.wait_for_function("document.getElementById('messages').scrollHeight > 1200")
    assert at_bottom(page)  # it followed while the text grew
    page.locator("#messages").evaluate("el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')); }")
    height = page.evaluate("document.getElementById('messages').scrollHeight")
    page.wait_for_function(f"document.getElementById('messages').scrollHeight > {height + 200}")
    assert page.evaluate("document.getElementById('messages').scrollTop") == 0  # left where the reader is
    expect(reply).to_have_attribute("data-status", "complete", timeout=10_000)
    heard = page.evaluate("window.__heard")
    spoken = " ".join(text for _status, text in heard).split()
    assert spoken == "".join(sentences).split()  # all of it, in order, each part once
    assert sum(status == "streaming" for status, _text in heard) >= 5  # sentence by sentence while it streamed
    assert heard[0][1].startswith("Sentence number 0 is here.")
    assert page.evaluate("document.getElementById('messages').scrollTop") == 0
    assert page.locator("#messages").get_attribute("aria-live") is None  # not the whole transcript, token by token
    assert_no_browser_errors(page)


UNLABELLED = """() => {
  const visible = el => el.checkVisibility() && el.type !== "hidden";
  const labelled = el => {
    const by = el.getAttribute("aria-labelledby");
    const texts = [
      el.getAttribute("aria-label"),
      by && document.getElementById(by) && document.getElementById(by).textContent,
      el.labels && [...el.labels].map(label => label.textContent).join(""),
      el.getAttribute("title"),
      el.textContent,
    ];
    return texts.some(text => text && text.trim());
  };
  const controls = [...document.querySelectorAll("button, input, select, textarea, summary, a[href]")];
  return controls.filter(el => visible(el) && !labelled(el)).map(el => el.outerHTML.slice(0, 120));
}"""


def test_every_control_has_a_name_and_focus_is_visible(live_daphne, page, fake):
    sign_up(page, live_daphne, "keyboarder")
    code = furnish("keyboarder")
    page.goto(f"{live_daphne.url}/c/{code}/")
    wait_for_socket(page)
    page.locator("#conversation-menu > summary").click()
    page.locator(".import-panel > summary").click()
    assert page.evaluate(UNLABELLED) == []
    page.keyboard.press("Escape")
    expect(page.locator("#conversation-menu")).not_to_have_attribute("open", "")

    page.locator("#sidebar-q").focus()
    for _ in range(4):
        page.keyboard.press("Tab")
        outline = page.evaluate(
            "(s => s.outlineStyle + ' ' + s.outlineWidth)(getComputedStyle(document.activeElement))"
        )
        assert outline.startswith("solid") and not outline.endswith(" 0px"), outline
    page.set_viewport_size({"width": 375, "height": 740})
    page.locator("#sidebar-toggle").click()
    assert page.evaluate(UNLABELLED) == []
    assert_no_browser_errors(page)
