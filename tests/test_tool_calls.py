"""Tool calls: streamed fragments assembled per choice and per call, shown, answered, sent back."""

import json

import pytest

from conversations.models import Conversation, Message
from conversations.providers import client as llm

from .conftest import open_socket, settle, wait_until_done
from .fake_provider import Stream, chunk, sse, tool_call_delta

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def two_calls_stream(first_arguments=('{"ci', 'ty": "Pa', 'ris"}')) -> list[bytes]:
    """Two calls whose fragments interleave; the id and name come only with each call's first one."""
    objs = [
        chunk(tool_calls=[tool_call_delta(0, id="call_a", name="get_weather", arguments="")]),
        chunk(tool_calls=[tool_call_delta(0, arguments=first_arguments[0])]),
        chunk(tool_calls=[tool_call_delta(1, id="call_b", name="get_time", arguments='{"zone":')]),
        chunk(tool_calls=[tool_call_delta(0, arguments=first_arguments[1])]),
        chunk(tool_calls=[tool_call_delta(1, arguments=' "CET"}')]),
        chunk(tool_calls=[tool_call_delta(0, arguments=first_arguments[2])]),
        chunk(finish="tool_calls"),
    ]
    return sse(objs)


async def ask_with_tools(alice, conversation, fake, stream, text="Weather in Paris, and the time?"):
    await Conversation.objects.filter(pk=conversation.pk).aupdate(params={"tools": [WEATHER_TOOL]})
    fake.push(Stream(stream, delay=0.01))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message=text)
    (reply,) = await wait_until_done(conversation, 1)
    await settle(socket)
    return socket, reply


async def test_tool_call_fragments_are_assembled_per_call(alice, conversation, fake):
    socket, reply = await ask_with_tools(alice, conversation, fake, two_calls_stream())
    assert reply.status == "complete" and reply.finish_reason == "tool_calls" and reply.content == ""
    assert reply.tool_calls == [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"zone": "CET"}'}},
    ]
    html = "".join(socket.frames)
    assert "get_weather" in html and "get_time" in html
    assert "{\n  &quot;city&quot;: &quot;Paris&quot;\n}" in html  # pretty-printed, escaped
    assert "The model called tools." in html and "Send tool results" in html
    assert fake.completions()[0].body["tools"] == [WEATHER_TOOL]
    await socket.close()


async def test_invalid_json_arguments_are_flagged(alice, conversation, fake):
    socket, reply = await ask_with_tools(alice, conversation, fake, two_calls_stream(('{"ci', 'ty": "Pa', "ris")))
    assert reply.tool_calls[0]["function"]["arguments"] == '{"city": "Paris'
    html = "".join(socket.frames)
    assert html.count("The arguments are not valid JSON") == 1  # only the broken call
    assert "{&quot;city&quot;: &quot;Paris" in html  # shown as it came
    await socket.close()


