"""The provider client: the SSE parser, streaming over a real socket, typed errors, models list."""

import json
import socket
import ssl
import time

import pytest

from conversations.models import Provider
from conversations.providers import client as llm
from conversations.providers import transport
from conversations.providers.client import (
    BadResponse,
    Chunk,
    ProviderError,
    ProviderHTTPError,
    ProviderTimeout,
    ProviderUnreachable,
    SSEDecoder,
    SSEEvent,
    StreamError,
    StreamInterrupted,
    Usage,
)

from .fake_provider import Close, FakeProvider, Hang, Reply, Stream, chunk, sse, text_stream
from .processes import self_signed_certificate

needs_db = pytest.mark.django_db(transaction=True)

PAYLOAD = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}]}
KEY = "sk-test-VERY-SECRET-0123456789"


# --- helpers -----------------------------------------------------------------------------------


def decode(*reads: bytes) -> list[SSEEvent]:
    """Feed the reads to a fresh decoder, then close it; every event, in order."""
    decoder = SSEDecoder()
    events = []
    for read in reads:
        events += decoder.feed(read)
    return events + decoder.close()


def split_at(data: bytes, *cuts: int) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def raw_sse(*objs) -> list[bytes]:
    """Like sse(), but with UTF-8 written as is rather than as \\u escapes."""
    return sse([json.dumps(o, ensure_ascii=False) for o in objs])


