"""n > 1: choices stream side by side, the user picks one, and only that branch is sent on."""

import pytest
from asgiref.sync import sync_to_async

from conversations.generation.feeds import split_usage
from conversations.models import MAX_CHOICES, Conversation, Message, choices_wanted
from conversations.rendering import render_html

from .conftest import open_socket, replies, settle, text_seen, wait_until_done
from .fake_provider import Reply, Stream, choices_stream, text_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def set_params(conversation, **params):
    await Conversation.objects.filter(pk=conversation.pk).aupdate(params=params)


async def test_n_3_streams_three_choices_side_by_side_from_one_request(alice, conversation, fake):
    await set_params(conversation, n=3)
    fake.push(Stream(choices_stream([["Red ", "apple"], ["Green ", "pear"], ["Blue ", "plum"]]), delay=0.01))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Name a fruit")
    found = await wait_until_done(conversation, 3)
    html = await socket.receive_until("Use this reply")
    assert [(m.choice_index, m.content, m.status) for m in found] == [
        (0, "Red apple", "complete"),
        (1, "Green pear", "complete"),
        (2, "Blue plum", "complete"),
    ]
    assert len({m.parent_id for m in found}) == 1 and all(m.choices_open for m in found)
    assert 'class="choices"' in html and "Choice 3 of 3" in html
    for reply in found:  # each choice streamed into its own message
        assert text_seen(socket.frames, reply.pk) == render_html(reply.content)
    assert len(fake.completions()) == 1 and fake.completions()[0].body["n"] == 3
    await socket.close()


async def test_picking_a_choice_continues_from_it_and_sends_only_that_branch(alice, conversation, fake):
    await set_params(conversation, n=3)
    fake.push(Stream(choices_stream([["one"], ["two"], ["three"]])))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Count")
    first, second, third = await wait_until_done(conversation, 3)
    await settle(socket)
    socket.frames.clear()
    await socket.send(action="pick", message_id=second.pk)
    html = await socket.receive_until("<span>2/3</span>")
    assert "Use this reply" not in html and 'class="choices"' not in html
    assert f'id="msg-{second.pk}"' in html and f'id="msg-{first.pk}"' not in html
    assert not await Message.objects.filter(choices_open=True).aexists()
    socket.frames.clear()
    fake.push(Stream(choices_stream([["a"], ["b"], ["c"]])))
    await socket.send(message="And next?")
    await wait_until_done(conversation, 6)
    await settle(socket)
    assert fake.completions()[1].body["messages"] == [
        {"role": "user", "content": "Count"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "And next?"},
    ]
    # The other choices are still there, as versions.
    socket.frames.clear()
    await socket.send(action="switch", message_id=third.pk)
    html = await socket.receive_until("<span>3/3</span>")
    assert "three" in html and "And next?" not in html
    await socket.close()


async def test_sending_without_picking_goes_on_with_the_shown_choice(alice, conversation, fake):
    await set_params(conversation, n=2)
    fake.push(Stream(choices_stream([["left"], ["right"]])))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Pick a side")
    await wait_until_done(conversation, 2)
    await set_params(conversation)  # back to one reply
    await socket.send(message="Why?")
    await wait_until_done(conversation, 3)
    assert [m["content"] for m in fake.completions()[1].body["messages"]] == ["Pick a side", "left", "Why?"]
    assert "n" not in fake.completions()[1].body
    assert not await Message.objects.filter(choices_open=True).aexists()
    await socket.close()


async def test_picking_is_refused_while_choices_stream(alice, conversation, fake):
    await set_params(conversation, n=2)
    fake.push(Stream(choices_stream([["slow "] * 40, ["slower "] * 40]), delay=0.03))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="go")
    await socket.receive_until("slow")
    first = (await replies(conversation))[0]
    await socket.send(action="pick", message_id=first.pk)
    html = await socket.receive_until("Wait until every choice is finished")
    assert 'role="alert"' in html
    await wait_until_done(conversation, 2)
    await settle(socket)
    socket.frames.clear()
    await socket.send(action="pick", message_id=first.pk)  # once they are done, it works
    await socket.receive_until("<span>1/2</span>")
    await socket.close()


async def test_a_plain_reply_cannot_be_picked(alice, conversation, fake):
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="hello")
    (reply,) = await wait_until_done(conversation, 1)
    await socket.send(action="pick", message_id=reply.pk)
    html = await socket.receive_until('role="alert"')
    assert "not one of the choices" in html
    await socket.close()


