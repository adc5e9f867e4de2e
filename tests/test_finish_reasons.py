"""Why a reply ended (length → Continue, content_filter, tool_calls), JSON mode, and token totals."""

import pytest
from asgiref.sync import sync_to_async

from conversations.generation.prompt import CONTINUE_INSTRUCTION
from conversations.models import Conversation, Message

from .conftest import open_socket, settle, wait_until_done
from .fake_provider import Stream, text_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def ask(socket, conversation, text, count):
    await socket.send(message=text)
    found = await wait_until_done(conversation, count)
    await settle(socket)
    return found[-1]


async def test_a_reply_cut_by_max_tokens_says_so_and_continue_appends_to_it(alice, conversation, fake):
    await Conversation.objects.filter(pk=conversation.pk).aupdate(params={"max_tokens": 5, "n": 1})
    first_usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    fake.push(Stream(text_stream(["The list: ", "1, 2,"], finish="length", usage=first_usage)))
    socket, _, _ = await open_socket(alice, conversation.code)
    reply = await ask(socket, conversation, "List four numbers", 1)
    html = "".join(socket.frames)
    assert reply.finish_reason == "length" and reply.content == "The list: 1, 2,"
    assert "Cut off by max_tokens." in html and '"action": "continue"' in html
    socket.frames.clear()
    second_usage = {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34}
    fake.push(Stream(text_stream([" 3, ", "4."], usage=second_usage)))
    await socket.send(action="continue", message_id=reply.pk)
    await sync_to_async(fake.wait_for_requests, thread_sensitive=False)(2)
    (continued,) = await wait_until_done(conversation, 1)
    await settle(socket)
    # The same message grew where it stopped, as in ChatGPT.
    assert continued.pk == reply.pk and continued.content == "The list: 1, 2, 3, 4."
    assert continued.finish_reason == "stop" and continued.status == "complete"
    assert (continued.prompt_tokens, continued.completion_tokens) == (40, 9)  # both requests
    body = fake.completions()[1].body
    assert body["messages"] == [
        {"role": "user", "content": "List four numbers"},
        {"role": "assistant", "content": "The list: 1, 2,"},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
    assert body["max_tokens"] == 5 and body["n"] == 1
    html = "".join(socket.frames)
    assert "Cut off by max_tokens." not in html.split(f'id="msg-{reply.pk}"')[-1]
    await socket.close()


async def test_continue_is_refused_for_a_complete_reply_or_one_that_was_answered(alice, conversation, fake):
    fake.push(Stream(text_stream(["cut"], finish="length")))
    socket, _, _ = await open_socket(alice, conversation.code)
    cut = await ask(socket, conversation, "one", 1)
    done = await ask(socket, conversation, "two", 2)
    for message in (cut, done):  # `cut` has a follow-up now; `done` was not cut
        socket.frames.clear()
        await socket.send(action="continue", message_id=message.pk)
        html = await socket.receive_until('role="alert"')
        assert "Only the last reply, when it was cut off by max_tokens, can be continued." in html
    assert len(fake.completions()) == 2
    await socket.close()


async def test_continue_is_not_offered_once_the_conversation_went_on(alice_client, alice, conversation, fake):
    fake.push(Stream(text_stream(["cut"], finish="length")))
    socket, _, _ = await open_socket(alice, conversation.code)
    await ask(socket, conversation, "one", 1)
    page = (await sync_to_async(alice_client.get)(f"/c/{conversation.code}/")).content.decode()
    assert '"action": "continue"' in page
    await ask(socket, conversation, "two", 2)
    page = (await sync_to_async(alice_client.get)(f"/c/{conversation.code}/")).content.decode()
    assert "Cut off by max_tokens." in page and '"action": "continue"' not in page
    await socket.close()


async def test_a_content_filter_stop_is_shown(alice, conversation, fake):
    fake.push(Stream(text_stream(["I can"], finish="content_filter")))
    socket, _, _ = await open_socket(alice, conversation.code)
    reply = await ask(socket, conversation, "something", 1)
    assert reply.finish_reason == "content_filter"
    assert "Stopped by the provider's content filter." in "".join(socket.frames)
    await socket.close()


async def test_a_json_mode_reply_is_pretty_printed(alice, conversation, fake):
    await Conversation.objects.filter(pk=conversation.pk).aupdate(params={"response_format": {"type": "json_object"}})
    fake.push(Stream(text_stream(['{"name": "Ada", ', '"langs": ["en", "fr"]}'])))
    socket, _, _ = await open_socket(alice, conversation.code)
    reply = await ask(socket, conversation, "JSON please", 1)
    assert reply.json_mode
    html = "".join(socket.frames)
    assert '<pre class="json-view"><code>{\n  &quot;name&quot;: &quot;Ada&quot;,\n  &quot;langs&quot;: [' in html
    assert "Not valid JSON" not in html
    assert fake.completions()[0].body["response_format"] == {"type": "json_object"}
    await socket.close()


async def test_json_cut_by_length_is_marked_invalid_and_continue_completes_it(alice, conversation, fake):
    schema = {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}}
    await Conversation.objects.filter(pk=conversation.pk).aupdate(params={"response_format": schema})
    fake.push(Stream(text_stream(['{"name": "A'], finish="length")))
    socket, _, _ = await open_socket(alice, conversation.code)
    reply = await ask(socket, conversation, "JSON", 1)
    html = "".join(socket.frames)
    assert "Not valid JSON (the reply was cut off by max_tokens)" in html
    socket.frames.clear()
    fake.push(Stream(text_stream(['da"}'])))
    await socket.send(action="continue", message_id=reply.pk)
    await sync_to_async(fake.wait_for_requests, thread_sensitive=False)(2)
    await wait_until_done(conversation, 1)
    await settle(socket)
    html = "".join(socket.frames)
    assert "Not valid JSON" not in html and "{\n  &quot;name&quot;: &quot;Ada&quot;\n}" in html
    await socket.close()


async def test_the_header_shows_the_conversation_s_token_totals(alice_client, alice, conversation, fake):
    socket, _, _ = await open_socket(alice, conversation.code)
    fake.push(Stream(text_stream(["a"], usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})))
    await ask(socket, conversation, "one", 1)
    fake.push(Stream(text_stream(["b"], usage={"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14})))
    await ask(socket, conversation, "two", 2)
    assert "21 tokens in this chat (16 prompt + 5 completion)</span>" in "".join(socket.frames)
    page = (await sync_to_async(alice_client.get)(f"/c/{conversation.code}/")).content.decode()
    assert 'id="usage-totals"' in page and "21 tokens in this chat (16 prompt + 5 completion)" in page
    await socket.close()


async def test_totals_are_only_the_owner_s(bob_client, alice, conversation, fake):
    await sync_to_async(Message.objects.create)(conversation=conversation, role="assistant", prompt_tokens=3)
    response = await sync_to_async(bob_client.get)(f"/c/{conversation.code}/")
    assert response.status_code == 404
