"""Managing conversations in a real Chromium: search as you type, pin, archive, export, import,
titles named by the model, and a long conversation read upwards page by page.

(Delete with its confirmation is test_browser_chat.py::test_c_rename_then_delete_a_conversation.)
"""

import json
import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from conversations.library import views as library
from conversations.models import Conversation, Message, Provider

from .conftest import CONVERSATION_URL, assert_no_browser_errors, orm, send, sign_up, wait_for_socket
from .conftest import SCREENSHOTS as ARTIFACTS

pytestmark = pytest.mark.browser


def conversations_of(username: str, titles: list[str]) -> dict[str, str]:
    """Titled conversations with one exchange each, oldest first; returns title -> code."""

    def make():
        user = get_user_model().objects.get(username=username)
        provider = Provider.objects.default()
        codes = {}
        for title in titles:
            c = Conversation.objects.create(owner=user, provider=provider, title=title, title_source="user")
            q = c.messages.create(role="user", content=f"About {title.lower()}")
            c.messages.create(role="assistant", parent=q, content=f"Notes on {title.lower()}.")
            codes[title] = str(c.code)
        return codes

    return orm(make)


def sidebar_titles(page: Page):
    return page.locator("#sidebar-list a")


def open_menu(page: Page):
    page.locator("#conversation-menu > summary").click()
    expect(page.locator("#conversation-menu .menu-items")).to_be_visible()


def test_search_as_you_type_finds_titles_and_message_text(live_daphne, page, fake):
    sign_up(page, live_daphne, "seeker")
    conversations_of("seeker", ["Bread baking", "Tax return", "Garden plan"])

    def add_text():
        c = Conversation.objects.get(title="Tax return")
        Message.objects.create(conversation=c, role="user", content="Can I deduct my sourdough oven?")

    orm(add_text)
    page.reload()
    wait_for_socket(page)
    searches = []
    page.on("request", lambda r: searches.append(r.url) if "/c/sidebar/?" in r.url and "q=" in r.url else None)

    page.locator("#sidebar-q").press_sequentially("sourdough", delay=30)
    expect(page.locator("#sidebar-list")).to_contain_text("1 conversation matches “sourdough”")
    expect(sidebar_titles(page)).to_have_text(["Tax return"])
    expect(page.locator("#sidebar-list mark")).to_have_text("sourdough")
    assert len(searches) <= 2, searches  # debounced: not one request per key
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "search-1280.png"))

    page.locator("#sidebar-q").fill("BREAD")
    expect(sidebar_titles(page)).to_have_text(["Bread baking"])  # titles too, any case
    page.locator("#sidebar-q").fill("")
    expect(sidebar_titles(page)).to_have_text(["Garden plan", "Tax return", "Bread baking"])
    page.locator("#sidebar-q").fill("garden")
    sidebar_titles(page).first.click()
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    expect(page.locator("#conv-title")).to_have_value("Garden plan")
    assert_no_browser_errors(page)


def test_pin_and_archive_from_the_menu(live_daphne, page, fake):
    sign_up(page, live_daphne, "curator")
    codes = conversations_of("curator", ["Old but important", "Middle", "Newest"])
    page.goto(f"{live_daphne.url}/c/{codes['Old but important']}/")
    wait_for_socket(page)
    expect(sidebar_titles(page)).to_have_text(["Newest", "Middle", "Old but important"])

    open_menu(page)
    page.get_by_role("button", name="Pin", exact=True).click()
    expect(sidebar_titles(page)).to_have_text(["Old but important", "Newest", "Middle"])
    expect(page.locator("#sidebar-list .sidebar-heading").first).to_have_text("Pinned")
    expect(page.locator("#conversation-menu > summary")).to_be_focused()  # the keyboard stays in place
    page.reload()
    expect(sidebar_titles(page)).to_have_text(["Old but important", "Newest", "Middle"])  # saved

    page.goto(f"{live_daphne.url}/c/{codes['Middle']}/")
    wait_for_socket(page)
    open_menu(page)
    page.get_by_role("button", name="Archive", exact=True).click()
    expect(sidebar_titles(page)).to_have_text(["Old but important", "Newest"])
    expect(page.locator("#conversation-actions .tag")).to_have_text("Archived")

    page.get_by_role("button", name="Archived", exact=True).click()
    expect(page.get_by_role("button", name="Archived", exact=True)).to_have_attribute("aria-pressed", "true")
    expect(sidebar_titles(page)).to_have_text(["Middle"])
    open_menu(page)
    page.get_by_role("button", name="Unarchive").click()
    expect(sidebar_titles(page)).to_have_text(["Old but important", "Newest", "Middle"])
    expect(page.locator("#conversation-actions .tag")).to_have_count(0)
    assert_no_browser_errors(page)


