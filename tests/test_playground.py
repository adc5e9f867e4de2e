"""The text-completion playground: POST /v1/completions runs over the playground's websocket."""

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.utils import timezone

from conversations.generation import completion
from conversations.models import Conversation, Message, Provider
from conversations.playground import runs as run_views
from conversations.playground.runs import pieces
from conversations.providers import client as llm
from conversations.providers.client import user_id_for_provider

from .conftest import Socket, login_client
from .fake_provider import Close, Reply, Stream, completion_chunk, sse, token_logprobs

pytestmark = pytest.mark.django_db(transaction=True)

COMPLETION_PARAMS = {
    "suffix",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "echo",
    "best_of",
    "logprobs",
}
FINISHED = 'data-choice="0" '  # the choice article, as rendered once a run has finished
STOP_SLOTS = ["", "", "", ""]
DELTA = 'hx-swap-oob="beforeend">'  # a streamed piece of a completion


@pytest.fixture
def playground(alice, provider):
    return Conversation.objects.create(
        owner=alice, provider=provider, model="fake-model", mode=Conversation.Mode.COMPLETION
    )


async def open_playground(user, code, *, origin="http://testserver"):
    from chatsite.asgi import application

    headers = [(b"origin", origin.encode()), (b"host", b"testserver")]
    if user is not None:
        session_key = await sync_to_async(lambda: login_client(user).session.session_key)()
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_key}".encode()))
    communicator = WebsocketCommunicator(application, f"/ws/p/{code}/", headers=headers)
    connected, close_code = await communicator.connect(timeout=5)
    socket = Socket(communicator)
    if connected:
        await socket.receive_until('id="run-actions"')  # the Run button's state, sent on connect
        socket.frames.clear()
    return socket, connected, close_code


def form(prompt="Once upon a time", **fields):
    """A Run frame as the page's ws-send builds it: every field, empty when not set."""
    data = {"action": "run", "prompt": prompt, "stop": list(STOP_SLOTS), "HEADERS": {"HX-Request": "true"}}
    for name in COMPLETION_PARAMS - {"stop", "echo"}:
        data[name] = ""
    data.update(fields)
    return data


async def run(socket, **data):
    await socket.send(**form(**data))


async def finished(socket, timeout=5.0) -> str:
    """Wait until no choice is streaming and the Run button is back."""
    return await socket.receive_until('data-busy="false"', timeout=timeout)


def runs(conversation):
    return run_views.runs_of(conversation)


async def the_runs(conversation):
    return await sync_to_async(runs)(conversation)


# -- the page -------------------------------------------------------------------------------------


def test_new_text_completion_opens_a_playground_and_reuses_an_untouched_one(alice_client, alice, provider):
    response = alice_client.post("/c/new/completion/")
    conversation = Conversation.objects.get(owner=alice)
    assert conversation.mode == Conversation.Mode.COMPLETION
    assert response.url == f"/c/{conversation.code}/"
    page = alice_client.get(response.url).content.decode()
    assert 'ws-connect="/ws/p/' in page and 'id="prompt"' in page
    for name in COMPLETION_PARAMS:
        assert f'name="{name}"' in page, name
    assert alice_client.post("/c/new/completion/").url == response.url  # untouched: reused
    # New chat never lands on the untouched playground, and vice versa.
    chat_url = alice_client.post("/c/new/").url
    assert chat_url != response.url
    assert Conversation.objects.get(code=chat_url.split("/")[2]).mode == Conversation.Mode.CHAT
    assert 'id="new-completion"' in alice_client.get(chat_url).content.decode()


def test_settings_are_saved_on_change_and_shown_again(alice_client, playground):
    data = {"prompt": "ignored", "max_tokens": "16", "temperature": "0.4", "stop": ["END", r"\n", "", ""]}
    data.update(echo="on", logprobs="2", suffix="The end.", logit_bias="50256: -100")
    response = alice_client.post(f"/c/{playground.code}/playground/settings/", data)
    assert response.status_code == 200
    assert "Saved" in response.content.decode()
    playground.refresh_from_db()
    assert playground.params == {
        "max_tokens": 16,
        "temperature": 0.4,
        "stop": ["END", "\n"],
        "echo": True,
        "logprobs": 2,
        "suffix": "The end.",
        "logit_bias": {"50256": -100},
    }
    page = alice_client.get(f"/c/{playground.code}/").content.decode()
    assert 'name="max_tokens" value="16"' in page
    assert '<option value="2" selected>' in page
    assert 'name="stop" value="END"' in page and r'name="stop" value="\n"' in page
    assert ">The end.</textarea>" in page


