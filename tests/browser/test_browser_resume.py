"""Issue #3 in a real Chromium: resume after a reload, stop (button and Esc), branches, reconnect.

Against a real Daphne process (restarted on the same port for the reconnect tests), a real
database and the fake provider. Everything here is synchronous: Playwright's sync API cannot
run inside an asyncio loop.
"""

import re
import time

import pytest
from playwright.sync_api import Page, expect

from conversations.models import INTERRUPTED_ERROR, Conversation, Message

from ..fake_provider import Hang, Stream, text_stream
from .conftest import assert_no_browser_errors, expect_composer_ready, orm, send, sign_up, text_of, wait_for_socket

pytestmark = pytest.mark.browser

# Records every text a streaming reply showed, in order, per element id (`msg-<pk>-text`): after
# each swap of a socket frame, and as the page was first parsed. Only while its article says
# "streaming": the finished reply's frame changes that, so the last record is the last text the
# stream itself produced.
STREAM_PROBE = """
window.__streamed = {};
new MutationObserver(function () {
  document.querySelectorAll('article[data-status="streaming"] .msg-text').forEach(function (el) {
    var seen = window.__streamed[el.id] || (window.__streamed[el.id] = []);
    if (seen[seen.length - 1] !== el.textContent) seen.push(el.textContent);
  });
}).observe(document, {childList: true, subtree: true, characterData: true});
"""

# The branch the page shows, as the provider should receive it.
SHOWN_BRANCH = """() => Array.from(document.querySelectorAll("#messages article.msg")).map((article) => ({
  role: article.classList.contains("msg-user") ? "user" : "assistant",
  content: article.querySelector(".msg-text").textContent.trim(),
}))"""

VERSIONS = {n: re.compile(rf"^\s*‹\s*{n}\s*›\s*$") for n in ("1/2", "2/2")}


@pytest.fixture
def chat(page):
    """The `page` of conftest.py (socket probe, errors recorded) that also records streamed text."""
    page.add_init_script(STREAM_PROBE)
    return page


def saved_reply(pk: int) -> Message:
    return orm(lambda: Message.objects.get(pk=pk))


def numbered_words(count: int) -> list[str]:
    """`w0`, ` w1`, ...: one piece per SSE event; joined, a text markdown renders unchanged."""
    return ["w0"] + [f" w{i}" for i in range(1, count)]