async def test_a_provider_that_ignores_n_gets_one_request_per_choice_and_the_page_says_so(alice, conversation, fake):
    # The fake's default answer ignores n (like llama-cpp-python): one choice per request.
    await set_params(conversation, n=3, seed=7)
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Tell me")
    found = await wait_until_done(conversation, 3)
    html = await socket.receive_until("so the app sent 3 requests")
    assert all(m.own_request and m.content == "You said: Tell me" for m in found)
    bodies = [r.body for r in fake.completions()]
    assert len(bodies) == 3
    assert bodies[0]["n"] == 3 and bodies[0]["seed"] == 7
    # The missing choices were asked for one by one, with their own seeds so they can differ.
    assert sorted(b["seed"] for b in bodies[1:]) == [8, 9] and all("n" not in b for b in bodies[1:])
    assert "Choice 1 of 3" in html
    # Remembered: the next message asks n times at once.
    fake.requests.clear()
    await socket.send(message="Again")
    await wait_until_done(conversation, 6)
    assert [("n" in r.body) for r in fake.completions()] == [False, False, False]
    await socket.close()


async def test_a_provider_that_rejects_n_gets_one_request_per_choice(alice, conversation, fake):
    await set_params(conversation, n=2)
    fake.push(Reply(400, b'{"error": {"message": "n must be 1", "type": "invalid_request_error"}}'))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Hi")
    found = await wait_until_done(conversation, 2)
    assert [(m.status, m.own_request) for m in found] == [("complete", True), ("complete", True)]
    assert [("n" in r.body) for r in fake.completions()] == [True, False, False]
    await socket.close()


async def test_stop_from_another_tab_stops_every_choice_and_the_request(alice, conversation, fake):
    await set_params(conversation, n=3)
    fake.push(Stream(choices_stream([["word "] * 200] * 3), delay=0.02))
    one, _, _ = await open_socket(alice, conversation.code)
    two, _, _ = await open_socket(alice, conversation.code)
    await one.send(message="talk")
    await one.receive_until("word")
    await two.send(action="stop")
    found = await wait_until_done(conversation, 3)
    assert [m.status for m in found] == ["stopped"] * 3
    assert found[0].content.startswith("word")
    request = fake.completions()[0]
    assert await sync_to_async(request.disconnected.wait, thread_sensitive=False)(2)
    await settle(one)
    html = "".join(one.frames)
    assert html.count('data-status="stopped"') == 3 and html.rfind('data-busy="false"') > html.rfind('data-busy="true"')
    await one.close()
    await two.close()


async def test_a_tab_opened_mid_stream_follows_every_choice_without_gap_or_duplicate(alice, conversation, fake):
    await set_params(conversation, n=2)
    words = [[f"a{i} " for i in range(50)], [f"b{i} " for i in range(50)]]
    fake.push(Stream(choices_stream(words), delay=0.01))
    first, _, _ = await open_socket(alice, conversation.code)
    await first.send(message="stream")
    await first.receive_until("a5 ")
    second, _, _ = await open_socket(alice, conversation.code)  # a reload, mid-stream
    found = await wait_until_done(conversation, 2)
    await second.receive_until('data-busy="false"')
    for reply, parts in zip(found, words, strict=True):
        assert reply.content == "".join(parts)
        assert text_seen(second.frames, reply.pk) == render_html(reply.content)
    await first.close()
    await second.close()


async def test_one_request_s_usage_is_split_between_the_choices(alice, conversation, fake):
    await set_params(conversation, n=2)
    usage = {"prompt_tokens": 9, "completion_tokens": 30, "total_tokens": 39}
    fake.push(Stream(choices_stream([["short"], ["a much longer reply"]], usage=usage)))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="usage")
    first, second = await wait_until_done(conversation, 2)
    # The prompt was sent once; the completion tokens add up to what the provider counted.
    assert (first.prompt_tokens, second.prompt_tokens) == (9, 0)
    assert first.completion_tokens + second.completion_tokens == 30
    assert second.completion_tokens > first.completion_tokens
    html = await socket.receive_until("tokens in this chat")
    assert "39 tokens in this chat (9 prompt + 30 completion)" in html
    await socket.close()