def test_a_bad_setting_is_explained_and_nothing_is_saved(alice_client, playground):
    playground.params = {"max_tokens": 5}
    playground.save()
    response = alice_client.post(f"/c/{playground.code}/playground/settings/", {"max_tokens": "9", "temperature": "7"})
    html = response.content.decode()
    assert 'id="param-temperature-error"' in html and "Enter a number from 0 to 2." in html
    assert 'name="temperature"' not in html  # only the error slots are swapped: what was typed stays
    playground.refresh_from_db()
    assert playground.params == {"max_tokens": 5}


def test_a_stranger_gets_404_everywhere(bob_client, playground):
    assert bob_client.get(f"/c/{playground.code}/").status_code == 404
    assert bob_client.post(f"/c/{playground.code}/playground/settings/", {"max_tokens": "3"}).status_code == 404
    playground.refresh_from_db()
    assert playground.params == {}


async def test_a_stranger_and_an_anonymous_visitor_are_refused_on_the_socket(bob, playground, fake):
    _, connected, code = await open_playground(bob, playground.code)
    assert not connected and code == 4404
    _, connected, code = await open_playground(None, playground.code)
    assert not connected and code == 4401
    assert fake.completions() == []


# -- a run ------------------------------------------------------------------------------------------


async def test_a_run_streams_the_completion_after_the_prompt_and_is_saved(alice, playground, fake):
    fake.pace = 0.01
    socket, connected, _ = await open_playground(alice, playground.code)
    assert connected
    await run(socket, prompt="Once upon a time")
    html = await finished(socket)
    assert '<span id="msg-' in html and 'hx-swap-oob="beforeend">You ' in html  # streamed as deltas
    body = fake.completions()[0].body
    assert fake.completions()[0].path == "/v1/completions"
    assert body == {
        "model": "fake-model",
        "prompt": "Once upon a time",
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": user_id_for_provider(alice.pk),
    }
    [saved] = await the_runs(playground)
    assert saved.prompt.content == "Once upon a time" and saved.params == {}
    [choice] = saved.choices
    assert (choice.content, choice.status, choice.finish_reason) == ("You said: Once upon a time", "complete", "stop")
    assert (choice.prompt_tokens, choice.completion_tokens) == (4, 6)
    # The finished run: the prompt, then the completion where it continues.
    assert '<span class="prompt">Once upon a time</span><span id="msg-' in html
    await sync_to_async(playground.refresh_from_db)()
    assert playground.title == "Once upon a time"
    assert 'id="sidebar-list"' in html and "Once upon a time" in html  # listed like conversations
    await socket.close()


async def test_reopening_shows_the_runs_and_running_again_adds_one(alice, alice_client, playground, fake):
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="First prompt")
    await finished(socket)
    socket.frames.clear()
    await run(socket, prompt="Second prompt")
    await finished(socket)
    await socket.close()
    saved = await the_runs(playground)
    assert [r.prompt.content for r in saved] == ["First prompt", "Second prompt"]
    page = (await sync_to_async(alice_client.get)(f"/c/{playground.code}/")).content.decode()
    assert page.count('class="run"') == 2
    assert "You said: First prompt" in page and "You said: Second prompt" in page
    assert ">Second prompt</textarea>" in page  # the newest prompt is ready to edit and run again


def stream_of(parts, **kwargs):
    return Stream(sse([completion_chunk(p) for p in parts] + [completion_chunk(finish="stop")]), **kwargs)


EVERY_PARAMETER = [
    ("max_tokens", "16", 16),
    ("temperature", "0.7", 0.7),
    ("top_p", "0.9", 0.9),
    ("n", "2", 2),
    ("stop", [r"\n\n", "END", "", ""], ["\n\n", "END"]),
    ("presence_penalty", "-1.5", -1.5),
    ("frequency_penalty", "2", 2.0),
    ("logit_bias", '{"50256": -100, "13": 5}', {"50256": -100, "13": 5}),
    ("seed", "42", 42),
    ("echo", "on", True),
    ("best_of", "3", 3),
    ("logprobs", "0", 0),
    ("logprobs", "5", 5),
    ("suffix", "\nThe end.", "\nThe end."),
]