def wait_until(condition, failure: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(failure)
        time.sleep(0.05)


def streamed(page: Page, text_id: str) -> list[str]:
    return page.evaluate("(id) => window.__streamed[id] || []", text_id)


def assert_all_prefixes(samples: list[str], full: str):
    """Every text shown while streaming was the start of the real text: no gap, nothing twice."""
    for sample in samples:
        assert full.startswith(sample), f"the page showed text that is not a prefix of the reply: {sample!r}"


def streaming_reply(page: Page):
    """The newest assistant reply, once it is on the page and streaming; its article id and text id."""
    reply = page.locator("article.msg-assistant").last
    expect(reply).to_have_attribute("data-status", "streaming")
    reply_id = reply.get_attribute("id")
    return page.locator(f"#{reply_id}"), reply_id, f"{reply_id}-text"


def wait_for_text(page: Page, text_id: str, length: int):
    script = "([id, n]) => (document.getElementById(id)?.textContent || '').length >= n"
    page.wait_for_function(script, arg=[text_id, length])


# -- 1. reload while a reply streams ------------------------------------------------------------


def test_a_reload_mid_stream_shows_all_the_text_once_then_continues_live(live_daphne, chat, fake):
    pieces = numbered_words(100)
    full = "".join(pieces)
    fake.push(Stream(text_stream(pieces), delay=0.03))  # about 3 s
    sign_up(chat, live_daphne, "reloader")
    send(chat, "Count to a hundred")
    _, reply_id, text_id = streaming_reply(chat)
    pk = int(reply_id.removeprefix("msg-"))
    # Reload once a checkpoint is saved: the page is then rendered with text that is already
    # behind the stream, and the socket must bring it up to date without repeating any of it.
    wait_until(lambda: saved_reply(pk).content, "no checkpoint was written")
    assert_all_prefixes(streamed(chat, text_id), full)

    chat.reload()
    wait_for_socket(chat)
    reply = chat.locator(f"#{reply_id}")
    expect(reply).to_have_attribute("data-status", "complete", timeout=15_000)

    after = streamed(chat, text_id)
    assert_all_prefixes(after, full)
    partial = [text for text in after if 0 < len(text) < len(full)]
    assert len(partial) >= 3, f"after the reload the reply did not keep streaming live: {after}"
    # The last text the stream showed, just before the final render, is the whole reply exactly.
    assert after[-1] == full, f"streamed text after the reload ended as {after[-1]!r}"
    expect(chat.locator(f"#{text_id}")).to_have_text(full)
    assert text_of(chat, f"#{text_id}").strip() == full
    assert saved_reply(pk).content == full
    assert len(fake.completions()) == 1  # the reload did not start another generation
    expect_composer_ready(chat)
    assert_no_browser_errors(chat)


# -- 3. stop ------------------------------------------------------------------------------------


def test_b_stop_keeps_the_partial_text_and_marks_the_reply_stopped(live_daphne, chat, fake):
    pieces = numbered_words(300)
    full = "".join(pieces)
    fake.push(Stream(text_stream(pieces), delay=0.03))  # 9 s, unless stopped
    sign_up(chat, live_daphne, "stopper")
    send(chat, "Count to three hundred")
    reply, reply_id, text_id = streaming_reply(chat)
    wait_for_text(chat, text_id, 20)

    chat.locator("#stop").click()

    expect(reply).to_have_attribute("data-status", "stopped")
    expect(reply.locator(".msg-note")).to_have_text("Stopped.")
    expect(reply.get_by_role("button", name="Retry")).to_be_visible()
    expect_composer_ready(chat)
    request = fake.completions()[0]
    assert request.disconnected.wait(3), "the provider's connection was not closed"

    saved = saved_reply(int(reply_id.removeprefix("msg-")))
    assert saved.status == Message.Status.STOPPED
    assert 20 <= len(saved.content) < len(full) and full.startswith(saved.content), saved.content
    shown = streamed(chat, text_id)
    assert_all_prefixes(shown, full)
    assert shown[-1] == saved.content  # what the page showed is what was kept, no more, no less
    assert text_of(chat, f"#{text_id}").strip() == saved.content

    chat.reload()  # and it stays so
    wait_for_socket(chat)
    expect(chat.locator(f"#{reply_id}")).to_have_attribute("data-status", "stopped")
    assert text_of(chat, f"#{text_id}").strip() == saved.content
    expect_composer_ready(chat)
    assert_no_browser_errors(chat)


@pytest.mark.parametrize(
    "silence",
    [Hang(30), Stream(text_stream(["too late"]), first_delay=30)],
    ids=["before-the-response-headers", "before-the-first-chunk"],
)
def test_c_escape_stops_a_reply_before_its_first_token(live_daphne, chat, fake, silence):
    fake.push(silence)
    sign_up(chat, live_daphne, "impatient")
    send(chat, "Take your time")
    reply, reply_id, text_id = streaming_reply(chat)
    expect(chat.locator("#stop")).to_be_visible()
    request = fake.wait_for_requests(1)[0]  # the provider has the request, and says nothing
    assert not request.disconnected.is_set()

    chat.locator("#composer-input").press("Escape")

    expect(reply).to_have_attribute("data-status", "stopped")
    expect(reply.locator(".msg-note")).to_have_text("Stopped.")
    expect(chat.locator(f"#{text_id}")).to_have_text("")
    expect_composer_ready(chat)
    assert request.disconnected.wait(3), "the provider's connection was not closed"
    saved = saved_reply(int(reply_id.removeprefix("msg-")))
    assert (saved.status, saved.content) == (Message.Status.STOPPED, "")
    assert len(fake.completions()) == 1
    assert_no_browser_errors(chat)


# -- 4. branches --------------------------------------------------------------------------------


def test_d_regenerate_edit_and_continue_on_the_shown_branch(live_daphne, chat, fake):
    sign_up(chat, live_daphne, "brancher")
    articles = chat.locator("#messages article.msg")
    users = chat.locator("article.msg-user")
    replies = chat.locator("article.msg-assistant")

    def shown() -> list[dict]:
        return chat.evaluate(SHOWN_BRANCH)

    def sent(count: int) -> list[dict]:
        """The messages of the provider's `count`-th completion request."""
        return fake.wait_for_requests(count)[count - 1].body["messages"]

    def user(text):
        return {"role": "user", "content": text}

    def assistant(text):
        return {"role": "assistant", "content": text}

    def exchange(text: str, *pieces: str):
        """Send `text` (the provider answers `pieces`); check the provider got the shown branch and it."""
        before = shown()
        fake.push(Stream(text_stream(list(pieces))))
        send(chat, text)
        expect(articles).to_have_count(len(before) + 2)
        expect(replies.last).to_have_attribute("data-status", "complete")
        expect(replies.last.locator(".msg-text")).to_have_text("".join(pieces))
        assert sent(len(fake.completions())) == [*before, user(text)]
        expect_composer_ready(chat)

    exchange("Question one", "Answer ", "one")
    exchange("Question two", "Answer ", "two")
    assert shown() == [user("Question one"), assistant("Answer one"), user("Question two"), assistant("Answer two")]
    expect(chat.locator(".versions")).to_have_count(0)

    # Regenerate the last reply: a second version, from the same user message.
    fake.push(Stream(text_stream(["Answer ", "two, ", "again"])))
    replies.last.get_by_role("button", name="Regenerate").click()
    expect(replies.last.locator(".msg-text")).to_have_text("Answer two, again")
    expect(replies.last).to_have_attribute("data-status", "complete")
    versions = replies.last.get_by_role("group", name="Versions")
    expect(versions).to_have_text(VERSIONS["2/2"])
    expect(versions.get_by_role("button", name="Previous version")).to_be_enabled()
    expect(versions.get_by_role("button", name="Next version")).to_be_disabled()
    assert sent(3) == [user("Question one"), assistant("Answer one"), user("Question two")]
    expect(articles).to_have_count(4)

    # Back to version 1.
    versions.get_by_role("button", name="Previous version").click()
    expect(replies.last.locator(".msg-text")).to_have_text("Answer two")
    expect(versions).to_have_text(VERSIONS["1/2"])
    expect(versions.get_by_role("button", name="Previous version")).to_be_disabled()
    expect(versions.get_by_role("button", name="Next version")).to_be_enabled()
    expect(articles).to_have_count(4)

    # The next message continues version 1, the one shown.
    exchange("Question three", "Answer ", "three")
    assert "Answer two, again" not in str(sent(4))
    expect(replies.nth(1).get_by_role("group", name="Versions")).to_have_text(VERSIONS["1/2"])

    # Edit the second question and send it again: a branch from the first answer.
    question_two = users.nth(1)
    question_two.locator("summary", has_text="Edit").click()
    question_two.get_by_role("textbox", name="Edit message").fill("Question two, edited")
    fake.push(Stream(text_stream(["Edited ", "answer"])))
    question_two.get_by_role("button", name="Save and send").click()
    expect(articles).to_have_count(4)
    expect(replies.last.locator(".msg-text")).to_have_text("Edited answer")
    expect(replies.last).to_have_attribute("data-status", "complete")
    expect(users.nth(1).get_by_role("group", name="Versions")).to_have_text(VERSIONS["2/2"])
    assert shown() == [
        user("Question one"),
        assistant("Answer one"),
        user("Question two, edited"),
        assistant("Edited answer"),
    ]
    assert sent(5) == [user("Question one"), assistant("Answer one"), user("Question two, edited")]
    expect_composer_ready(chat)

    # The next message continues the edited branch.
    exchange("Question four", "Answer ", "four")
    assert sent(6)[2:4] == [user("Question two, edited"), assistant("Edited answer")]

    # Switch the second question back to its first version: the next message goes on from there.
    users.nth(1).get_by_role("button", name="Previous version").click()
    expect(users.nth(1).locator(".msg-text")).to_have_text("Question two")
    expect(users.nth(1).get_by_role("group", name="Versions")).to_have_text(VERSIONS["1/2"])
    expect(replies.nth(1).get_by_role("group", name="Versions")).to_be_visible()  # one of its two replies
    branch = shown()
    assert branch[:3] == [user("Question one"), assistant("Answer one"), user("Question two")]
    assert "edited" not in str(branch).lower()
    exchange("Question five", "Answer ", "five")
    assert "edited" not in str(sent(7)).lower()

    chat.reload()  # the branch shown is the one saved
    wait_for_socket(chat)
    assert shown() == [*branch, user("Question five"), assistant("Answer five")]
    assert_no_browser_errors(chat)


# -- 8. reconnect after a server restart -------------------------------------------------------------


def answer_from_another_tab(code: str):
    """What another tab, served by another process, would save while this page is disconnected."""
    conversation = Conversation.objects.get(code=code)
    _, reply = conversation.add_exchange("Sent from another tab", conversation.model)
    Message.objects.filter(pk=reply.pk).update(content="Answered while you were away", status=Message.Status.COMPLETE)


def test_e_after_a_server_restart_the_page_reconnects_resyncs_and_streams(live_daphne, chat, fake):
    sign_up(chat, live_daphne, "survivor")
    send(chat, "Before the restart")
    expect(chat.locator("article.msg-assistant")).to_have_attribute("data-status", "complete")
    code = chat.locator("main.chat").get_attribute("data-code")
    status = chat.locator("#connection")
    expect(status).to_be_hidden()

    live_daphne.stop()
    expect(status).to_be_visible()
    expect(status).to_have_text("Connection lost. Reconnecting…")
    orm(answer_from_another_tab, code)
    live_daphne.start()  # same port, same database

    chat.wait_for_function("window.__wsOpen >= 2", timeout=20_000)
    expect(status).to_be_hidden()
    # The page asked for the conversation again and shows what happened meanwhile.
    expect(chat.locator("article.msg")).to_have_count(4)
    expect(chat.locator("article.msg-user .msg-text").last).to_have_text("Sent from another tab")
    expect(chat.locator("article.msg-assistant .msg-text").last).to_have_text("Answered while you were away")

    # And a new message streams over the new socket.
    pieces = numbered_words(40)
    full = "".join(pieces)
    fake.push(Stream(text_stream(pieces), delay=0.03))
    send(chat, "After the restart")
    reply, _, text_id = streaming_reply(chat)
    expect(reply).to_have_attribute("data-status", "complete")
    expect(chat.locator(f"#{text_id}")).to_have_text(full)
    shown = streamed(chat, text_id)
    assert_all_prefixes(shown, full)
    assert len([text for text in shown if 0 < len(text) < len(full)]) >= 3, shown
    assert shown[-1] == full
    assert fake.completions()[-1].body["messages"][-3:] == [
        {"role": "user", "content": "Sent from another tab"},
        {"role": "assistant", "content": "Answered while you were away"},
        {"role": "user", "content": "After the restart"},
    ]
    expect_composer_ready(chat)
    assert chat.js_errors == []  # (the refused reconnection attempts are logged as console errors)


def test_f_a_reply_cut_by_a_server_restart_shows_as_interrupted_after_reconnecting(live_daphne, chat, fake):
    pieces = numbered_words(300)
    full = "".join(pieces)
    fake.push(Stream(text_stream(pieces), delay=0.02))  # 6 s; the server stops long before
    sign_up(chat, live_daphne, "cut-off")
    send(chat, "Count to three hundred")
    reply, reply_id, text_id = streaming_reply(chat)
    pk = int(reply_id.removeprefix("msg-"))
    # Wait for a checkpoint: the text the database has when the process dies.
    wait_until(lambda: saved_reply(pk).content, "no checkpoint was written")

    live_daphne.stop()
    expect(chat.locator("#connection")).to_have_text("Connection lost. Reconnecting…")
    assert fake.completions()[0].disconnected.wait(3)
    checkpoint = saved_reply(pk)
    assert checkpoint.status == Message.Status.STREAMING and checkpoint.content
    # The new process treats a reply as dead after 1 s without a heartbeat (instead of 8), so the
    # page's reconnection finds it stale at once.
    live_daphne.start(STALE_GENERATION_SECONDS="1")

    expect(reply).to_have_attribute("data-status", "interrupted", timeout=15_000)
    expect(chat.locator("#connection")).to_be_hidden()
    expect(reply.locator(".msg-error")).to_have_text(INTERRUPTED_ERROR)
    assert full.startswith(checkpoint.content)
    assert text_of(chat, f"#{text_id}").strip() == checkpoint.content
    assert saved_reply(pk).status == Message.Status.INTERRUPTED
    expect_composer_ready(chat)

    fake.push(Stream(text_stream(["Second ", "try"])))
    reply.get_by_role("button", name="Retry").click()
    retried = chat.locator("article.msg-assistant")
    expect(retried).to_have_count(1)
    expect(retried).to_have_attribute("data-status", "complete")
    expect(retried.locator(".msg-text")).to_have_text("Second try")
    assert chat.js_errors == []


@pytest.mark.parametrize(
    ("back", "close_code"),
    [("while-it-streams", 1001), ("after-it-completed", 1012)],
    ids=["back-while-it-streams-after-a-clean-close", "back-after-it-completed-after-a-service-restart"],
)
def test_g_a_dropped_socket_reconnects_and_resyncs_the_reply_it_missed(live_daphne, chat, fake, back, close_code):
    """The socket drops (the server keeps generating); the page catches up on reconnect.

    The htmx extension retries by itself after 1006/1011/1012/1013; after any other close code
    (1001, "going away", a clean close) chat.js does.
    """
    offline = False
    sockets = []

    def route(ws):
        if offline:
            ws.close(code=1013, reason="Offline")  # "try again later": the page retries
        else:
            sockets.append(ws)
            ws.connect_to_server()

    chat.route_web_socket(re.compile(r"/ws/c/"), route)
    pieces = numbered_words(80)
    full = "".join(pieces)
    fake.push(Stream(text_stream(pieces), delay=0.03))  # about 2.5 s
    sign_up(chat, live_daphne, f"offline-{close_code}")
    # Retry every 0.1 s (the default backs off at random, up to a minute), so the test is quick.
    chat.evaluate("htmx.config.wsReconnectDelay = () => 100")
    send(chat, "Count to eighty")
    reply, reply_id, text_id = streaming_reply(chat)
    pk = int(reply_id.removeprefix("msg-"))
    wait_for_text(chat, text_id, 20)

    offline = True
    sockets[-1].close(code=close_code, reason="Dropped")  # the server side is closed with it
    expect(chat.locator("#connection")).to_have_text("Connection lost. Reconnecting…")
    missed = streamed(chat, text_id)[-1]
    if back == "after-it-completed":
        wait_until(lambda: saved_reply(pk).status == Message.Status.COMPLETE, "the reply did not complete", 10)
    else:
        chat.wait_for_timeout(300)  # offline for about ten pieces of the reply
    offline = False

    chat.wait_for_function("window.__wsOpen >= 2")
    expect(chat.locator("#connection")).to_be_hidden()
    expect(reply).to_have_attribute("data-status", "complete")
    expect(chat.locator(f"#{text_id}")).to_have_text(full)
    assert text_of(chat, f"#{text_id}").strip() == full
    shown = streamed(chat, text_id)
    assert_all_prefixes(shown, full)
    assert len(missed) < len(full)
    if back == "while-it-streams":
        # It went on streaming live after the reconnect, and ended with exactly the whole text.
        assert len([text for text in shown if len(missed) < len(text) < len(full)]) >= 3, shown
        assert shown[-1] == full
    assert saved_reply(pk).content == full
    assert len(fake.completions()) == 1
    expect_composer_ready(chat)
    assert chat.js_errors == []
