"""Logprobs: stored per token, shown shaded by probability with the top alternatives."""

import math
import re

import pytest

from conversations.models import Conversation
from conversations.providers import client as llm
from conversations.templatetags.reply_extras import logprob_tokens

from .conftest import open_socket, settle, wait_until_done
from .fake_provider import Stream, chat_logprobs, chunk, sse

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = re.compile(r'<span class="lp" style="--lp-shade: ([0-9.]+)" tabindex="(-?\d)"')


async def test_chat_logprobs_are_stored_and_shown(alice, conversation, fake):
    await Conversation.objects.filter(pk=conversation.pk).aupdate(params={"logprobs": True, "top_logprobs": 2})
    tokens = [("Hel", -0.01), ("lo", -2.0), (" <b>", -0.5)]
    objs = [chunk(token, logprobs=chat_logprobs([(token, lp)])) for token, lp in tokens] + [chunk(finish="stop")]
    fake.push(Stream(sse(objs)))
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Say hello")
    (reply,) = await wait_until_done(conversation, 1)
    await settle(socket)
    assert reply.logprobs == [
        {
            "token": "Hel",
            "logprob": -0.01,
            "top": [{"token": "Hel", "logprob": -0.01}, {"token": "alt1", "logprob": -1.01}],
        },
        {"token": "lo", "logprob": -2.0, "top": [{"token": "lo", "logprob": -2.0}, {"token": "alt1", "logprob": -3.0}]},
        {
            "token": " <b>",
            "logprob": -0.5,
            "top": [{"token": " <b>", "logprob": -0.5}, {"token": "alt1", "logprob": -1.5}],
        },
    ]
    body = fake.completions()[0].body
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    html = "".join(socket.frames).split(f'id="msg-{reply.pk}"')[-1]
    shades = TOKEN.findall(html)
    # Shaded by probability: the unlikely "lo" (p = 0.14) is marked much more than the sure "Hel".
    assert [float(shade) for shade, _tab in shades] == [0.01, 0.86, 0.39]
    assert [tab for _shade, tab in shades] == ["0", "-1", "-1"]  # one tab stop; arrows move within
    assert "13.5%" in html and "<code>alt1</code> 36.4%" in html  # the alternatives, in the tooltip
    assert "&lt;b&gt;" in html and "<b>" not in html  # a token is text, never markup
    await socket.close()


async def test_no_logprobs_means_no_token_view(alice, conversation, fake):
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="plain")
    (reply,) = await wait_until_done(conversation, 1)
    await settle(socket)
    assert reply.logprobs is None
    assert 'class="logprobs"' not in "".join(socket.frames)
    await socket.close()


def test_completion_logprobs_are_read_into_the_same_shape_with_offsets():
    parsed = llm.parse_chunk(
        {
            "choices": [
                {
                    "index": 0,
                    "text": "Hi there",
                    "logprobs": {
                        "tokens": ["Hi", " there"],
                        "token_logprobs": [None, -0.5],
                        "top_logprobs": [None, {" here": -1.5, " there": -0.5}],
                        "text_offset": [10, 12],
                    },
                }
            ]
        }
    )
    assert parsed.choices[0].logprobs == [
        {"token": "Hi", "logprob": None, "top": [], "offset": 10},
        {
            "token": " there",
            "logprob": -0.5,
            "top": [{"token": " there", "logprob": -0.5}, {"token": " here", "logprob": -1.5}],
            "offset": 12,
        },
    ]


def test_the_token_view_handles_odd_values():
    views = logprob_tokens([{"token": "a", "logprob": None, "top": []}, {"token": "\n", "logprob": -1e9}, "junk"])
    assert [(v["percent"], v["shade"], v["visible"]) for v in views] == [("–", "0", "a"), ("<0.1%", "1.00", "↵")]
    assert logprob_tokens([{"token": "x", "logprob": 0.0}])[0]["percent"] == "100%"
    assert math.isclose(float(logprob_tokens([{"token": "x", "logprob": math.log(0.25)}])[0]["shade"]), 0.75)


@pytest.mark.bundled
async def test_the_bundled_model_returns_chat_logprobs_and_they_are_shown(alice, bundled_provider):
    conversation = await Conversation.objects.acreate(
        owner=alice,
        provider=bundled_provider,
        model="SmolLM2-135M-Instruct",
        params={"logprobs": True, "top_logprobs": 3, "max_tokens": 8, "seed": 5},
    )
    socket, _, _ = await open_socket(alice, conversation.code)
    await socket.send(message="Say hello.")
    (reply,) = await wait_until_done(conversation, 1, timeout=90)
    await settle(socket)
    assert reply.status == "complete" and reply.content
    assert 0 < len(reply.logprobs) <= 8
    assert all(isinstance(t["logprob"], float) and t["logprob"] <= 0 for t in reply.logprobs)
    assert all(len(t["top"]) == 3 for t in reply.logprobs)
    assert "".join(t["token"] for t in reply.logprobs).strip() == reply.content.strip()
    html = "".join(socket.frames).split(f'id="msg-{reply.pk}"')[-1]
    assert len(TOKEN.findall(html)) == len(reply.logprobs)
    await socket.close()