async def test_regenerating_with_n_2_makes_two_new_choices(alice, conversation, fake):
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="once")
    (original,) = await wait_until_done(conversation, 1)
    await set_params(conversation, n=2)
    fake.push(Stream(choices_stream([["x"], ["y"]])))
    await socket.send(action="regenerate", message_id=original.pk)
    found = await wait_until_done(conversation, 3)
    assert [(m.content, m.choice_index, m.choices_open) for m in found] == [
        ("You said: once", 0, False),
        ("x", 0, True),
        ("y", 1, True),
    ]
    assert len({m.parent_id for m in found}) == 1
    await socket.close()


async def test_editing_a_message_with_n_2_streams_two_choices_for_the_new_version(alice, conversation, fake):
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="original")
    await wait_until_done(conversation, 1)
    original = await Message.objects.aget(role="user")
    await set_params(conversation, n=2)
    fake.push(Stream(choices_stream([["e0 ", "x"], ["e1 ", "y"]]), delay=0.02))
    await settle(socket)
    socket.frames.clear()
    await socket.send(action="edit", message_id=original.pk, message="edited")
    found = await wait_until_done(conversation, 3)
    await settle(socket)
    assert [(m.content, m.choices_open) for m in found[1:]] == [("e0 x", True), ("e1 y", True)]
    html = "".join(socket.frames)
    assert 'class="choices"' in html and html.count("Use this reply") >= 2
    for reply in found[1:]:  # the redrawn page followed both
        assert text_seen(socket.frames, reply.pk) == render_html(reply.content)
    await socket.close()


async def test_a_reloaded_page_shows_the_open_choices(alice_client, alice, conversation, fake):
    await set_params(conversation, n=2)
    fake.push(Stream(choices_stream([["first choice"], ["second choice"]])))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="two please")
    await wait_until_done(conversation, 2)
    await socket.close()
    response = await sync_to_async(alice_client.get)(f"/c/{conversation.code}/")
    html = response.content.decode()
    assert html.count("Use this reply") == 2
    assert "first choice" in html and "second choice" in html


async def test_a_failed_choice_request_fails_every_choice_with_the_reason(alice, conversation, fake):
    await set_params(conversation, n=2)
    fake.push(Reply(500, b'{"error": {"message": "overloaded"}}'))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Hi")
    found = await wait_until_done(conversation, 2)
    assert [m.status for m in found] == ["error", "error"]
    assert all("overloaded" in m.error for m in found)
    await socket.close()


def test_wanted_reads_n_safely():
    assert choices_wanted({}) == 1
    assert choices_wanted({"n": 3}) == 3
    assert choices_wanted({"n": "3"}) == 1
    assert choices_wanted({"n": True}) == 1
    assert choices_wanted({"n": 500}) == MAX_CHOICES


def test_usage_shares_add_up():
    assert split_usage(30, [5, 18]) == [7, 23]
    assert sum(split_usage(7, [1, 1, 1])) == 7
    assert split_usage(0, [3, 4]) == [0, 0]


async def test_a_single_reply_is_unchanged_by_all_this(alice, conversation, fake):
    fake.push(Stream(text_stream(["just ", "one"])))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="one")
    (reply,) = await wait_until_done(conversation, 1)
    html = await socket.receive_until('data-busy="false"')
    assert reply.content == "just one" and not reply.choices_open and not reply.own_request
    assert "Choice" not in html and 'class="choices"' not in html
    await socket.close()


@pytest.mark.bundled
async def test_n_2_with_the_bundled_model_gives_two_choices_from_the_app_s_own_requests(alice, bundled_provider):
    # llama-cpp-python's server answers n > 1 with a single choice: the app asks twice itself.
    conversation = await Conversation.objects.acreate(
        owner=alice,
        provider=bundled_provider,
        model="SmolLM2-135M-Instruct",
        params={"n": 2, "max_tokens": 12, "seed": 11, "temperature": 1.0},
    )
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Write a short greeting.")
    first, second = await wait_until_done(conversation, 2, timeout=120)
    html = await socket.receive_until("so the app sent 2 requests", timeout=10)
    assert [(m.choice_index, m.status, m.own_request, m.error) for m in (first, second)] == [
        (0, "complete", True, ""),
        (1, "complete", True, ""),
    ]
    assert first.content.strip() and second.content.strip()
    assert first.parent_id == second.parent_id
    # Each was a request of its own, so each has its own prompt tokens.
    assert first.prompt_tokens > 0 and second.prompt_tokens > 0
    assert "Choice 2 of 2" in html
    await settle(socket)
    socket.frames.clear()
    await socket.send(action="pick", message_id=second.pk)
    await socket.receive_until("<span>2/2</span>")
    await socket.close()
