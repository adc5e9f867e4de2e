"""Chatting with the real bundled model: no key, no network, no mock."""

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Conversation, Message
from conversations.providers import client as llm

from .conftest import open_socket

pytestmark = [pytest.mark.bundled, pytest.mark.django_db(transaction=True)]

DONE = 'msg-assistant" data-status="complete"'


async def test_it_lists_the_bundled_model_by_its_alias(bundled_provider):
    assert await llm.list_models(bundled_provider) == ["SmolLM2-135M-Instruct"]


async def test_it_chats_with_the_bundled_model_over_the_websocket(alice, bundled_provider):
    conversation = await Conversation.objects.acreate(
        owner=alice, provider=bundled_provider, model="SmolLM2-135M-Instruct", params={"max_tokens": 40, "seed": 7}
    )
    socket, connected, _ = await open_socket(alice, conversation.code)
    assert connected
    await socket.send(message="What is the capital of France? Answer in one word.")
    html = await socket.receive_until(DONE, timeout=240)  # generous: a loaded 2-core CI machine
    assert 'hx-swap-oob="beforeend:#msg-' in html  # the reply arrived as streamed frames
    reply = await Message.objects.aget(conversation=conversation, role="assistant")
    assert reply.status == "complete" and reply.content.strip()
    assert reply.model == "SmolLM2-135M-Instruct"
    # llama-cpp-python sends no usage in streams: it is counted with the model's tokenizer, marked as an estimate.
    assert reply.usage_estimated and reply.completion_tokens > 0 and reply.prompt_tokens > 0
    assert reply.ttft_ms is not None and reply.duration_ms >= reply.ttft_ms
    await socket.close()


async def test_a_long_history_is_trimmed_to_the_context_window(alice, bundled_provider):
    conversation = await Conversation.objects.acreate(
        owner=alice, provider=bundled_provider, model="SmolLM2-135M-Instruct", params={"max_tokens": 16}
    )

    def make_history():
        parent = None
        for i in range(40):
            role = "user" if i % 2 == 0 else "assistant"
            content = f"Turn {i}: " + "lorem ipsum dolor " * 20
            parent = conversation.messages.create(role=role, content=content, parent=parent)

    await sync_to_async(make_history)()
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Say OK.")
    html = await socket.receive_until(DONE, timeout=240)  # generous: a loaded 2-core CI machine
    assert "context-marker" in html
    reply = await Message.objects.filter(conversation=conversation, role="assistant").alatest("pk")
    assert reply.status == "complete" and reply.context_start_id is not None
    start = await Message.objects.aget(pk=reply.context_start_id)
    assert start.content.startswith("Turn ") and not start.content.startswith("Turn 0:")
    await socket.close()
