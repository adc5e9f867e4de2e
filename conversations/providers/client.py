"""The one module that speaks HTTP to providers.

A shared httpx.AsyncClient per event loop, an incremental Server-Sent Events parser, typed
chunk events and typed errors. Nothing else in the project imports httpx.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import re
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from html import unescape

import httpx
from django.conf import settings
from django.core.cache import cache
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext

from conversations.providers import transport

log = logging.getLogger(__name__)


def user_id_for_provider(user_id: int) -> str:
    """A stable id for the account that cannot be turned back into it (the `user` parameter)."""
    return salted_hmac("conversations.provider-user", str(user_id)).hexdigest()[:32]


# --- Errors --------------------------------------------------------------------------------


class ProviderError(Exception):
    """A provider failed; `message` is safe to show to the user (no key, plain words)."""

    kind = "error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    @property
    def user_message(self) -> str:
        return self.message


class ProviderUnreachable(ProviderError):
    kind = "unreachable"


class ProviderTimeout(ProviderError):
    kind = "timeout"


class ProviderHTTPError(ProviderError):
    kind = "http"

    @property
    def user_message(self) -> str:
        if self.code == "context_length_exceeded" or "context length" in self.message.lower():
            return gettext(
                "This conversation no longer fits in the model's context window, even after leaving "
                "out older messages. Shorten your message, lower max_tokens, or start a new chat. "
                "(Provider said: %(message)s)"
            ) % {"message": self.message}
        prefix = {
            401: gettext("The provider rejected the API key (HTTP 401)."),
            403: gettext("The provider refused access (HTTP 403)."),
            404: gettext("The provider does not know this model or endpoint (HTTP 404)."),
            429: gettext("The provider is rate limiting or out of quota (HTTP 429). Wait a moment and retry."),
        }.get(self.status or 0)
        if prefix is None:
            if (self.status or 0) >= 500:
                prefix = gettext("The provider had an internal error (HTTP %(status)s).") % {"status": self.status}
            else:
                prefix = gettext("The provider refused the request (HTTP %(status)s).") % {"status": self.status}
        return f"{prefix} {self.message}".strip()


class StreamError(ProviderError):
    """The provider reported an error in the middle of a stream."""

    kind = "stream"

    @property
    def user_message(self) -> str:
        return gettext("The provider reported an error while replying: %(message)s") % {"message": self.message}


class StreamInterrupted(ProviderError):
    """The stream ended without [DONE] or a finish reason."""

    kind = "interrupted"


class BadResponse(ProviderError):
    """The provider sent something that is not the OpenAI wire format."""

    kind = "garbage"


# --- Server-Sent Events ----------------------------------------------------------------------


@dataclass
class SSEEvent:
    data: str
    event: str = ""
    id: str = ""


class SSEDecoder:
    """Turn network reads into events, whatever the reads' boundaries (WHATWG SSE rules)."""

    def __init__(self):
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._id = ""
        self._after_cr = False  # the last read ended with \r, so a \n opening the next one ends no line

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        text = self._utf8.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")  # a byte-order mark may open the stream
        return self._lines(self._pending + text)

    def close(self) -> list[SSEEvent]:
        """Flush what is left when the stream ends (an unterminated last event counts)."""
        return self._lines(self._pending + self._utf8.decode(b"", final=True) + "\n\n")

    def _lines(self, text: str) -> list[SSEEvent]:
        if text and self._after_cr:
            # A \r ending the last read was a whole line end (so its event went out at once);
            # a \n here is its second half, not another line end.
            self._after_cr = False
            text = text.removeprefix("\n")
        events: list[SSEEvent] = []
        start = 0
        while True:
            match = _LINE_END.search(text, start)
            if match is None:
                break
            event = self._line(text[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._pending = text[start:]
        if text.endswith("\r"):
            self._after_cr = True
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent(data="\n".join(self._data), event=self._event, id=self._id)
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            return None  # comment, e.g. ": keep-alive"
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


_LINE_END = re.compile(r"\r\n|\r|\n")


# --- Typed chunks ------------------------------------------------------------------------------


@dataclass
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class ToolCallDelta:
    """A fragment of one tool call: `index` says which call; name and arguments arrive in pieces."""

    index: int = 0
    id: str = ""
    type: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class ChoiceDelta:
    index: int = 0
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    # Per token: {"token", "logprob", "top": [{"token", "logprob"}...]}, plus "offset" for completions.
    logprobs: list[dict] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class Chunk:
    choices: list[ChoiceDelta]
    usage: Usage | None = None
    model: str = ""


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _int(value, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def parse_tool_calls(raw) -> list[ToolCallDelta]:
    calls = []
    for position, item in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(item, dict):
            continue
        function = item.get("function")
        if not isinstance(function, dict):
            function = {}
        calls.append(
            ToolCallDelta(
                index=_int(item.get("index"), position),
                id=_text(item.get("id")),
                type=_text(item.get("type")),
                name=_text(function.get("name")),
                arguments=_text(function.get("arguments")),
            )
        )
    return calls


def parse_logprobs(raw) -> list[dict]:
    """Token log-probabilities in one shape for both endpoints.

    Chat: {"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]}.
    Completions: {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}.
    """
    if not isinstance(raw, dict):
        return []
    tokens = []
    if isinstance(raw.get("content"), list):
        for item in raw["content"]:
            if not isinstance(item, dict):
                continue
            top = [
                {"token": _text(alt.get("token")), "logprob": _number(alt.get("logprob"))}
                for alt in item.get("top_logprobs") or []
                if isinstance(alt, dict)
            ]
            tokens.append({"token": _text(item.get("token")), "logprob": _number(item.get("logprob")), "top": top})
    elif isinstance(raw.get("tokens"), list):
        logprobs = raw.get("token_logprobs") or []
        tops = raw.get("top_logprobs") or []
        offsets = raw.get("text_offset") or []
        for i, token in enumerate(raw["tokens"]):
            top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
            entry = {
                "token": _text(token),
                "logprob": _number(logprobs[i]) if i < len(logprobs) else None,
                "top": sorted(
                    ({"token": str(t), "logprob": _number(lp)} for t, lp in top.items()),
                    key=lambda alt: alt["logprob"] if alt["logprob"] is not None else float("-inf"),
                    reverse=True,
                ),
            }
            if i < len(offsets) and isinstance(offsets[i], int):
                entry["offset"] = offsets[i]
            tokens.append(entry)
    return tokens


def parse_chunk(obj: dict) -> Chunk:
    choices = []
    for raw in obj.get("choices") or []:
        if not isinstance(raw, dict):
            continue
        # Streams send a delta; whole (non-streamed) answers a message.
        delta = raw.get("delta") or raw.get("message") or {}
        if not isinstance(delta, dict):
            delta = {}
        # /v1/completions streams {"text": ...} instead of a delta.
        content = delta.get("content") if delta else raw.get("text")
        choices.append(
            ChoiceDelta(
                index=_int(raw.get("index")),
                content=_text(content),
                reasoning=_text(delta.get("reasoning_content")) or _text(delta.get("reasoning")),
                tool_calls=parse_tool_calls(delta.get("tool_calls")),
                logprobs=parse_logprobs(raw.get("logprobs")),
                finish_reason=raw.get("finish_reason") or None,
            )
        )
    usage = None
    if isinstance(obj.get("usage"), dict):
        usage = Usage(obj["usage"].get("prompt_tokens"), obj["usage"].get("completion_tokens"))
    return Chunk(choices=choices, usage=usage, model=obj.get("model") or "")


# --- The client --------------------------------------------------------------------------------

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def get_client() -> httpx.AsyncClient:
    """One pooled client per event loop (an httpx client cannot cross loops)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.LLM_CONNECT_TIMEOUT, read=settings.LLM_READ_TIMEOUT, write=30, pool=30
            ),
            limits=httpx.Limits(max_connections=2000, max_keepalive_connections=200),
            follow_redirects=False,
        )
        transport.install(client)  # asyncio streams instead of anyio: reading per token costs less
        _clients[loop] = client
    return client


def _headers(provider) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if provider.api_key:
        headers["Authorization"] = f"Bearer {provider.api_key}"
    return headers


def _redact(text: str, provider) -> str:
    if provider.api_key and len(provider.api_key) >= 4:
        text = text.replace(provider.api_key, "[redacted]")
    return text


def error_from_response(status: int, body: bytes, content_type: str, provider) -> ProviderHTTPError:
    """Build a typed error from an HTTP error answer whose body is JSON, HTML or empty."""
    text = body.decode("utf-8", errors="replace").strip()
    message, code = "", None
    if text.startswith(("{", "[")):
        try:
            message, code = _error_fields(json.loads(text))
        except ValueError:
            message = ""
    if not message:
        if "html" in content_type or text.lower().startswith(("<!doctype", "<html")):
            title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
            if title:
                title_text = " ".join(unescape(title.group(1)).split())[:120]
                message = gettext("It answered with an HTML page titled “%(title)s”.") % {"title": title_text}
            else:
                message = gettext("It answered with an HTML page.")
        elif text:
            message = " ".join(text.split())[:300]
        else:
            message = gettext("It gave no details.")
    return ProviderHTTPError(_redact(message, provider), status=status, code=code)


def _error_fields(obj) -> tuple[str, str | None]:
    if isinstance(obj, dict):
        error = obj.get("error", obj.get("detail", obj))
        if isinstance(error, dict):
            code = error.get("code") or error.get("type")
            return str(error.get("message") or error.get("msg") or ""), (str(code) if code else None)
        if isinstance(error, str):
            return error, None
        if isinstance(error, list) and error:  # FastAPI validation errors
            first = error[0]
            return str(first.get("msg", first) if isinstance(first, dict) else first), None
    return "", None


_stream_usage_rejected: set[tuple[int, str]] = set()


def reset_for_tests() -> None:
    """Forget what this process learned: providers that reject stream_options, and its pooled clients.

    For tests: the next request reads the settings as they are now and asks for usage again
    (the database row, `Provider.supports_stream_usage`, still remembers).
    """
    _stream_usage_rejected.clear()
    _clients.clear()


async def _remember_no_stream_usage(provider) -> None:
    _stream_usage_rejected.add((provider.pk, provider.endpoint))
    provider.supports_stream_usage = False
    await type(provider).objects.filter(pk=provider.pk).aupdate(supports_stream_usage=False)


def _rejects_stream_options(error: ProviderHTTPError) -> bool:
    return error.status in (400, 422) and "stream_options" in error.message


async def stream(provider, path: str, payload: dict) -> AsyncGenerator[Chunk, None]:
    """POST a streamed request and yield typed chunks until the provider is done.

    Raises a ProviderError subclass for every failure, including a stream that just stops.
    """
    async with contextlib.aclosing(stream_batches(provider, path, payload)) as batches:
        async for batch in batches:
            for chunk in batch:
                yield chunk


async def stream_batches(provider, path: str, payload: dict) -> AsyncGenerator[list[Chunk], None]:
    """Like stream(), but one list of chunks per network read.

    A caller that does some work per read instead of per chunk (publishing, waking a task) does
    it once for everything that arrived together; one that reads less often under load gets
    everything that queued up in the meantime as one list.
    """
    for attempt in range(2):
        body = {**payload, "stream": True}
        want_usage = (
            attempt == 0
            and provider.supports_stream_usage is not False
            and (provider.pk, provider.endpoint) not in _stream_usage_rejected
        )
        if want_usage:
            body["stream_options"] = {"include_usage": True}
        try:
            async with get_client().stream(
                "POST", provider.endpoint + path, json=body, headers=_headers(provider)
            ) as response:
                if response.status_code >= 400:
                    error = error_from_response(
                        response.status_code,
                        await response.aread(),
                        response.headers.get("content-type", ""),
                        provider,
                    )
                    if want_usage and _rejects_stream_options(error):
                        log.info("Provider %s rejects stream_options; retrying without it", provider.name)
                        await _remember_no_stream_usage(provider)
                        continue
                    raise error
                async with contextlib.aclosing(_read_batches(response, provider)) as batches:
                    async for batch in batches:
                        yield batch
                return
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(_timeout_message(exc)) from exc
        except (httpx.ConnectError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ProviderUnreachable(_unreachable_message(provider, exc)) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise StreamInterrupted(
                gettext("The provider closed the connection before the reply was complete.")
            ) from exc
        except httpx.DecodingError as exc:
            raise BadResponse(gettext("The provider's answer could not be decoded.")) from exc
        except httpx.TransportError as exc:
            raise ProviderUnreachable(
                gettext("The connection to the provider failed (%(error)s).") % {"error": type(exc).__name__}
            ) from exc


def _timeout_message(exc: httpx.TimeoutException) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return gettext("The provider did not accept the connection within %(seconds)s s.") % {
            "seconds": settings.LLM_CONNECT_TIMEOUT
        }
    return gettext("The provider sent nothing for %(seconds)s s, so the request was abandoned.") % {
        "seconds": settings.LLM_READ_TIMEOUT
    }


def _unreachable_message(provider, exc: Exception) -> str:
    return gettext("Could not connect to the provider at %(endpoint)s (%(error)s).") % {
        "endpoint": provider.endpoint,
        "error": type(exc).__name__,
    }


async def _read_batches(response: httpx.Response, provider) -> AsyncGenerator[list[Chunk], None]:
    """The chunks of each network read, as one list (never an empty one)."""
    decoder = SSEDecoder()
    finished = False
    async for raw in response.aiter_bytes():
        batch: list[Chunk] = []
        for event in decoder.feed(raw):
            try:
                chunk = _decode_event(event, provider)
            except ProviderError:
                if batch:
                    yield batch  # what came before the error still counts
                raise
            if chunk is None:
                if batch:
                    yield batch
                return
            finished = finished or any(c.finish_reason for c in chunk.choices)
            batch.append(chunk)
        if batch:
            yield batch
    batch = []
    done = False
    for event in decoder.close():  # an unterminated last event
        try:
            chunk = _decode_event(event, provider)
        except ProviderError:
            if batch:
                yield batch
            raise
        if chunk is None:
            done = True
            break
        finished = finished or any(c.finish_reason for c in chunk.choices)
        batch.append(chunk)
    if batch:
        yield batch
    if not done and not finished:
        raise StreamInterrupted(gettext("The provider's stream ended before the reply was complete."))


def _decode_event(event: SSEEvent, provider) -> Chunk | None:
    """Return the chunk in one event, or None for [DONE]."""
    data = event.data.strip()
    if data == "[DONE]":
        return None
    if not data:
        return Chunk(choices=[])  # an empty event carries nothing
    try:
        obj = json.loads(data)
    except ValueError:
        raise BadResponse(gettext("The provider sent data that is not JSON: %(data)r") % {"data": data[:80]}) from None
    if not isinstance(obj, dict):
        raise BadResponse(gettext("The provider sent an unexpected event."))
    if obj.get("error") or event.event == "error":
        message, code = _error_fields(obj)
        raise StreamError(_redact(message or gettext("unknown error"), provider), code=code)
    return parse_chunk(obj)


async def post_json(provider, path: str, payload: dict) -> dict:
    """POST a non-streamed request and return the decoded JSON answer."""
    try:
        response = await get_client().post(provider.endpoint + path, json=payload, headers=_headers(provider))
    except httpx.TimeoutException as exc:
        raise ProviderTimeout(_timeout_message(exc)) from exc
    except httpx.TransportError as exc:
        raise ProviderUnreachable(_unreachable_message(provider, exc)) from exc
    if response.status_code >= 400:
        raise error_from_response(
            response.status_code, response.content, response.headers.get("content-type", ""), provider
        )
    try:
        obj = response.json()
    except ValueError:
        raise BadResponse(gettext("The provider's answer is not JSON.")) from None
    if isinstance(obj, dict) and obj.get("error"):
        message, code = _error_fields(obj)
        raise ProviderHTTPError(_redact(message, provider), status=response.status_code, code=code)
    return obj


async def list_models(provider) -> list[str]:
    """Model ids from GET /models, cached briefly."""
    key = f"llm:models:{provider.pk}:{provider.endpoint}"
    cached = await cache.aget(key)
    if cached is not None:
        return cached
    try:
        response = await get_client().get(provider.endpoint + "/models", headers=_headers(provider))
    except httpx.TimeoutException as exc:
        raise ProviderTimeout(_timeout_message(exc)) from exc
    except httpx.TransportError as exc:
        raise ProviderUnreachable(_unreachable_message(provider, exc)) from exc
    if response.status_code >= 400:
        raise error_from_response(
            response.status_code, response.content, response.headers.get("content-type", ""), provider
        )
    try:
        data = response.json().get("data", [])
        models = sorted(str(item["id"]) for item in data if isinstance(item, dict) and item.get("id"))
    except (ValueError, AttributeError, KeyError):
        raise BadResponse(gettext("The provider's model list is not in the OpenAI format.")) from None
    await cache.aset(key, models, settings.MODELS_CACHE_SECONDS)
    return models


async def count_tokens(provider, text: str) -> int | None:
    """Ask a llama.cpp server to count tokens (its /extras/tokenize/count); None elsewhere."""
    if not provider.is_bundled:
        return None
    root = provider.endpoint.removesuffix("/v1")
    try:
        response = await get_client().post(root + "/extras/tokenize/count", json={"input": text})
        response.raise_for_status()
        return int(response.json()["count"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def estimate_tokens(text: str) -> int:
    """A cautious token estimate for trimming: about 3 bytes a token (most tokenizers do better)."""
    return len(text.encode("utf-8")) // 3 + 1
