"""Reasoning: `reasoning_content`, `reasoning` and <think> tags kept apart from the answer, never sent back."""

import asyncio
import itertools

import pytest

from conversations.generation.parts import ReplyParts, ThinkSplitter, split_orphan_think
from conversations.providers import client as llm

from .conftest import open_socket, settle, wait_until_done
from .fake_provider import Stream, chunk, sse, text_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def ask(alice, conversation, fake, objs, *, delay=0.0, text="Think first"):
    fake.push(Stream(sse(objs), delay=delay))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message=text)
    (reply,) = await wait_until_done(conversation, 1)
    await settle(socket)
    return socket, reply


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
async def test_reasoning_deltas_are_stored_apart_and_not_sent_back(alice, conversation, fake, key):
    objs = [chunk(reasoning=part, reasoning_key=key) for part in ["The user ", "wants ", "a number."]]
    objs += [chunk("Seven"), chunk(finish="stop")]
    socket, reply = await ask(alice, conversation, fake, objs, delay=0.05)
    assert reply.reasoning == "The user wants a number."
    assert reply.content == "Seven"
    assert reply.reasoning_ms is not None and reply.reasoning_ms >= 80  # three pieces 50 ms apart
    html = "".join(socket.frames)
    assert '<details class="thinking">' in html and "Thought for" in html
    socket.frames.clear()
    await socket.send(message="Why?")
    await wait_until_done(conversation, 2)
    body = fake.completions()[1].body
    assert body["messages"] == [
        {"role": "user", "content": "Think first"},
        {"role": "assistant", "content": "Seven"},
        {"role": "user", "content": "Why?"},
    ]
    assert "wants" not in str(body)
    await socket.close()


async def test_think_tags_split_across_chunks_become_reasoning(alice, conversation, fake):
    pieces = ["<th", "ink>Let me ", "count: 1, 2</thi", "nk>", "\n\nTwo", " apples."]
    socket, reply = await ask(alice, conversation, fake, [*map(chunk, pieces), chunk(finish="stop")])
    assert reply.reasoning == "Let me count: 1, 2"
    assert reply.content == "Two apples."
    html = "".join(socket.frames)
    assert "&lt;think" not in html and "<think" not in html  # the tags never reached the page
    await socket.send(message="More")
    await wait_until_done(conversation, 2)
    assert fake.completions()[1].body["messages"][1] == {"role": "assistant", "content": "Two apples."}
    await socket.close()


async def test_reasoning_shows_live_while_the_model_thinks(alice, conversation, fake):
    objs = [chunk(reasoning=f"step {i}. ") for i in range(40)] + [chunk("Done"), chunk(finish="stop")]
    fake.push(Stream(sse(objs), delay=0.03))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Plan")
    html = await socket.receive_until('-reasoning-live" hx-swap-oob="innerHTML">')
    live = html.split('-reasoning-live" hx-swap-oob="innerHTML">')[-1]
    assert "Thinking…" in live and "step 0." in live
    await wait_until_done(conversation, 1)
    await socket.close()


async def test_reasoning_is_checkpointed_while_it_streams(alice, conversation, fake):
    from conversations.models import Message

    objs = [chunk(reasoning=f"r{i} ") for i in range(60)] + [chunk("ok"), chunk(finish="stop")]
    fake.push(Stream(sse(objs), delay=0.04))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="long think")
    saved = ""
    for _ in range(150):  # about 2.4 s of reasoning; a checkpoint comes about once a second
        reply = await Message.objects.filter(role="assistant").afirst()
        if reply is not None and reply.is_streaming and reply.reasoning:
            saved = reply.reasoning
            break
        await asyncio.sleep(0.02)
    assert saved.startswith("r0 r1 ")  # a crash now would keep it
    await wait_until_done(conversation, 1)
    await socket.close()


async def test_a_reply_whose_template_opened_the_think_tag_is_split_at_the_end(alice, conversation, fake):
    socket, reply = await ask(alice, conversation, fake, [chunk("pondering</think>\n\nAnswer"), chunk(finish="stop")])
    assert (reply.reasoning, reply.content) == ("pondering", "Answer")
    await socket.close()


async def test_a_plain_reply_has_no_thinking_block(alice, conversation, fake):
    fake.push(Stream(text_stream(["<b>not a tag</b> and <think> later is kept"])))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="hi")
    (reply,) = await wait_until_done(conversation, 1)
    await settle(socket)
    assert reply.reasoning == "" and reply.content == "<b>not a tag</b> and <think> later is kept"
    assert 'class="thinking"' not in "".join(socket.frames)
    await socket.close()


# -- the splitter itself --------------------------------------------------------------------


def split_all(text: str, cuts) -> tuple[str, str]:
    splitter = ThinkSplitter()
    segments, start = [], 0
    for cut in [*cuts, len(text)]:
        segments += splitter.feed(text[start:cut])
        start = cut
    segments += splitter.flush()
    return "".join(t for r, t in segments if r), "".join(t for r, t in segments if not r)


def test_think_tags_are_found_wherever_the_chunks_are_cut():
    text = "<think>\nhmm, 2+2</think>\n\nIt is 4. <think>not reasoning</think>"
    expected = ("\nhmm, 2+2", "It is 4. <think>not reasoning</think>")
    for cuts in itertools.combinations(range(1, len(text)), 2):
        assert split_all(text, cuts) == expected, cuts


def test_text_that_only_looks_like_a_tag_start_is_answer():
    assert split_all("<th", []) == ("", "<th")
    assert split_all("<table>", [2]) == ("", "<table>")
    assert split_all("<think>unfinished", [3]) == ("unfinished", "")


def test_orphan_closing_tag():
    assert split_orphan_think("a</think>b") == ("a", "b")
    assert split_orphan_think("<think>a</think>b") == ("", "<think>a</think>b")
    assert split_orphan_think("plain") == ("", "plain")


def test_reasoning_time_runs_until_the_answer_starts():
    parts = ReplyParts()
    parts.feed(llm.ChoiceDelta(reasoning="hm"))
    assert parts.thinking
    parts.feed(llm.ChoiceDelta(content="ok"))
    assert not parts.thinking and parts.reasoning_ms is not None
