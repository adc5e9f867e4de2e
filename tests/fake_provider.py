"""A small OpenAI-compatible HTTP server on a free loopback port, playing the provider in tests.

It speaks real HTTP/1.1 over real sockets and can produce every wire quirk the client must
survive: events split across reads (even inside a UTF-8 character), CRLF line endings,
comments, `data:` without a space, empty `choices`, a missing [DONE], an error object in the
middle of a stream, HTTP errors with JSON, HTML or empty bodies, refusals and silence.

Tests queue responses with `push()`; with none queued it echoes the last user message.
Every request it received is in `requests` (method, path, headers, JSON body).

Requests for a conversation title (conversations/generation/titles.py) have their own queue, `push_title()`,
and are left out of `completions()`: with no title queued they get an HTTP 500, so the first
words stay the title and tests about other things see no title traffic.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None
    disconnected: threading.Event = field(default_factory=threading.Event)


@dataclass
class Reply:
    """A whole HTTP answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0  # seconds before answering


@dataclass
class Stream:
    """An SSE answer written piece by piece (each piece is its own network write)."""

    pieces: list[bytes]
    delay: float = 0.0  # seconds between pieces
    first_delay: float = 0.0  # seconds before the first piece (time to first token)
    status: int = 200


@dataclass
class Hang:
    """Accept the request and answer nothing for `seconds`, or until the client hangs up.

    A hang-up sets the request's `disconnected`, as with a Stream.
    """

    seconds: float = 30.0


@dataclass
class Close:
    """Close the connection without answering."""


def chunk(
    content=None,
    *,
    finish=None,
    index=0,
    reasoning=None,
    tool_calls=None,
    usage=None,
    choices=True,
    logprobs=None,
    reasoning_key="reasoning_content",
):
    delta = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta[reasoning_key] = reasoning  # "reasoning_content" (DeepSeek, vLLM) or "reasoning" (OpenRouter, Ollama)
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    obj = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": "fake-model"}
    obj["choices"] = [{"index": index, "delta": delta, "finish_reason": finish}] if choices else []
    if logprobs is not None and choices:
        obj["choices"][0]["logprobs"] = logprobs
    if usage is not None:
        obj["usage"] = usage
    return obj


def choices_stream(texts: list[list[str]], *, finish="stop", usage=None) -> list[bytes]:
    """n choices in one stream, their pieces interleaved (choice 0, 1, ..., then the next pieces)."""
    objs = []
    for step in range(max(len(parts) for parts in texts)):
        for index, parts in enumerate(texts):
            if step < len(parts):
                objs.append(chunk(parts[step], index=index))
    finishes = finish if isinstance(finish, list) else [finish] * len(texts)
    objs += [chunk(finish=reason, index=index) for index, reason in enumerate(finishes)]
    if usage is not None:
        objs.append(chunk(usage=usage, choices=False))
    return sse(objs)


def tool_call_delta(index, *, id=None, name=None, arguments=None):  # noqa: A002 - the API's field name
    """One fragment of a streamed tool call (the first usually has its id and name)."""
    call = {"index": index}
    if id is not None:
        call["id"] = id
        call["type"] = "function"
    function = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    if function:
        call["function"] = function
    return call


def chat_logprobs(tokens: list[tuple[str, float]], top: int = 2) -> dict:
    """Chat-style logprobs for (token, logprob) pairs; each has `top` alternatives ("alt<k>")."""
    content = []
    for token, logprob in tokens:
        alternatives = [{"token": token, "logprob": logprob, "bytes": None}]
        alternatives += [{"token": f"alt{k}", "logprob": logprob - k, "bytes": None} for k in range(1, top)]
        content.append({"token": token, "logprob": logprob, "bytes": None, "top_logprobs": alternatives[:top]})
    return {"content": content, "refusal": None}


def sse(objs, *, done=True, eol="\n", space=True) -> list[bytes]:
    """Encode chunk objects as SSE events, one network write each."""
    prefix = "data: " if space else "data:"
    events = [f"{prefix}{json.dumps(o) if not isinstance(o, str) else o}{eol}{eol}".encode() for o in objs]
    if done:
        events.append(f"{prefix}[DONE]{eol}{eol}".encode())
    return events


def text_stream(parts, *, finish="stop", usage=None, **kwargs) -> list[bytes]:
    objs = [chunk(p) for p in parts] + [chunk(finish=finish)]
    if usage is not None:
        objs.append(chunk(usage=usage, choices=False))
    return sse(objs, **kwargs)


def completion_chunk(text=None, *, index=0, logprobs=None, finish=None, usage=None, choices=True):
    """One chunk of a streamed /v1/completions answer (`choices[].text`, completion-style logprobs)."""
    obj = {"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": "fake-model"}
    choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish}
    obj["choices"] = [choice] if choices else []
    if usage is not None:
        obj["usage"] = usage
    return obj