async def test_a_tool_result_is_sent_back_in_the_api_format(alice, conversation, fake):
    socket, reply = await ask_with_tools(alice, conversation, fake, two_calls_stream())
    socket.frames.clear()
    await socket.send(
        action="tool_result", message_id=str(reply.pk), **{"result:call_a": '{"temp": 18}', "result:call_b": "10:42"}
    )
    found = await wait_until_done(conversation, 2)
    await settle(socket)
    tools = [m async for m in Message.objects.filter(role="tool").order_by("pk")]
    assert [(m.tool_call_id, m.content) for m in tools] == [("call_a", '{"temp": 18}'), ("call_b", "10:42")]
    assert tools[0].parent_id == reply.pk and tools[1].parent_id == tools[0].pk
    assert found[-1].parent_id == tools[1].pk and found[-1].content == "You said: 10:42"
    assert fake.completions()[1].body["messages"] == [
        {"role": "user", "content": "Weather in Paris, and the time?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"zone": "CET"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 18}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "10:42"},
    ]
    html = "".join(socket.frames)
    assert "Tool result" in html and "call_b" in html
    assert "Send tool results" not in html  # answered: the form is gone
    await socket.close()


async def test_every_call_needs_a_result_and_nothing_is_saved_without(alice, conversation, fake):
    socket, reply = await ask_with_tools(alice, conversation, fake, two_calls_stream())
    socket.frames.clear()
    await socket.send(action="tool_result", message_id=reply.pk, **{"result:call_a": "sunny", "result:call_b": "  "})
    html = await socket.receive_until('role="alert"')
    assert "Enter a result for every tool call (get_time has none)" in html
    assert not await Message.objects.filter(role="tool").aexists()
    assert len(fake.completions()) == 1
    await socket.close()


async def test_results_are_taken_once(alice, conversation, fake):
    socket, reply = await ask_with_tools(alice, conversation, fake, two_calls_stream())
    results = {"result:call_a": "sunny", "result:call_b": "noon"}
    await socket.send(action="tool_result", message_id=reply.pk, **results)
    await wait_until_done(conversation, 2)
    socket.frames.clear()
    await socket.send(action="tool_result", message_id=reply.pk, **results)
    html = await socket.receive_until('role="alert"')
    assert "already sent" in html
    assert await Message.objects.filter(role="tool").acount() == 2
    await socket.close()


async def test_a_call_without_an_id_gets_one_the_result_can_name(alice, conversation, fake):
    objs = [
        chunk(tool_calls=[{"index": 0, "function": {"name": "ping", "arguments": "{}"}}]),
        chunk(finish="tool_calls"),
    ]
    socket, reply = await ask_with_tools(alice, conversation, fake, sse(objs))
    call_id = reply.tool_calls[0]["id"]
    assert call_id.startswith("call_") and len(call_id) > 10
    await socket.send(action="tool_result", message_id=reply.pk, **{f"result:{call_id}": "pong"})
    await wait_until_done(conversation, 2)
    assert fake.completions()[1].body["messages"][-1] == {"role": "tool", "tool_call_id": call_id, "content": "pong"}
    await socket.close()


async def test_tool_calls_of_n_choices_are_kept_apart(alice, conversation, fake):
    await Conversation.objects.filter(pk=conversation.pk).aupdate(params={"tools": [WEATHER_TOOL], "n": 2})
    objs = [
        chunk(tool_calls=[tool_call_delta(0, id="c0", name="get_weather", arguments='{"city":')], index=0),
        chunk(tool_calls=[tool_call_delta(0, id="c1", name="get_weather", arguments='{"city":')], index=1),
        chunk(tool_calls=[tool_call_delta(0, arguments=' "Oslo"}')], index=1),
        chunk(tool_calls=[tool_call_delta(0, arguments=' "Rome"}')], index=0),
        chunk(finish="tool_calls", index=0),
        chunk(finish="tool_calls", index=1),
    ]
    fake.push(Stream(sse(objs)))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Weather somewhere")
    first, second = await wait_until_done(conversation, 2)
    assert json.loads(first.tool_calls[0]["function"]["arguments"]) == {"city": "Rome"}
    assert json.loads(second.tool_calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    assert (first.tool_calls[0]["id"], second.tool_calls[0]["id"]) == ("c0", "c1")
    await socket.close()


async def test_tool_calls_show_while_they_stream(alice, conversation, fake):
    await Conversation.objects.filter(pk=conversation.pk).aupdate(params={"tools": [WEATHER_TOOL]})
    objs = [chunk(tool_calls=[tool_call_delta(0, id="call_a", name="get_weather", arguments='{"city": ')])]
    objs += [chunk(tool_calls=[tool_call_delta(0, arguments=" ")]) for _ in range(30)]
    objs += [chunk(tool_calls=[tool_call_delta(0, arguments='"Oslo"}')]), chunk(finish="tool_calls")]
    fake.push(Stream(sse(objs), delay=0.03))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Weather?")
    html = await socket.receive_until('-tools-live" hx-swap-oob="innerHTML">\n<div class="tool-calls">')
    assert "get_weather" in html.split('-tools-live" hx-swap-oob="innerHTML">')[-1]
    assert "not valid JSON" not in html  # unfinished arguments are not flagged
    reply = await Message.objects.aget(role="assistant")
    assert reply.status == "streaming"  # it showed before the end
    await wait_until_done(conversation, 1)
    await socket.close()


def test_parse_chunk_reads_tool_call_fragments_and_ignores_garbage():
    parsed = llm.parse_chunk(
        {
            "choices": [
                {
                    "index": 1,
                    "delta": {
                        "tool_calls": [
                            {"index": 2, "id": "x", "type": "function", "function": {"name": "f", "arguments": "{"}},
                            "garbage",
                            {"function": "not a dict"},
                        ]
                    },
                }
            ]
        }
    )
    (choice,) = parsed.choices
    assert choice.index == 1
    assert choice.tool_calls == [
        llm.ToolCallDelta(index=2, id="x", type="function", name="f", arguments="{"),
        llm.ToolCallDelta(index=2),
    ]