@pytest.mark.parametrize(("name", "typed", "sent"), EVERY_PARAMETER)
async def test_each_parameter_reaches_the_provider_and_unset_ones_do_not(alice, playground, fake, name, typed, sent):
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="Tell me", **{name: typed})
    await finished(socket)
    body = fake.completions()[0].body
    assert body[name] == sent
    assert COMPLETION_PARAMS & set(body) == {name}, "only the parameter that was set is sent"
    assert body["user"] == user_id_for_provider(alice.pk) and body["prompt"] == "Tell me"
    await sync_to_async(playground.refresh_from_db)()
    assert playground.params == {name: sent}  # saved for the next run
    [saved] = await the_runs(playground)
    assert saved.params == {name: sent}  # and recorded with this run
    await socket.close()


BAD_VALUES = [
    ("max_tokens", "0", "Enter a whole number of at least 1."),
    ("max_tokens", "many", "Enter a whole number, such as 256."),
    ("temperature", "2.5", "Enter a number from 0 to 2."),
    ("top_p", "1.1", "Enter a number from 0 to 1."),
    ("n", "9", "Enter a whole number from 1 to 8."),
    ("stop", ["a", "b", "c", "d", "e"], "At most 4 stop sequences."),
    ("presence_penalty", "-2.1", "Enter a number from -2 to 2."),
    ("frequency_penalty", "lots", "Enter a number, such as 0."),
    ("logit_bias", '{"50256": -101}', "The bias of token 50256 must be a whole number from -100 to 100."),
    ("logit_bias", "{oops", "This is not valid JSON"),
    ("seed", "4.2", "Enter a whole number, such as 42."),
    ("echo", "maybe", "Tick the box or leave it empty."),
    ("best_of", "21", "Enter a whole number from 1 to 20."),
    ("logprobs", "6", "Enter a whole number from 0 to 5."),
]


@pytest.mark.parametrize(("name", "typed", "message"), BAD_VALUES)
async def test_a_bad_value_is_explained_inline_and_nothing_runs(alice, playground, fake, name, typed, message):
    await sync_to_async(Conversation.objects.filter(pk=playground.pk).update)(params={"seed": 7})
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="Keep me", **{name: typed})
    html = await socket.receive_until(f'id="param-{name}-error"')
    error_slot = html.split(f'id="param-{name}-error"')[1].split("</p>")[0]
    assert message in error_slot
    assert "Not saved and not run" in html
    assert 'name="prompt"' not in html and f'name="{name}"' not in html  # the inputs are left as typed
    await asyncio.sleep(0.2)
    assert fake.completions() == []
    assert await Message.objects.filter(conversation=playground).acount() == 0
    await sync_to_async(playground.refresh_from_db)()
    assert playground.params == {"seed": 7}
    await socket.close()


async def test_best_of_must_be_at_least_n(alice, playground, fake):
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, n="3", best_of="2")
    html = await socket.receive_until('id="param-best_of-error"')
    assert "Best of must be at least n (3)." in html.split('id="param-best_of-error"')[1]
    assert fake.completions() == []
    await socket.close()


async def test_an_empty_or_overlong_prompt_is_refused(alice, playground, fake, settings):
    settings.MAX_MESSAGE_CHARS = 50
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="   ")
    assert "Type a prompt first." in await socket.receive_until("Type a prompt")
    await run(socket, prompt="x" * 51)
    assert "the limit is 50" in await socket.receive_until("the limit is")
    assert fake.completions() == [] and await Message.objects.acount() == 0
    await socket.close()


# -- best_of, n, echo, logprobs ----------------------------------------------------------------------