def words_of(text: str) -> list[str]:
    """The fake's tokens: words, each with the space that follows it."""
    words = [w + " " for w in text.split(" ")]
    words[-1] = words[-1].rstrip(" ")
    return [w for w in words if w]


def token_logprobs(tokens: list[str], start: int, top: int, *, first_none=False, position=0) -> dict:
    """Completion-style logprobs for `tokens` whose text begins at offset `start`.

    The token at `position` + j gets logprob -0.25 * ((position + j) % 8); its `top` alternatives
    are itself and "alt<k>" tokens.
    """
    offsets, logprobs, tops = [], [], []
    for j, token in enumerate(tokens, position):
        offsets.append(start)
        start += len(token)
        logprob = -0.25 * (j % 8)
        alternatives = {token: logprob, **{f"alt{k}": logprob - k for k in range(1, top)}}
        logprobs.append(logprob)
        tops.append(dict(list(alternatives.items())[:top]))
    if first_none and tokens:
        logprobs[0], tops[0] = None, None
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}


def fake_completion(body: dict, *, pace: float = 0.0):
    """The default /v1/completions answer: "You said: <prompt>" per choice, honouring n, max_tokens
    (in words), echo (the prompt first), logprobs (text_offset counted from the prompt's start, as
    OpenAI does) and stream; choice i > 0 starts with "Choice i:".
    """
    prompt = body.get("prompt") or ""
    n = body.get("n") or 1
    top = body.get("logprobs")
    max_tokens = body.get("max_tokens")
    usage = {"prompt_tokens": len(words_of(prompt)), "completion_tokens": 0, "total_tokens": 0}
    choices = []
    for index in range(n):
        tokens = words_of(("" if index == 0 else f"Choice {index}: ") + f"You said: {prompt}")
        finish = "stop"
        if max_tokens is not None and len(tokens) > max_tokens:
            tokens, finish = tokens[:max_tokens], "length"
        usage["completion_tokens"] += len(tokens)
        echoed = words_of(prompt) if body.get("echo") else []
        choices.append((index, echoed, tokens, finish))
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]

    def logprobs_for(tokens, start, first_none=False, position=0):
        if top is None:
            return None
        return token_logprobs(tokens, start, top, first_none=first_none, position=position)

    if not body.get("stream"):
        answer = []
        for index, echoed, tokens, finish in choices:
            logprobs = logprobs_for(echoed + tokens, 0 if echoed else len(prompt), first_none=bool(echoed))
            text = "".join(echoed + tokens)
            answer.append({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish})
        obj = {"id": "cmpl-fake", "object": "text_completion", "model": body.get("model", "fake-model")}
        return Reply(200, json.dumps({**obj, "choices": answer, "usage": usage}).encode())
    objs = []
    for index, echoed, _tokens, _finish in choices:
        if echoed:  # the whole prompt first, in one chunk
            objs.append(completion_chunk("".join(echoed), index=index, logprobs=logprobs_for(echoed, 0, True)))
    longest = max(len(tokens) for _i, _e, tokens, _f in choices)
    for j in range(longest):
        for index, _echoed, tokens, _finish in choices:
            if j < len(tokens):
                start = len(prompt) + sum(len(t) for t in tokens[:j])
                logprobs = logprobs_for([tokens[j]], start, position=j)
                objs.append(completion_chunk(tokens[j], index=index, logprobs=logprobs))
    objs += [completion_chunk(index=index, finish=finish) for index, _e, _t, finish in choices]
    if (body.get("stream_options") or {}).get("include_usage"):
        objs.append(completion_chunk(usage=usage, choices=False))
    return Stream(sse(objs), delay=pace)


def is_title_request(request: Request) -> bool:
    from conversations.generation.titles import TITLE_INSTRUCTION

    messages = (request.body or {}).get("messages") or [{}]
    return not (request.body or {}).get("stream") and messages[0].get("content") == TITLE_INSTRUCTION


