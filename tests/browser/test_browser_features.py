"""n choices, tool calls, Thinking and token probabilities in a real Chromium against a real Daphne.

Synchronous on purpose: Playwright's sync API cannot run inside an asyncio loop.
"""

import pytest
from playwright.sync_api import Page, expect

from conversations.models import Conversation

from ..fake_provider import Stream, chat_logprobs, choices_stream, chunk, sse, tool_call_delta
from .conftest import (
    assert_no_browser_errors,
    assert_socket_never_dropped,
    expect_composer_ready,
    orm,
    send,
    sign_up,
    wait_for_socket,
)
from .live_server import ARTIFACTS

pytestmark = pytest.mark.browser


def set_params(username: str, **params):
    orm(lambda: Conversation.objects.filter(owner__username=username).update(params=params))


def test_n_choices_stream_side_by_side_and_one_is_picked(live_daphne, page: Page, fake):
    sign_up(page, live_daphne, "chooser")
    set_params("chooser", n=2)
    left = [f"left{i} " for i in range(30)]
    right = [f"right{i} " for i in range(30)]
    fake.push(Stream(choices_stream([left, right]), delay=0.03))
    send(page, "Two ideas please")

    grid = page.locator(".choices-grid")
    cards = grid.locator("article.msg-assistant")
    expect(cards).to_have_count(2)
    # Both stream at the same time, next to each other.
    expect(cards.nth(0).locator(".msg-text")).to_contain_text("left3")
    expect(cards.nth(1).locator(".msg-text")).to_contain_text("right3")
    assert cards.nth(0).get_attribute("data-status") == "streaming"
    assert cards.nth(1).get_attribute("data-status") == "streaming"
    first, second = cards.nth(0).bounding_box(), cards.nth(1).bounding_box()
    assert abs(first["y"] - second["y"]) < 2 and second["x"] >= first["x"] + first["width"]
    expect(page.locator(".choices-note")).to_contain_text("2 replies to choose from")

    expect(cards.nth(0)).to_have_attribute("data-status", "complete")
    expect(cards.nth(1)).to_have_attribute("data-status", "complete")
    expect_composer_ready(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "choices-1280.png"))
    cards.nth(1).get_by_role("button", name="Use this reply").click()

    expect(page.locator(".choices")).to_have_count(0)
    reply = page.locator("article.msg-assistant")
    expect(reply).to_have_count(1)
    expect(reply.locator(".msg-text")).to_have_text("".join(right).strip())
    expect(reply.locator(".versions")).to_contain_text("2/2")
    reply.get_by_role("button", name="Previous version").click()  # the other choice is a version
    expect(page.locator("article.msg-assistant .msg-text")).to_have_text("".join(left).strip())
    assert_socket_never_dropped(page)
    assert_no_browser_errors(page)


def test_a_tool_call_is_shown_and_its_result_entered(live_daphne, page: Page, fake):
    sign_up(page, live_daphne, "toolsmith")
    objs = [
        chunk(tool_calls=[tool_call_delta(0, id="call_w", name="get_weather", arguments='{"city"')]),
        chunk(tool_calls=[tool_call_delta(0, arguments=': "Oslo", "days": 2}')]),
        chunk(finish="tool_calls"),
    ]
    fake.push(Stream(sse(objs), delay=0.02))
    send(page, "Weather in Oslo?")

    call = page.locator(".tool-call")
    expect(call).to_have_count(1)
    expect(call.locator(".tool-name")).to_have_text("get_weather")
    expect(call.locator(".tool-arguments")).to_have_text('{\n  "city": "Oslo",\n  "days": 2\n}')
    expect(page.locator(".finish-tools")).to_be_visible()
    box = page.get_by_label("Result of get_weather (call_w)")
    box.fill('{"forecast": "snow"}')
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "tool-call-1280.png"))
    page.get_by_role("button", name="Send tool results").click()

    tool = page.locator("article.msg-tool")
    expect(tool).to_have_count(1)
    expect(tool.locator(".tool-result-of")).to_contain_text("call_w")
    expect(tool.locator(".msg-text")).to_have_text('{"forecast": "snow"}')
    replies = page.locator("article.msg-assistant")
    expect(replies).to_have_count(2)
    expect(replies.nth(1)).to_have_attribute("data-status", "complete")
    expect(replies.nth(1).locator(".msg-text")).to_have_text('You said: {"forecast": "snow"}')
    expect(page.get_by_role("button", name="Send tool results")).to_have_count(0)
    sent = fake.completions()[1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_w"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_w", "content": '{"forecast": "snow"}'}
    assert_no_browser_errors(page)


def test_the_thinking_block_streams_then_folds_away(live_daphne, page: Page, fake):
    sign_up(page, live_daphne, "thinker")
    objs = [chunk(reasoning=f"Consider option {i}. ") for i in range(20)]
    objs += [chunk("The answer is 42."), chunk(finish="stop")]
    fake.push(Stream(sse(objs), delay=0.05))
    send(page, "Deep question")

    live = page.locator(".thinking.live")
    expect(live).to_contain_text("Thinking…")
    expect(live).to_contain_text("Consider option 3.")
    reply = page.locator("article.msg-assistant")
    expect(reply).to_have_attribute("data-status", "complete")
    thinking = reply.locator("details.thinking")
    expect(thinking).to_have_count(1)
    expect(thinking.locator("summary")).to_contain_text("Thought for")
    expect(thinking.locator(".thinking-text")).to_be_hidden()  # folded once the answer is there
    expect(reply.locator(".msg-text")).to_have_text("The answer is 42.")
    thinking.locator("summary").click()
    expect(thinking.locator(".thinking-text")).to_be_visible()
    expect(thinking.locator(".thinking-text")).to_contain_text("Consider option 19.")
    thinking.locator("summary").click()
    expect(thinking.locator(".thinking-text")).to_be_hidden()
    page.reload()
    wait_for_socket(page)
    expect(page.locator("article.msg-assistant details.thinking .thinking-text")).to_be_hidden()
    assert_no_browser_errors(page)


def test_hovering_or_arrowing_to_a_token_shows_its_alternatives(live_daphne, page: Page, fake):
    sign_up(page, live_daphne, "prober")
    set_params("prober", logprobs=True, top_logprobs=2)
    tokens = [("Paris", -0.05), (" is", -1.6), (" lovely", -0.7)]
    objs = [chunk(token, logprobs=chat_logprobs([(token, lp)])) for token, lp in tokens] + [chunk(finish="stop")]
    fake.push(Stream(sse(objs)))
    send(page, "Capital of France?")

    spans = page.locator("article.msg-assistant .logprobs .lp")
    expect(spans).to_have_count(3)
    tip = spans.nth(1).locator(".lp-top")
    expect(tip).to_be_hidden()
    spans.nth(1).hover()
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("20.2%")  # exp(-1.6)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "logprobs-1280.png"))
    expect(tip.locator(".lp-alt")).to_have_count(2)
    expect(tip.locator(".lp-alt.chosen")).to_contain_text("␣is")
    # A less likely token is marked more strongly.
    sure, unsure = (spans.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in (0, 1))
    assert sure != unsure

    page.mouse.move(0, 0)
    expect(tip).to_be_hidden()
    spans.nth(0).focus()
    expect(spans.nth(0).locator(".lp-top")).to_be_visible()
    page.keyboard.press("ArrowRight")
    expect(spans.nth(1)).to_be_focused()
    expect(tip).to_be_visible()
    page.keyboard.press("End")
    expect(spans.nth(2)).to_be_focused()
    assert_no_browser_errors(page)
