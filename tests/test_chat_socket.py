"""The conversation websocket: sending, streaming, saving, retrying, and who may connect."""

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Message, Provider

from .conftest import open_socket
from .fake_provider import Reply, Stream, text_stream

pytestmark = pytest.mark.django_db(transaction=True)

DONE = 'msg-assistant" data-status="complete"'


def messages_of(conversation):
    return list(conversation.messages.order_by("pk").values_list("role", "content", "status"))


async def test_it_streams_a_reply_and_saves_both_messages(alice, conversation, fake):
    fake.push(Stream(text_stream(["Hel", "lo ", "there"]), delay=0.01))
    socket, connected, _ = await open_socket(alice, conversation.code)
    assert connected
    await socket.send(message="Hi model")
    html = await socket.receive_until(DONE)
    assert "Hi model" in html
    # The text came in frames of its own, before the finished reply (which does not repeat it).
    done = next(i for i, frame in enumerate(socket.frames) if DONE in frame)
    assert any('hx-swap-oob="beforeend:#msg-' in frame and "Hel" in frame for frame in socket.frames[:done])
    assert "<p>Hello there</p>" not in socket.frames[done] and "hx-preserve" in socket.frames[done]
    assert await sync_to_async(messages_of)(conversation) == [
        ("user", "Hi model", "complete"),
        ("assistant", "Hello there", "complete"),
    ]
    body = fake.completions()[0].body
    assert body["messages"] == [{"role": "user", "content": "Hi model"}]
    assert body["stream"] is True and body["model"] == "fake-model"
    await socket.close()


async def test_it_records_usage_timings_and_finish_reason(alice, conversation, fake):
    usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    fake.push(Stream(text_stream(["a", "b", "c"], usage=usage), first_delay=0.05))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="count")
    await socket.receive_until(DONE)
    reply = await Message.objects.aget(role="assistant")
    assert (reply.prompt_tokens, reply.completion_tokens, reply.usage_estimated) == (11, 3, False)
    assert reply.finish_reason == "stop"
    assert reply.ttft_ms >= 50 and reply.duration_ms >= reply.ttft_ms
    assert fake.completions()[0].body["stream_options"] == {"include_usage": True}
    await socket.close()


async def test_it_estimates_usage_when_the_provider_sends_none(alice, conversation, fake):
    fake.push(Stream(text_stream(["twelve chars"])))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="hello")
    await socket.receive_until(DONE)
    reply = await Message.objects.aget(role="assistant")
    assert reply.usage_estimated is True
    assert reply.completion_tokens > 0 and reply.prompt_tokens > 0
    await socket.close()


async def test_it_sets_the_title_from_the_first_words(alice, conversation, fake):
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Plan a three day trip to Kyoto in autumn with a small budget please")
    html = await socket.receive_until(DONE)
    await sync_to_async(conversation.refresh_from_db)()
    assert conversation.title == "Plan a three day trip to Kyoto in…"
    assert 'id="conv-title"' in html and "Plan a three day trip" in html  # header updated live
    await socket.close()


async def test_it_sends_the_history_and_system_prompt(alice, conversation, fake):
    conversation.system_prompt = "Be terse."
    await conversation.asave()
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="first")
    await socket.receive_until(DONE)
    socket.frames.clear()
    await socket.send(message="second")
    await socket.receive_until(DONE)
    body = fake.completions()[1].body
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "You said: first"},
        {"role": "user", "content": "second"},
    ]
    await socket.close()


async def test_it_rejects_an_empty_message(alice, conversation, fake):
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="   ")
    html = await socket.receive_until('role="alert"')
    assert "Type a message first" in html
    assert await Message.objects.acount() == 0
    await socket.close()


async def test_it_rejects_an_overlong_message_and_keeps_the_box(alice, conversation, fake, settings):
    settings.MAX_MESSAGE_CHARS = 100
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="x" * 101)
    html = await socket.receive_until('role="alert"')
    assert "the limit is 100" in html
    assert 'id="composer-input"' not in html  # the box is not emptied
    assert await Message.objects.acount() == 0 and fake.completions() == []
    await socket.close()


async def test_it_answers_a_malformed_frame_with_a_message(alice, conversation, fake):
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.communicator.send_to(text_data="{not json")
    html = await socket.receive_until('role="alert"')
    assert "could not be read" in html
    await socket.close()