class FakeProvider:
    def __init__(self, tls: ssl.SSLContext | None = None):
        self.tls = tls  # serve HTTPS with this context
        self.requests: list[Request] = []
        self.models = ["fake-model", "fake-model-2"]
        self._queue: deque = deque()
        self._titles: deque = deque()
        self.pace = 0.0  # seconds between chunks of the default echo reply
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    # -- control from tests -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    def push(self, *responses):
        self._queue.extend(responses)

    def push_title(self, *responses, delay: float = 0.0):
        """Queue answers to title requests: a string is the model's answer (after `delay` s), or a Reply/Hang/Close."""
        for response in responses:
            if isinstance(response, str):
                body = {
                    "id": "chatcmpl-title",
                    "object": "chat.completion",
                    "model": "fake-model",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": response}, "finish_reason": "stop"}
                    ],
                }
                response = Reply(200, json.dumps(body).encode(), delay=delay)
            self._titles.append(response)

    def title_requests(self) -> list[Request]:
        return [r for r in self.requests if is_title_request(r)]

    def reset(self):
        self._queue.clear()
        self._titles.clear()
        self.requests.clear()
        self.pace = 0.0
        self.models = ["fake-model", "fake-model-2"]

    def completions(self) -> list[Request]:
        return [r for r in self.requests if r.path.endswith("/completions") and not is_title_request(r)]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.completions()
            if len(found) >= count:
                return found
            time.sleep(0.01)
        raise AssertionError(f"expected {count} completion requests, got {len(self.completions())}")

    # -- server ---------------------------------------------------------------------------

    def start(self) -> FakeProvider:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self):
        async def shutdown():
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(5)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                keep_open = await self._answer(request, reader, writer)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _read_request(self, reader) -> Request | None:
        line = await reader.readline()
        if not line:
            return None
        method, path, _ = line.decode().split(" ", 2)
        headers = {}
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = None
        length = int(headers.get("content-length", 0))
        if length:
            body = json.loads(await reader.readexactly(length))
        return Request(method, path, headers, body)

    async def _answer(self, request: Request, reader, writer) -> bool:
        if request.method == "GET" and request.path.endswith("/models"):
            data = {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
            return await self._reply(writer, Reply(200, json.dumps(data).encode()))
        if request.path.endswith("/extras/tokenize/count"):
            return await self._reply(writer, Reply(404, b'{"detail": "Not Found"}'))
        if is_title_request(request):
            response = (
                self._titles.popleft() if self._titles else Reply(500, b'{"error": {"message": "no title queued"}}')
            )
        else:
            response = self._queue.popleft() if self._queue else self._default(request)
        if isinstance(response, Reply):
            return await self._reply(writer, response)
        if isinstance(response, Hang):
            await self._hang(request, reader, response.seconds)
            return False
        if isinstance(response, Close):
            return False
        await self._stream(request, reader, writer, response)
        return False

    def _default(self, request: Request):
        if request.path.endswith("/completions") and not request.path.endswith("/chat/completions"):
            return fake_completion(request.body or {}, pace=self.pace)
        messages = (request.body or {}).get("messages") or [{"content": (request.body or {}).get("prompt", "")}]
        text = f"You said: {messages[-1].get('content', '')}"
        words = [w + " " for w in text.split(" ")]
        words[-1] = words[-1].rstrip()
        if not (request.body or {}).get("stream"):
            body = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": request.body.get("model", "fake-model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)},
            }
            return Reply(200, json.dumps(body).encode())
        usage = None
        if (request.body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
        return Stream(text_stream(words, usage=usage), delay=self.pace)

    async def _reply(self, writer, reply: Reply) -> bool:
        status_text = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests"}
        head = (
            f"HTTP/1.1 {reply.status} {status_text.get(reply.status, 'Error')}\r\n"
            f"Content-Type: {reply.content_type}\r\nContent-Length: {len(reply.body)}\r\n"
            # No keep-alive: a pooled connection would outlive the short event loops of sync tests.
            "Connection: close\r\n\r\n"
        )
        if reply.delay:
            await asyncio.sleep(reply.delay)
        writer.write(head.encode() + reply.body)
        await writer.drain()
        return False

    async def _hang(self, request: Request, reader, seconds: float):
        """Say nothing for `seconds`, or until the client hangs up (then record that it did)."""
        closed = asyncio.ensure_future(reader.read(1))  # resolves when the client hangs up
        try:
            await asyncio.wait([closed], timeout=seconds)
            # EOF or a reset: the client hung up (a client sends nothing more while it waits).
            if closed.done() and (closed.exception() is not None or closed.result() == b""):
                request.disconnected.set()
        finally:
            if not closed.done():
                closed.cancel()

    async def _stream(self, request: Request, reader, writer, stream: Stream):
        head = (
            f"HTTP/1.1 {stream.status} OK\r\nContent-Type: text/event-stream\r\n"
            "Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        closed = asyncio.ensure_future(reader.read(1))  # resolves when the client hangs up
        try:
            if stream.first_delay:
                await asyncio.wait([closed], timeout=stream.first_delay)
            for index, piece in enumerate(stream.pieces):
                if closed.done():
                    raise ConnectionResetError
                if index and stream.delay:
                    await asyncio.wait([closed], timeout=stream.delay)
                    if closed.done():
                        raise ConnectionResetError
                writer.write(piece)
                await writer.drain()
        except ConnectionError:
            request.disconnected.set()
        finally:
            if not closed.done():
                closed.cancel()
            elif not closed.cancelled():
                closed.exception()  # a reset: retrieved, so asyncio does not log it as never retrieved
