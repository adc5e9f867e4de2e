"""The text-completion playground in a real Chromium, against a real Daphne and the fake provider."""

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .conftest import assert_no_browser_errors, assert_socket_never_dropped, sign_up, wait_for_socket
from .live_server import ARTIFACTS

pytestmark = pytest.mark.browser

PLAYGROUND_URL = re.compile(r"/c/[0-9a-f-]{36}/$")

# The choice's state, its completion and the whole document (prompt, then completion) as shown.
SAMPLE = """() => {
  const choice = document.querySelector("article.choice");
  const completion = choice && choice.querySelector(".completion");
  const prompt = choice && choice.querySelector(".prompt");
  return {
    status: choice ? choice.dataset.status : null,
    completion: completion ? completion.textContent : null,
    promptFirst: !!(prompt && completion && prompt.nextElementSibling === completion),
    runDisabled: document.getElementById("run").disabled,
  };
}"""

# The text of an element as read, without the hover cards of its tokens.
WITHOUT_CARDS = """(element) => {
  const copy = element.cloneNode(true);
  copy.querySelectorAll(".lp-top").forEach((card) => card.remove());
  return copy.textContent;
}"""


def test_a_text_completion_streams_after_the_prompt_and_shows_token_alternatives(live_daphne, page, fake):
    sign_up(page, live_daphne, "typist")
    chat_url = page.url
    page.get_by_role("button", name="+ New text completion").click()
    page.wait_for_url(lambda url: url != chat_url and PLAYGROUND_URL.search(url) is not None)
    wait_for_socket(page)
    expect(page.locator(".mode-tag")).to_have_text("Text completion")

    prompt = "The quick brown fox jumps over the lazy dog and then"
    page.locator("#prompt").fill(prompt)
    page.locator("#param-max_tokens").fill("8")
    page.locator("#param-logprobs").select_option("3")  # a change: the settings are saved
    expect(page.locator("#settings-status")).to_have_text("Saved")

    fake.pace = 0.12  # about a second for the 8 tokens
    page.locator("#prompt").press("Control+Enter")

    samples = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        sample = page.evaluate(SAMPLE)
        samples.append(sample)
        if sample["status"] not in (None, "streaming"):
            break
        time.sleep(0.03)
    expected = "You said: The quick brown fox jumps over "  # 8 tokens: cut by max_tokens
    streamed = [s for s in samples if s["status"] == "streaming" and s["completion"]]
    assert len({s["completion"] for s in streamed}) >= 3, f"the completion did not stream: {samples}"
    assert all(expected.startswith(s["completion"]) for s in streamed), streamed
    assert all(s["promptFirst"] for s in streamed), "the completion is not shown after the prompt"
    assert all(s["runDisabled"] for s in streamed), "Run was enabled while a completion was streaming"
    assert samples[-1]["status"] == "complete", samples[-1]

    choice = page.locator("article.choice")
    expect(choice.locator(".prompt")).to_have_text(prompt)
    expect(choice.locator(".msg-meta")).to_contain_text("cut off by max_tokens")
    tokens = choice.locator(".completion .lp")
    expect(tokens).to_have_count(8)
    body = fake.completions()[0].body
    assert (body["prompt"], body["max_tokens"], body["logprobs"], body["stream"]) == (prompt, 8, 3, True)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(Path(ARTIFACTS) / "playground-1280.png"))

    # Hovering a token shows its probability and the alternatives the model weighed.
    said = tokens.nth(1)
    card = said.locator(".lp-top")
    expect(card).to_be_hidden()
    said.hover()
    expect(card).to_be_visible()
    expect(card).to_contain_text("77.9%")  # p = e^-0.25
    expect(card).to_contain_text("alt1")
    expect(card).to_contain_text("alt2")
    page.screenshot(path=str(Path(ARTIFACTS) / "playground-token-1280.png"))
    page.mouse.move(0, 0)
    expect(card).to_be_hidden()

    assert_socket_never_dropped(page)

    # The run was saved: it is listed, and shown again with its settings after a reload.
    expect(page.locator("#sidebar-list a[aria-current=page]")).to_have_text("The quick brown fox jumps over the lazy…")
    page.reload()
    wait_for_socket(page)
    expect(page.locator("section.run")).to_have_count(1)
    shown = page.locator("article.choice .completion").evaluate(WITHOUT_CARDS)
    assert shown == expected
    expect(page.locator("#prompt")).to_have_value(prompt)
    expect(page.locator("#param-max_tokens")).to_have_value("8")
    expect(page.locator("#param-logprobs")).to_have_value("3")
    assert_no_browser_errors(page)


def test_a_bad_value_is_shown_next_to_its_field_and_nothing_runs(live_daphne, page, fake):
    sign_up(page, live_daphne, "fumbler")
    page.get_by_role("button", name="+ New text completion").click()
    page.wait_for_url(PLAYGROUND_URL)
    wait_for_socket(page)
    page.locator("#prompt").fill("Keep this prompt")
    page.locator("#param-temperature").fill("5")
    page.get_by_role("button", name="Run").click()

    expect(page.locator("#param-temperature-error")).to_have_text("Enter a number from 0 to 2.")
    expect(page.locator("#settings-status")).to_contain_text("Not saved and not run")
    page.wait_for_timeout(300)
    expect(page.locator("section.run")).to_have_count(0)
    assert fake.completions() == []
    expect(page.locator("#prompt")).to_have_value("Keep this prompt")  # nothing typed is lost
    expect(page.locator("#param-temperature")).to_have_value("5")

    page.locator("#param-temperature").fill("0.5")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("article.choice")).to_have_attribute("data-status", "complete")
    expect(page.locator("#param-temperature-error")).to_have_text("")
    assert fake.completions()[0].body["temperature"] == 0.5
    assert_no_browser_errors(page)