async def test_best_of_is_fetched_whole_and_the_page_says_so(alice, playground, fake):
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="Pick one", best_of="3", n="2")
    started = await socket.receive_until('data-note="fetched_whole"')
    assert "is being fetched at once" in started
    html = await finished(socket)
    request = fake.completions()[0]
    assert "stream" not in request.body and "stream_options" not in request.body
    assert (request.body["best_of"], request.body["n"]) == (3, 2)
    [saved] = await the_runs(playground)
    assert [c.content for c in saved.choices] == ["You said: Pick one", "Choice 1: You said: Pick one"]
    assert saved.notes == [completion.FETCHED_WHOLE]
    assert "this completion was fetched whole, not streamed" in html
    await socket.close()


async def test_best_of_with_a_provider_that_ignores_n_fetches_each_choice_whole(alice, playground, fake):
    answer = {"choices": [{"index": 0, "text": "just one", "finish_reason": "stop"}]}
    fake.push(Reply(200, json.dumps(answer).encode()))  # like llama.cpp: one choice, whatever n says
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="Best two", best_of="4", n="2")
    await finished(socket)
    first, second = fake.completions()
    assert (first.body["n"], first.body["best_of"], "stream" in first.body) == (2, 4, False)
    assert ("n" in second.body, second.body["best_of"], "stream" in second.body) == (False, 4, False)
    [saved] = await the_runs(playground)
    assert [c.content for c in saved.choices] == ["just one", "You said: Best two"]
    assert saved.notes == [completion.FETCHED_WHOLE, completion.ONE_BY_ONE]
    await socket.close()


async def test_n_choices_stream_side_by_side(alice, playground, fake):
    fake.pace = 0.005
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="Two ways", n="2")
    html = await finished(socket)
    [saved] = await the_runs(playground)
    first, second = saved.choices
    assert (first.choice_index, second.choice_index) == (0, 1)
    assert first.content == "You said: Two ways" and second.content == "Choice 1: You said: Two ways"
    assert f'id="msg-{second.pk}-text" hx-swap-oob="beforeend">Choice ' in html  # each choice streams on its own
    assert 'class="choices side-by-side"' in html
    assert saved.notes == []
    # One request's usage (both choices: 4 + 6 tokens) is on choice 0.
    assert [(c.prompt_tokens, c.completion_tokens) for c in saved.choices] == [(2, 10), (None, None)]
    await socket.close()


async def test_a_provider_that_ignores_n_is_asked_for_each_other_choice(alice, playground, fake):
    fake.push(stream_of(["only ", "one"]))  # like llama.cpp: one choice, whatever n says
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="Three please", n="3")
    html = await finished(socket)
    requests = fake.completions()
    assert [r.body.get("n") for r in requests] == [3, None, None]
    [saved] = await the_runs(playground)
    assert [c.content for c in saved.choices] == ["only one", "You said: Three please", "You said: Three please"]
    assert all(c.status == "complete" for c in saved.choices)
    # Usage: the first request sent none (estimated); the others each reported their own.
    assert [(c.prompt_tokens, c.completion_tokens, c.usage_estimated) for c in saved.choices[1:]] == [(2, 4, False)] * 2
    assert saved.choices[0].usage_estimated and saved.choices[0].completion_tokens > 0
    assert saved.notes == [completion.ONE_BY_ONE]
    assert "the others were asked for one request at a time" in html
    await socket.close()


async def test_echo_and_logprobs_are_stored_apart_and_shaded(alice, alice_client, playground, fake):
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="Hello there", echo="on", logprobs="2", max_tokens="3")
    html = await finished(socket)
    body = fake.completions()[0].body
    assert (body["echo"], body["logprobs"], body["max_tokens"]) == (True, 2, 3)
    [saved] = await the_runs(playground)
    [choice] = saved.choices
    assert choice.content == "You said: Hello "  # the echoed prompt is not part of the completion
    assert choice.finish_reason == "length"
    assert saved.prompt.logprobs == [
        {"token": "Hello ", "logprob": None, "top": [], "offset": 0},
        {
            "token": "there",
            "logprob": -0.25,
            "top": [{"token": "there", "logprob": -0.25}, {"token": "alt1", "logprob": -1.25}],
            "offset": 6,
        },
    ]
    assert [(t["token"], t["offset"]) for t in choice.logprobs] == [("You ", 0), ("said: ", 4), ("Hello ", 10)]
    assert choice.logprobs[1]["top"] == [{"token": "said: ", "logprob": -0.25}, {"token": "alt1", "logprob": -1.25}]
    page = (await sync_to_async(alice_client.get)(f"/c/{playground.code}/")).content.decode()
    for text in (html.rsplit('<section id="run-', 1)[1], page):
        # The echoed prompt, shaded token by token (its first token has no probability)...
        echoed = text.split('<span class="prompt echoed"')[1].split('class="completion')[0]
        assert echoed.count('class="lp"') == 2
        assert '--lp-shade: 0"' in echoed and ">Hello <" in echoed and ">there<" in echoed
        # ...then the completion, apart from it: "said: " has p = e^-0.25 = 77.9%, alt1 e^-1.25.
        completion_html = text.split(f'id="msg-{choice.pk}-text"')[1].split("</article>")[0]
        assert completion_html.count('class="lp"') == 3
        assert '--lp-shade: 0.00"' in completion_html and ">You <" in completion_html
        assert '--lp-shade: 0.22"' in completion_html and ">said: <" in completion_html
        assert "77.9%" in completion_html and "<code>alt1</code> 28.7%" in completion_html
    await socket.close()