def error_body(message: str, code: str | None = None, type_: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


async def collect(provider, payload=None, *, into: list | None = None) -> list[Chunk]:
    """Every chunk of one streamed chat request (appended to `into` as they come, if given)."""
    chunks = [] if into is None else into
    async for item in llm.stream(provider, "/chat/completions", payload or PAYLOAD):
        chunks.append(item)
    return chunks


def text(chunks: list[Chunk]) -> str:
    return "".join(choice.content for item in chunks for choice in item.choices)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def unreachable():
    return await Provider.objects.acreate(name="Nobody home", base_url=f"http://127.0.0.1:{closed_port()}/v1")


@pytest.fixture
async def fresh_client():
    """No pooled client for this event loop yet, so the next one reads the settings as they are now."""
    llm.reset_for_tests()
    yield
    await llm.get_client().aclose()  # the one the test made
    llm.reset_for_tests()


# --- SSEDecoder ---------------------------------------------------------------------------------

WIRE = (
    ": keep-alive\n\n"
    'data: {"a": "café"}\n\n'
    "event: note\r\ndata: line one\r\ndata: line two\r\n\r\n"
    "data:no space 中\r\rid: 7\ndata: 🎉\n\n"
    "data: [DONE]\n\n"
).encode()

WIRE_EVENTS = [
    SSEEvent('{"a": "café"}'),
    SSEEvent("line one\nline two", event="note"),
    SSEEvent("no space 中"),
    SSEEvent("🎉", id="7"),
    SSEEvent("[DONE]", id="7"),
]


def test_it_decodes_a_stream_read_in_one_piece():
    assert decode(WIRE) == WIRE_EVENTS


def test_it_decodes_the_same_events_whichever_byte_a_read_ends_on():
    for cut in range(len(WIRE) + 1):
        assert decode(WIRE[:cut], WIRE[cut:]) == WIRE_EVENTS, f"split at byte {cut}"


def test_it_decodes_the_same_events_from_one_byte_reads():
    assert decode(*(WIRE[i : i + 1] for i in range(len(WIRE)))) == WIRE_EVENTS


def test_it_dispatches_each_event_as_soon_as_its_blank_line_arrives():
    decoder = SSEDecoder()
    seen = []
    for i in range(len(WIRE)):
        seen += [(i, event) for event in decoder.feed(WIRE[i : i + 1])]
    assert decoder.close() == []
    ends = [i for i in range(len(WIRE)) if WIRE[i] in b"\r\n" and i and WIRE[i - 1] in b"\r\n"]
    ends = [i for i in ends if WIRE[i - 1 : i + 1] != b"\r\n"]  # the \n of a \r\n ends no line
    assert [i for i, _ in seen] == ends[1:]  # the first blank line ends only a comment
    assert [event for _, event in seen] == WIRE_EVENTS


@pytest.mark.parametrize("char", ["é", "中", "🎉"])
def test_it_joins_a_utf8_character_split_across_reads(char):
    data = f"data: a{char}b\n\n".encode()
    start = data.index(char.encode())
    for cut in range(start + 1, start + len(char.encode())):
        assert decode(data[:cut], data[cut:]) == [SSEEvent(f"a{char}b")]
    assert decode(*(data[i : i + 1] for i in range(len(data)))) == [SSEEvent(f"a{char}b")]


def test_it_accepts_crlf_line_endings():
    assert decode(b"data: a\r\n\r\ndata: b\r\n\r\n") == [SSEEvent("a"), SSEEvent("b")]


def test_it_skips_a_byte_order_mark_at_the_start():
    assert decode(b"\xef\xbb", b"\xbfdata: a\n\n") == [SSEEvent("a")]


def test_it_accepts_bare_cr_line_endings():
    assert decode(b"data: a\r\rdata: b\r\r") == [SSEEvent("a"), SSEEvent("b")]


def test_it_reads_a_crlf_split_between_two_reads_as_one_line_end():
    # Two line ends there would be a blank line, and split one event in two.
    assert decode(b"data: a\r", b"\ndata: b\r\n\r\n") == [SSEEvent("a\nb")]
    assert decode(b"data: a\r\n\r", b"\ndata: b\r\n\r\n") == [SSEEvent("a"), SSEEvent("b")]


def test_it_dispatches_an_event_ended_by_bare_cr_without_waiting_for_the_next_read():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == [SSEEvent("a")]
    assert decoder.feed(b"data: b\r") == []
    assert decoder.feed(b"\r") == [SSEEvent("b")]
    assert decoder.feed(b"\ndata: c\n\n") == [SSEEvent("c")]


def test_it_ignores_comment_lines():
    assert decode(b": keep-alive\n\n: ping\ndata: x\n: another\n\n") == [SSEEvent("x")]


def test_it_accepts_data_with_and_without_the_space():
    assert decode(b"data: one\n\ndata:two\n\ndata:  three\n\n") == [
        SSEEvent("one"),
        SSEEvent("two"),
        SSEEvent(" three"),  # only one space is part of the syntax
    ]


def test_it_joins_multi_line_data_with_newlines():
    assert decode(b'data: {\ndata:   "k": 1\ndata: }\n\n') == [SSEEvent('{\n  "k": 1\n}')]


def test_it_flushes_an_unterminated_last_event_on_close():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: first\n\ndata: last") == [SSEEvent("first")]
    assert decoder.close() == [SSEEvent("last")]


def test_it_flushes_an_event_missing_only_its_blank_line_on_close():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: last\n") == []
    assert decoder.close() == [SSEEvent("last")]


# --- stream() over the wire -------------------------------------------------------------------


@needs_db
async def test_it_streams_typed_chunks(provider, fake):
    fake.push(Stream(text_stream(["Hel", "lo"]), delay=0.01))
    chunks = await collect(provider)
    assert text(chunks) == "Hello"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[0].model == "fake-model"
    body = fake.completions()[0].body
    assert body["stream"] is True and body["messages"] == PAYLOAD["messages"]


@needs_db
async def test_it_joins_utf8_characters_split_between_network_writes(provider, fake):
    wire = b"".join(raw_sse(chunk("café 中 🎉"), chunk(finish="stop")))
    cuts = [wire.index("é".encode()) + 1, wire.index("中".encode()) + 2, wire.index("🎉".encode()) + 3]
    fake.push(Stream(split_at(wire, *cuts), delay=0.02))
    assert text(await collect(provider)) == "café 中 🎉"


@needs_db
async def test_it_streams_crlf_events_even_with_a_crlf_split_between_writes(provider, fake):
    wire = b"".join(text_stream(["Hello", " world"], eol="\r\n"))
    cuts = [i + 1 for i in range(len(wire)) if wire[i : i + 2] == b"\r\n"]
    fake.push(Stream(split_at(wire, *cuts), delay=0.005))
    chunks = await collect(provider)
    assert text(chunks) == "Hello world"
    assert len(chunks) == 3  # no event was cut in two or lost


@needs_db
async def test_it_delivers_a_bare_cr_event_before_the_providers_next_write(provider, fake):
    first, *rest = text_stream(["now", " later"], eol="\r")
    fake.push(Stream([first, *rest], delay=1.5))
    started = time.monotonic()
    chunks = llm.stream(provider, "/chat/completions", PAYLOAD)
    try:
        assert text([await anext(chunks)]) == "now"
        assert time.monotonic() - started < 1.0  # not held back until " later" comes
    finally:
        await chunks.aclose()


@needs_db
async def test_it_streams_data_lines_without_the_space(provider, fake):
    fake.push(Stream(text_stream(["no", " space"], space=False)))
    assert text(await collect(provider)) == "no space"


@needs_db
async def test_it_skips_keep_alive_comments(provider, fake):
    pieces = text_stream(["a", "b"])
    fake.push(Stream([b": keep-alive\n\n", pieces[0], b": keep-alive\n\n", *pieces[1:]], delay=0.01))
    assert text(await collect(provider)) == "ab"


@needs_db
async def test_it_reads_usage_from_a_chunk_with_no_choices(provider, fake):
    usage = {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
    fake.push(Stream(text_stream(["a", "b"], usage=usage)))
    chunks = await collect(provider)
    assert text(chunks) == "ab"
    assert chunks[-1].choices == [] and chunks[-1].usage == Usage(prompt_tokens=12, completion_tokens=2)


@needs_db
async def test_it_stops_at_done_even_if_more_follows(provider, fake):
    after = b"data: " + json.dumps(chunk("AFTER", finish="stop")).encode() + b"\n\n"
    fake.push(Stream([*sse([chunk("a"), chunk("b")]), after]))  # [DONE] with no finish reason
    assert text(await collect(provider)) == "ab"


@needs_db
async def test_it_raises_stream_interrupted_when_the_stream_stops_before_the_end(provider, fake):
    fake.push(Stream(sse([chunk("Hal"), chunk("f a re")], done=False)))
    got = []
    with pytest.raises(StreamInterrupted):
        await collect(provider, into=got)
    assert text(got) == "Half a re"  # what came before is still delivered


@needs_db
async def test_it_completes_without_done_when_a_finish_reason_came(provider, fake):
    fake.push(Stream(text_stream(["whole"], finish="length", done=False)))
    chunks = await collect(provider)
    assert text(chunks) == "whole" and chunks[-1].choices[0].finish_reason == "length"


@needs_db
async def test_it_raises_stream_error_with_the_providers_message_for_an_error_mid_stream(provider, fake):
    error = {"error": {"message": "The model is overloaded, try again", "type": "server_error", "code": "overloaded"}}
    fake.push(Stream(sse([chunk("part"), error, chunk(finish="stop")])))
    got = []
    with pytest.raises(StreamError) as caught:
        await collect(provider, into=got)
    assert text(got) == "part"
    assert caught.value.message == "The model is overloaded, try again"
    assert caught.value.code == "overloaded"
    assert "The model is overloaded, try again" in caught.value.user_message


@needs_db
async def test_it_raises_bad_response_for_data_that_is_not_json(provider, fake):
    fake.push(Stream(sse(["<html>oops</html>"])))
    with pytest.raises(BadResponse) as caught:
        await collect(provider)
    assert "not JSON" in caught.value.message


# --- HTTP errors ----------------------------------------------------------------------------------


async def http_error(provider, fake, reply: Reply) -> ProviderHTTPError:
    fake.push(reply)
    with pytest.raises(ProviderHTTPError) as caught:
        await collect(provider)
    return caught.value


@needs_db
async def test_it_explains_a_401_with_the_providers_message_and_code(provider, fake):
    body = error_body("Incorrect API key provided.", "invalid_api_key")
    error = await http_error(provider, fake, Reply(401, body))
    assert (error.status, error.code, error.message) == (401, "invalid_api_key", "Incorrect API key provided.")
    assert "API key" in error.user_message and "401" in error.user_message
    assert "Incorrect API key provided." in error.user_message


@needs_db
async def test_it_explains_a_429(provider, fake):
    body = error_body("Rate limit reached for requests", "rate_limit_exceeded", "requests")
    error = await http_error(provider, fake, Reply(429, body))
    assert (error.status, error.code) == (429, "rate_limit_exceeded")
    assert "rate limit" in error.user_message.lower() and "Rate limit reached for requests" in error.user_message


@needs_db
async def test_it_names_the_title_of_an_html_error_page(provider, fake):
    page = b"<!DOCTYPE html><html><head><title>Oops &amp; Sorry:\n  Internal Error</title></head><body>x</body></html>"
    error = await http_error(provider, fake, Reply(500, page, content_type="text/html; charset=utf-8"))
    assert error.status == 500
    assert "Oops & Sorry: Internal Error" in error.message
    assert "<" not in error.message
    assert "HTTP 500" in error.user_message


@needs_db
async def test_it_explains_a_502_with_an_empty_body(provider, fake):
    error = await http_error(provider, fake, Reply(502, b"", content_type="text/plain"))
    assert error.status == 502 and error.message
    assert "HTTP 502" in error.user_message


@needs_db
async def test_it_explains_an_exceeded_context_window_in_plain_words(provider, fake):
    message = "This model's maximum context length is 8192 tokens. However, your messages resulted in 9001 tokens."
    error = await http_error(provider, fake, Reply(400, error_body(message, "context_length_exceeded")))
    assert (error.status, error.code) == (400, "context_length_exceeded")
    assert "no longer fits in the model's context window" in error.user_message
    assert "start a new chat" in error.user_message


@needs_db
@pytest.mark.parametrize(
    "answer",
    [
        Reply(401, error_body(f"Incorrect API key provided: {KEY}.", "invalid_api_key")),
        Reply(403, f"<html><title>Forbidden for {KEY}</title></html>".encode(), content_type="text/html"),
        Reply(400, f"bad key {KEY}".encode(), content_type="text/plain"),
        Stream(sse([chunk("a"), {"error": {"message": f"key {KEY} has no quota"}}])),
    ],
    ids=["json", "html", "text", "mid-stream"],
)
async def test_it_never_repeats_the_api_key_the_provider_echoes(provider, fake, answer):
    provider.api_key = KEY
    await provider.asave()
    fake.push(answer)
    with pytest.raises(ProviderError) as caught:
        await collect(provider)
    assert fake.completions()[0].headers["authorization"] == f"Bearer {KEY}"  # it was sent
    error = caught.value
    for shown in (error.message, error.user_message, str(error)):
        assert KEY not in shown and "VERY-SECRET" not in shown
    assert "[redacted]" in error.message


# --- stream_options ----------------------------------------------------------------------------------


@needs_db
async def test_it_asks_for_usage_in_the_stream(provider, fake):
    await collect(provider)
    assert fake.completions()[0].body["stream_options"] == {"include_usage": True}


@needs_db
async def test_it_retries_without_stream_options_when_the_provider_rejects_them(provider, fake):
    rejection = error_body("Unrecognized request argument supplied: stream_options")
    fake.push(Reply(400, rejection), Stream(text_stream(["fine"])))
    assert text(await collect(provider)) == "fine"
    first, retry = fake.completions()
    assert first.body["stream_options"] == {"include_usage": True}
    assert "stream_options" not in retry.body and retry.body["messages"] == PAYLOAD["messages"]
    assert (await Provider.objects.aget(pk=provider.pk)).supports_stream_usage is False

    llm.reset_for_tests()  # as after a restart: only the database row remembers
    assert text(await collect(await Provider.objects.aget(pk=provider.pk))) == "You said: Hi"
    assert len(fake.completions()) == 3
    assert "stream_options" not in fake.completions()[2].body


@needs_db
async def test_it_retries_only_once_when_the_retry_fails_too(provider, fake):
    rejection = error_body("Unrecognized request argument supplied: stream_options")
    fake.push(Reply(400, rejection), Reply(400, error_body("model is required")))
    with pytest.raises(ProviderHTTPError) as caught:
        await collect(provider)
    assert caught.value.message == "model is required"
    assert len(fake.completions()) == 2


# --- connection failures ----------------------------------------------------------------------------


@needs_db
async def test_it_raises_unreachable_when_the_connection_is_refused(unreachable):
    with pytest.raises(ProviderUnreachable) as caught:
        await collect(unreachable)
    assert unreachable.endpoint in caught.value.message


@needs_db
async def test_it_raises_timeout_when_the_provider_says_nothing(provider, fake, settings, fresh_client):
    settings.LLM_READ_TIMEOUT = 0.3  # read when this loop's client is created, just below
    fake.push(Hang(seconds=5))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        await collect(provider)
    assert time.monotonic() - started < 3
    assert "0.3 s" in caught.value.message


@needs_db
async def test_it_raises_a_provider_error_when_the_connection_closes_unanswered(provider, fake):
    fake.push(Close())
    with pytest.raises(ProviderError) as caught:
        await collect(provider)
    assert caught.value.message and type(caught.value) is not ProviderError


# --- list_models, post_json -----------------------------------------------------------------------------


def model_requests(fake):
    return [r for r in fake.requests if r.method == "GET" and r.path.endswith("/models")]


@needs_db
async def test_it_lists_model_ids_sorted_and_caches_them(provider, fake):
    fake.models = ["zeta", "alpha", "mid"]
    assert await llm.list_models(provider) == ["alpha", "mid", "zeta"]
    fake.models = ["changed"]
    assert await llm.list_models(provider) == ["alpha", "mid", "zeta"]
    assert len(model_requests(fake)) == 1


@needs_db
async def test_it_raises_unreachable_when_listing_models_from_a_closed_port(unreachable):
    with pytest.raises(ProviderUnreachable):
        await llm.list_models(unreachable)


@needs_db
async def test_it_posts_json_and_returns_the_answer(provider, fake):
    answer = await llm.post_json(provider, "/chat/completions", PAYLOAD)
    assert answer["choices"][0]["message"]["content"] == "You said: Hi"
    request = fake.completions()[0]
    assert request.method == "POST" and request.body == PAYLOAD


@needs_db
async def test_it_raises_a_typed_error_when_a_post_fails(provider, fake):
    fake.push(Reply(404, error_body("The model `nope` does not exist", "model_not_found")))
    with pytest.raises(ProviderHTTPError) as caught:
        await llm.post_json(provider, "/chat/completions", {**PAYLOAD, "model": "nope"})
    assert (caught.value.status, caught.value.code) == (404, "model_not_found")
    assert "does not exist" in caught.value.user_message and "404" in caught.value.user_message


@pytest.mark.django_db(transaction=True)
async def test_it_skips_an_empty_data_event(provider, fake):
    fake.push(Stream([b"data:\n\n", *text_stream(["ok"])]))
    chunks = [c async for c in llm.stream(provider, "/chat/completions", {"model": "m", "messages": []})]
    assert "".join(c.content for chunk in chunks for c in chunk.choices) == "ok"


# --- the network backend (providers/transport.py) --------------------------------------------------


async def test_the_client_reads_through_asyncio_streams_not_anyio(fresh_client):
    pool = llm.get_client()._transport._pool  # type: ignore[attr-defined]
    assert isinstance(pool._network_backend, transport.AsyncioBackend)


@pytest.fixture
def tls_fake(tmp_path, monkeypatch):
    """The fake provider over HTTPS with a self-signed certificate for 127.0.0.1, which httpx trusts
    through SSL_CERT_FILE (as an operator would point it at a private CA)."""
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    server = FakeProvider(tls=context).start()
    yield server
    server.stop()


@needs_db
async def test_it_streams_over_https(tls_fake, fresh_client):
    provider = await Provider.objects.acreate(name="TLS", base_url=tls_fake.base_url, default_model="fake-model")
    assert provider.base_url.startswith("https://")
    tls_fake.push(Stream(text_stream(["Sec", "ure"]), delay=0.01))
    assert text(await collect(provider)) == "Secure"
    tls_fake.push(Stream(text_stream(["again"])))  # the pooled TLS connection is used again
    assert text(await collect(provider)) == "again"


@needs_db
async def test_a_certificate_it_does_not_trust_is_a_clear_connection_error(tls_fake, fresh_client, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE")
    llm.reset_for_tests()
    provider = await Provider.objects.acreate(name="TLS", base_url=tls_fake.base_url, default_model="fake-model")
    with pytest.raises(ProviderUnreachable) as caught:
        await collect(provider)
    assert "127.0.0.1" in caught.value.user_message