def test_export_downloads_then_import_makes_a_copy_and_a_bad_file_is_explained(live_daphne, page, fake, tmp_path):
    sign_up(page, live_daphne, "archivist")
    send(page, "Plan a picnic")
    expect(page.locator("article.msg-assistant")).to_have_attribute("data-status", "complete")
    original = page.url

    open_menu(page)
    with page.expect_download() as download:
        page.get_by_role("link", name="Export as Markdown").click()
    assert download.value.suggested_filename == "plan-a-picnic.md"
    markdown = download.value.path().read_text(encoding="utf-8")
    assert markdown.startswith("# Plan a picnic") and "You said: Plan a picnic" in markdown

    open_menu(page)
    with page.expect_download() as download:
        page.get_by_role("link", name="Export as JSON").click()
    exported = tmp_path / download.value.suggested_filename
    download.value.save_as(exported)
    data = json.loads(exported.read_text())
    assert [m["content"] for m in data["messages"]] == ["Plan a picnic", "You said: Plan a picnic"]

    bad = tmp_path / "notes.json"
    bad.write_text('{"title": "no messages here"}')
    page.locator(".import-panel > summary").click()
    page.locator("#import-file").set_input_files(bad)
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.locator("#import-error")).to_have_text(
        "notes.json: This is not a conversation export: it has no list of messages."
    )
    expect(page.locator("#import-file")).to_have_attribute("aria-invalid", "true")
    page.screenshot(path=str(ARTIFACTS / "import-error-1280.png"))
    assert page.url == original

    page.locator("#import-file").set_input_files(exported)
    page.get_by_role("button", name="Import", exact=True).click()
    page.wait_for_url(lambda url: url != original and CONVERSATION_URL.search(url) is not None)
    wait_for_socket(page)
    expect(page.locator("article.msg .msg-text")).to_have_text(["Plan a picnic", "You said: Plan a picnic"])
    expect(page.locator("#conv-title")).to_have_value("Plan a picnic")
    expect(sidebar_titles(page)).to_have_text(["Plan a picnic", "Plan a picnic"])
    assert_no_browser_errors(page)


def test_the_model_names_the_conversation_live(live_daphne, page, fake):
    sign_up(page, live_daphne, "namer")
    fake.push_title("Picnic in the park")
    send(page, "Help me plan a picnic for six people on Saturday")
    expect(page.locator("article.msg-assistant")).to_have_attribute("data-status", "complete")
    expect(page.locator("#conv-title")).to_have_value("Picnic in the park")
    expect(page.locator("#sidebar-list a[aria-current=page]")).to_have_text("Picnic in the park")
    expect(page).to_have_title("Picnic in the park · Chat")
    assert len(fake.title_requests()) == 1
    assert_no_browser_errors(page)


def test_a_long_conversation_loads_older_pages_as_the_reader_scrolls_up(live_daphne, page, fake):
    sign_up(page, live_daphne, "historian")

    def make():
        user = get_user_model().objects.get(username="historian")
        c = Conversation.objects.create(owner=user, provider=Provider.objects.default(), title="Long one")
        messages = Message.objects.bulk_create(
            [
                Message(conversation=c, role="user" if i % 2 == 0 else "assistant", content=f"Message number {i}")
                for i in range(150)
            ]
        )
        for previous, message in zip(messages, messages[1:], strict=False):
            message.parent_id = previous.pk
        Message.objects.bulk_update(messages, ["parent"])
        return str(c.code)

    code = orm(make)
    page.goto(f"{live_daphne.url}/c/{code}/")
    wait_for_socket(page)
    articles = page.locator("#messages article.msg")
    expect(articles).to_have_count(library.PAGE_SIZE)
    expect(articles.last.locator(".msg-text")).to_have_text("Message number 149")

    for loaded in range(2 * library.PAGE_SIZE, 150 + library.PAGE_SIZE, library.PAGE_SIZE):
        top_id = articles.first.get_attribute("id")
        view = page.locator("#messages").bounding_box()
        page.locator("#messages").evaluate("el => el.scrollTo(0, 0)")
        expect(articles).to_have_count(min(loaded, 150))
        # What the reader was looking at stays at the top of the view: the older page went in above it.
        after = page.locator(f"#{top_id}").bounding_box()["y"]
        assert view["y"] <= after <= view["y"] + 120, (view, after)
        assert page.locator("#messages").evaluate("el => el.scrollTop") > 0

    expect(articles.first.locator(".msg-text")).to_have_text("Message number 0")
    expect(page.locator("#older-messages")).to_have_count(0)
    texts = page.locator("#messages article.msg .msg-text").all_text_contents()
    assert [t.strip() for t in texts] == [f"Message number {i}" for i in range(150)]
    assert_no_browser_errors(page)


def test_the_sidebar_loads_more_conversations_as_it_scrolls(live_daphne, page, fake):
    sign_up(page, live_daphne, "hoarder")

    def make():
        user = get_user_model().objects.get(username="hoarder")
        Conversation.objects.bulk_create(
            [Conversation(owner=user, title=f"Chat {i:03}", title_source="user") for i in range(120)]
        )

    orm(make)
    page.reload()
    wait_for_socket(page)
    links = sidebar_titles(page)
    expect(links).to_have_count(50)
    for count in (100, 120):
        page.locator("#sidebar-list").evaluate("el => el.scrollTo(0, el.scrollHeight)")
        expect(links).to_have_count(count)
    titles = links.all_text_contents()
    assert len(set(titles)) == 120  # no row twice, none missing
    expect(page.locator("#sidebar-list li.more")).to_have_count(0)
    assert_no_browser_errors(page)