async def test_echo_that_the_stream_leaves_out_is_fetched_with_one_more_request(alice, playground, fake):
    # llama.cpp's server ignores echo while streaming; its text_offset counts from the prompt's start.
    prompt = "Hi you"
    tokens = ["Hey", " there"]
    chunks = [
        completion_chunk(t, logprobs=token_logprobs([t], len(prompt) + (3 if i else 0), 1))
        for i, t in enumerate(tokens)
    ]
    fake.push(Stream(sse(chunks + [completion_chunk(finish="stop")])))
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt=prompt, echo="on", logprobs="1")
    html = await finished(socket)
    first, second = fake.completions()
    assert first.body["stream"] is True and first.body["echo"] is True
    assert second.body == {
        "model": "fake-model",
        "prompt": prompt,
        "echo": True,
        "logprobs": 1,
        "max_tokens": 1,
        "user": user_id_for_provider(alice.pk),
    }
    [saved] = await the_runs(playground)
    assert saved.choices[0].content == "Hey there"
    assert [(t["token"], t["offset"]) for t in saved.choices[0].logprobs] == [("Hey", 0), (" there", 3)]
    assert [(t["token"], t["offset"]) for t in saved.prompt.logprobs] == [("Hi ", 0), ("you", 3)]
    assert saved.notes == [completion.ECHO_FETCHED]
    assert "fetched with a second, one-token request" in html
    await socket.close()


async def test_echo_without_logprobs_that_is_not_echoed_says_so(alice, playground, fake):
    fake.push(stream_of(["Not ", "echoed"]))
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="Say", echo="on")
    html = await finished(socket)
    assert len(fake.completions()) == 1
    [saved] = await the_runs(playground)
    assert saved.choices[0].content == "Not echoed" and saved.notes == [completion.NO_ECHO]
    final = html.rsplit('<section id="run-', 1)[1]
    assert "The provider did not echo the prompt." in final and "prompt echoed" not in final
    await socket.close()


# -- failures ---------------------------------------------------------------------------------------


async def test_a_refused_connection_is_saved_with_a_clear_message(alice, playground, fake):
    await Provider.objects.filter(pk=playground.provider_id).aupdate(base_url="http://127.0.0.1:9/v1")
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="Anyone there?")
    html = await finished(socket)
    [saved] = await the_runs(playground)
    assert saved.prompt.content == "Anyone there?"  # the prompt is kept
    assert saved.choices[0].status == "error"
    assert "Could not connect to the provider" in saved.choices[0].error
    assert "Could not connect to the provider" in html
    await socket.close()


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(400, b'{"error": {"message": "prompt is too long"}}'), "The provider refused the request (HTTP 400)."),
        (Reply(503, b"", "text/plain"), "The provider had an internal error (HTTP 503)."),
    ],
)
async def test_an_http_error_is_saved_with_a_clear_message(alice, playground, fake, reply, message):
    fake.push(reply)
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="Try")
    html = await finished(socket)
    [saved] = await the_runs(playground)
    assert saved.choices[0].status == "error" and message in saved.choices[0].error
    assert message in html
    await socket.close()