async def test_it_refuses_a_second_message_while_a_reply_streams(alice, conversation, fake):
    fake.push(Stream(text_stream(["slow"] * 20), delay=0.05))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="one")
    await socket.receive_until('msg-assistant" data-status="streaming"')
    await socket.send(message="two")
    html = await socket.receive_until("still being written")
    assert "still being written" in html
    await socket.receive_until(DONE, timeout=10)
    assert [m[1] for m in await sync_to_async(messages_of)(conversation) if m[0] == "user"] == ["one"]
    await socket.close()


async def test_a_provider_error_is_saved_with_a_retry_button(alice, conversation, fake):
    fake.push(Reply(500, b"<html><head><title>Bad Gateway</title></head><body>oops</body></html>", "text/html"))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="hello?")
    html = await socket.receive_until('data-status="error"')
    assert "internal error (HTTP 500)" in html and "Bad Gateway" in html
    assert "Retry" in html
    rows = await sync_to_async(messages_of)(conversation)
    assert rows[0] == ("user", "hello?", "complete")  # the user's message is kept
    assert rows[1][2] == "error"
    failed = await Message.objects.aget(role="assistant")
    socket.frames.clear()
    await socket.send(action="retry", message_id=failed.pk)
    html = await socket.receive_until(DONE)
    assert "You said: hello?" in html
    assert f'id="msg-{failed.pk}"' not in html.split('id="messages"')[-1]  # the page shows the new version
    assert "<span>2/2</span>" in html
    await socket.close()


async def test_a_stream_that_just_stops_is_marked_interrupted(alice, conversation, fake):
    fake.push(Stream(text_stream(["partial ", "text"], finish=None, done=False)))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="go")
    html = await socket.receive_until('data-status="interrupted"')
    assert "ended before the reply was complete" in html
    reply = await Message.objects.aget(role="assistant")
    assert reply.content == "partial text"
    await socket.close()


async def test_stop_cancels_the_upstream_request(alice, conversation, fake):
    fake.push(Stream(text_stream(["word "] * 200), delay=0.02))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="talk")
    await socket.receive_until("word")
    await socket.send(action="stop")
    await socket.receive_until('data-status="stopped"')
    request = fake.completions()[0]
    assert await sync_to_async(request.disconnected.wait, thread_sensitive=False)(2)
    reply = await Message.objects.aget(role="assistant")
    assert reply.status == "stopped" and reply.content.startswith("word")
    await socket.close()


async def test_a_stranger_is_refused(bob, conversation, fake):
    _, connected, code = await open_socket(bob, conversation.code)
    assert not connected and code == 4404


async def test_an_anonymous_visitor_is_refused(conversation, fake):
    _, connected, code = await open_socket(None, conversation.code)
    assert not connected and code == 4401


async def test_a_foreign_origin_is_refused(alice, conversation, fake):
    _, connected, _ = await open_socket(alice, conversation.code, origin="http://evil.example")
    assert not connected


async def test_a_message_too_long_for_the_context_window_is_explained(alice, conversation, fake):
    await Provider.objects.filter(pk=conversation.provider_id).aupdate(context_length=100)
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="word " * 200)
    html = await socket.receive_until('data-status="error"')
    assert "more than fits in the model&#x27;s context window" in html
    assert fake.completions() == []  # nothing was sent to the provider
    assert await Message.objects.filter(role="user").acount() == 1  # the message is kept
    await socket.close()


async def test_older_turns_are_trimmed_to_fit_the_context(alice, conversation, fake):
    await Provider.objects.filter(pk=conversation.provider_id).aupdate(context_length=400)

    def make_history():
        parent = None
        for i in range(10):
            role = "user" if i % 2 == 0 else "assistant"
            parent = conversation.messages.create(role=role, content=f"turn {i} " + "x" * 200, parent=parent)

    await sync_to_async(make_history)()
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="newest")
    html = await socket.receive_until(DONE)
    sent = fake.completions()[0].body["messages"]
    assert sent[-1] == {"role": "user", "content": "newest"}
    assert 1 < len(sent) < 11 and sent[0]["content"].startswith("turn ")
    assert not any(m["content"].startswith("turn 0 ") for m in sent)
    assert "context-marker" in html
    await socket.close()
