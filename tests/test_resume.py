"""Streams that survive the page: resume without gap or duplicate, several tabs, stop anywhere, branches."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Conversation, Message
from conversations.rendering import render_html

from .conftest import open_socket, text_seen
from .fake_provider import Stream, text_stream

pytestmark = pytest.mark.django_db(transaction=True)

DONE = 'msg-assistant" data-status="complete"'


async def streaming_reply() -> Message:
    for _ in range(200):
        reply = await Message.objects.filter(role="assistant", status="streaming").afirst()
        if reply is not None:
            return reply
        await asyncio.sleep(0.01)
    raise AssertionError("no streaming reply")


async def test_a_tab_opened_mid_stream_sees_everything_once(alice, conversation, fake):
    words = [f"w{i} " for i in range(60)]
    fake.push(Stream(text_stream(words), delay=0.01))
    first, _, _ = await open_socket(alice, conversation.code)
    await first.send(message="count")
    await first.receive_until("w5 ")
    second, _, _ = await open_socket(alice, conversation.code)  # a reload, mid-stream
    await second.receive_until(DONE, timeout=10)
    reply = await Message.objects.aget(role="assistant")
    assert reply.content == "".join(words)
    # Snapshot + later deltas: no gap, no duplicate, and the HTML of the whole text rendered at once.
    assert text_seen(second.frames, reply.pk) == render_html(reply.content)
    assert f'<div id="msg-{reply.pk}-text" class="msg-text markdown" hx-swap-oob="true">' in "".join(second.frames)
    await first.close()
    await second.close()


async def test_closing_every_tab_does_not_stop_the_generation(alice, conversation, fake):
    fake.push(Stream(text_stream([f"{i} " for i in range(30)]), delay=0.01))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="go on")
    await socket.receive_until('msg-assistant" data-status="streaming"')
    await socket.close()
    for _ in range(300):
        reply = await Message.objects.aget(role="assistant")
        if reply.status != "streaming":
            break
        await asyncio.sleep(0.01)
    assert reply.status == "complete" and reply.content.startswith("0 1 2")


async def test_a_message_sent_in_one_tab_appears_in_the_other(alice, conversation, fake):
    fake.push(Stream(text_stream(["shared ", "reply"]), delay=0.01))
    one, _, _ = await open_socket(alice, conversation.code)
    two, _, _ = await open_socket(alice, conversation.code)
    await one.send(message="from tab one")
    html = await two.receive_until(DONE)
    assert "from tab one" in html
    reply = await Message.objects.aget(role="assistant")
    assert text_seen(two.frames, reply.pk) == "<p>shared reply</p>"
    await one.close()
    await two.close()


async def test_stop_from_another_tab_before_the_first_token(alice, conversation, fake):
    fake.push(Stream(text_stream(["late"]), first_delay=5))
    one, _, _ = await open_socket(alice, conversation.code)
    two, _, _ = await open_socket(alice, conversation.code)
    await one.send(message="slow start")
    # The request is at the provider, which has not answered yet.
    request = (await sync_to_async(fake.wait_for_requests, thread_sensitive=False)(1))[0]
    await two.send(action="stop")
    await one.receive_until('data-status="stopped"', timeout=3)
    # The provider saw the connection close.
    assert await sync_to_async(request.disconnected.wait, thread_sensitive=False)(2)
    reply = await Message.objects.aget(role="assistant")
    assert reply.status == "stopped" and reply.content == ""
    await one.close()
    await two.close()


async def test_stop_before_the_request_is_even_sent(alice, conversation, fake):
    one, _, _ = await open_socket(alice, conversation.code)
    await one.send(message="never mind")
    await one.send(action="stop")
    await one.receive_until('data-status="stopped"', timeout=3)
    reply = await Message.objects.aget(role="assistant")
    assert reply.status == "stopped"
    await one.close()


async def test_regenerate_makes_a_second_version(alice, conversation, fake):
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="pick a number")
    await socket.receive_until(DONE)
    first = await Message.objects.aget(role="assistant")
    socket.frames.clear()
    fake.push(Stream(text_stream(["second answer"])))
    await socket.send(action="regenerate", message_id=first.pk)
    html = await socket.receive_until(DONE)
    assert "second answer" in html and "<span>2/2</span>" in html
    assert fake.completions()[1].body["messages"] == [{"role": "user", "content": "pick a number"}]
    socket.frames.clear()
    await socket.send(action="switch", message_id=first.pk)
    html = await socket.receive_until("<span>1/2</span>")
    assert "You said: pick a number" in html and "second answer" not in html
    await socket.close()


async def test_editing_a_message_branches_and_only_the_branch_is_sent(alice, conversation, fake):
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="first question")
    await socket.receive_until(DONE)
    socket.frames.clear()
    await socket.send(message="second question")
    await socket.receive_until(DONE)
    original = await Message.objects.filter(role="user").aearliest("pk")
    socket.frames.clear()
    await socket.send(action="edit", message_id=original.pk, message="edited question")
    html = await socket.receive_until(DONE)
    assert "edited question" in html and "second question" not in html
    assert fake.completions()[2].body["messages"] == [{"role": "user", "content": "edited question"}]
    socket.frames.clear()
    await socket.send(message="follow up")
    await socket.receive_until(DONE)
    assert [m["content"] for m in fake.completions()[3].body["messages"]] == [
        "edited question",
        "You said: edited question",
        "follow up",
    ]
    # Back to the first version: the original branch, continued where it ended.
    socket.frames.clear()
    await socket.send(action="switch", message_id=original.pk)
    html = await socket.receive_until("<span>1/2</span>")
    assert "second question" in html and "follow up" not in html
    conversation = await Conversation.objects.aget(pk=original.conversation_id)
    branch = await sync_to_async(conversation.branch)()
    assert [m.content for m in branch][-2:] == ["second question", "You said: second question"]
    await socket.close()


async def test_a_sync_frame_redraws_the_conversation(alice, conversation, fake):
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="hello")
    await socket.receive_until(DONE)
    socket.frames.clear()
    await socket.send(action="sync")
    html = await socket.receive_until('id="messages" class="messages"')
    assert "You said: hello" in html and 'data-busy="false"' in html
    await socket.close()