async def test_best_of_errors_are_saved_too(alice, playground, fake):
    fake.push(Close())
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="Try", best_of="2")
    await finished(socket)
    [saved] = await the_runs(playground)
    assert saved.choices[0].status == "error" and saved.choices[0].error
    await socket.close()


async def test_a_cut_stream_keeps_the_partial_completion(alice, playground, fake):
    fake.push(Stream(sse([completion_chunk("partial "), completion_chunk("text")], done=False)))
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="Go", n="2")
    html = await finished(socket)
    [saved] = await the_runs(playground)
    assert [(c.content, c.status) for c in saved.choices] == [("partial text", "interrupted"), ("", "interrupted")]
    assert "ended before the reply was complete" in html
    assert len(fake.completions()) == 1  # no second request after a failure
    await socket.close()


# -- stop, resume, checkpoints, crashes ------------------------------------------------------------------


def slow_completion(words=200, delay=0.02, n=1):
    objs = []
    for _ in range(words):
        objs += [completion_chunk("word ", index=i) for i in range(n)]
    return Stream(sse(objs + [completion_chunk(finish="stop", index=i) for i in range(n)]), delay=delay)


async def test_stop_from_another_tab_cancels_the_request(alice, playground, fake):
    fake.push(slow_completion())
    first, _, _ = await open_playground(alice, playground.code)
    second, _, _ = await open_playground(alice, playground.code)
    await run(first, prompt="Talk")
    await second.receive_until(DELTA + "word")
    await second.send(action="stop")
    await first.receive_until('data-status="stopped"')
    request = fake.completions()[0]
    assert await sync_to_async(request.disconnected.wait, thread_sensitive=False)(2)
    [saved] = await the_runs(playground)
    assert saved.choices[0].status == "stopped" and saved.choices[0].content.startswith("word")
    await first.close()
    await second.close()


async def test_a_page_opened_mid_run_gets_every_choice_without_gap_or_duplicate(alice, playground, fake):
    fake.push(slow_completion(words=60, delay=0.02, n=2))
    first, _, _ = await open_playground(alice, playground.code)
    await run(first, prompt="Race", n="2")
    await first.receive_until(DELTA + "word")
    late, _, _ = await open_playground(alice, playground.code)
    html = await finished(late, timeout=10)
    await finished(first, timeout=10)
    [saved] = await the_runs(playground)
    for choice in saved.choices:
        assert choice.content == "word " * 60
        # What the late page was shown: the snapshot, then the deltas after it.
        snapshot = html.split(f'<span id="msg-{choice.pk}-text" hx-swap-oob="innerHTML">')[1].split("</span>")[0]
        deltas = html.split(f'<span id="msg-{choice.pk}-text" hx-swap-oob="beforeend">')[1:]
        assert snapshot + "".join(d.split("</span>")[0] for d in deltas) == choice.content
    # The stream sent no usage: each choice's text is counted, the prompt once (on choice 0).
    assert [c.usage_estimated for c in saved.choices] == [True, True]
    assert saved.choices[0].prompt_tokens > 0 and saved.choices[1].prompt_tokens == 0
    assert all(c.completion_tokens > 0 for c in saved.choices)
    await first.close()
    await late.close()


async def test_every_choice_is_checkpointed_while_it_streams(alice, playground, fake, settings):
    settings.CHECKPOINT_SECONDS = 0.2
    fake.push(slow_completion(words=100, delay=0.02, n=2))
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="Slowly", n="2")
    await socket.receive_until(DELTA + "word")
    await asyncio.sleep(0.8)
    streaming = [m async for m in Message.objects.filter(role="assistant", status="streaming").order_by("pk")]
    assert len(streaming) == 2 and all(m.content.startswith("word") for m in streaming)
    await socket.send(action="stop")
    await finished(socket)
    await socket.close()


def test_a_run_whose_process_died_is_shown_interrupted(alice_client, playground):
    run_message, choices = playground.start_run("Lost", {"n": 2})
    Message.objects.filter(pk__in=[c.pk for c in choices]).update(
        content="half", heartbeat_at=timezone.now() - timedelta(seconds=60)
    )
    page = alice_client.get(f"/c/{playground.code}/").content.decode()
    assert page.count('data-status="interrupted"') == 2
    assert 'data-busy="false"' in page
    assert (
        list(Message.objects.filter(role="assistant").values_list("status", "content")) == [("interrupted", "half")] * 2
    )


async def test_a_second_run_waits_for_the_first(alice, playground, fake):
    fake.push(slow_completion())
    socket, _, _ = await open_playground(alice, playground.code)
    await run(socket, prompt="One")
    await socket.receive_until(DELTA + "word")
    await run(socket, prompt="Two")
    assert "still running" in await socket.receive_until("still running")
    await socket.send(action="stop")
    await finished(socket)
    assert [r.prompt.content for r in await the_runs(playground)] == ["One"]
    await socket.close()


# -- pieces of text ------------------------------------------------------------------------------------


def test_pieces_follow_text_offset():
    tokens = [
        {"token": "He", "logprob": -0.1, "top": [], "offset": 0},
        {"token": "llo", "logprob": -2.0, "top": [], "offset": 2},
    ]
    assert [(p.text, p.start, p.is_token) for p in pieces("Hello!", tokens)] == [
        ("He", 0, True),
        ("llo", 2, True),
        ("!", 5, False),
    ]
    shown = run_views.shown_tokens("Hello!", tokens)
    assert [(t["token"], t["logprob"], t["offset"]) for t in shown] == [
        ("He", -0.1, 0),
        ("llo", -2.0, 2),
        ("!", None, 5),
    ]


def test_pieces_fall_back_to_the_token_strings_then_to_plain_text():
    scrambled = [{"token": "ab", "logprob": 0.0, "offset": 5}, {"token": "c", "logprob": 0.0, "offset": 1}]
    assert [p.text for p in pieces("abc", scrambled)] == ["ab", "c"]
    assert [(p.text, p.is_token) for p in pieces("xyz", scrambled)] == [("xyz", False)]
    assert pieces("", None) == []


def test_a_completion_chunk_is_parsed_with_its_logprobs():
    obj = completion_chunk(" cat", logprobs=token_logprobs([" cat"], 7, 2), finish="length")
    [choice] = llm.parse_chunk(obj).choices
    assert (choice.content, choice.finish_reason) == (" cat", "length")
    assert choice.logprobs == [
        {
            "token": " cat",
            "logprob": 0.0,
            "top": [{"token": " cat", "logprob": 0.0}, {"token": "alt1", "logprob": -1.0}],
            "offset": 7,
        }
    ]


# -- the real bundled model ------------------------------------------------------------------------------


@pytest.mark.bundled
async def test_the_bundled_model_completes_with_echo_and_logprobs(alice, bundled_provider):
    conversation = await Conversation.objects.acreate(
        owner=alice, provider=bundled_provider, model=bundled_provider.default_model, mode=Conversation.Mode.COMPLETION
    )
    prompt = "The capital of France is"
    socket, connected, _ = await open_playground(alice, conversation.code)
    assert connected
    await run(socket, prompt=prompt, max_tokens="8", logprobs="2", echo="on", seed="7", temperature="0")
    html = await finished(socket, timeout=90)
    [saved] = await the_runs(conversation)
    [choice] = saved.choices
    assert choice.status == "complete", choice.error
    assert choice.content.strip() and not choice.content.startswith(prompt)
    assert choice.finish_reason in ("length", "stop")
    # The completion's tokens, placed by text_offset from the start of the completion.
    assert choice.logprobs and choice.logprobs[0]["offset"] == 0
    assert all(len(t["top"]) >= 1 and t["logprob"] <= 0 for t in choice.logprobs)
    assert "".join(p.text for p in pieces(choice.content, choice.logprobs)) == choice.content
    assert sum(p.is_token for p in pieces(choice.content, choice.logprobs)) >= 2
    # The echoed prompt's tokens (llama.cpp does not echo while streaming: one more request fetched them).
    echoed = saved.prompt.logprobs
    assert echoed, saved.notes
    assert [t["offset"] for t in echoed] == sorted({t["offset"] for t in echoed})
    assert "".join(t["token"] for t in echoed) == prompt
    assert echoed[0]["logprob"] is None and all(t["logprob"] <= 0 for t in echoed[1:])
    final = html.rsplit('<section id="run-', 1)[1]
    assert 'class="prompt echoed"' in final and final.count('class="lp"') == len(echoed) + len(choice.logprobs)
    await socket.close()
