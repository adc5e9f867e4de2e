"""A stand-alone OpenAI-compatible provider for the streaming benchmark (its own process).

    python bench/fake_llm.py [--port 0] [--framing chunked|close]

Prints "PORT <n>" on stdout once it listens on 127.0.0.1 (only there).

Framing, like real providers: by default every streamed answer is chunked HTTP/1.1
(Transfer-Encoding: chunked, exactly one SSE event per HTTP chunk, one write each) on a keep-alive
connection; `--framing close` (or `framing=close` in a request's tag) answers without a length and
closes the connection at the end, as the fake of earlier benches did.

What a streamed request gets is read from the tag in its last user message (bench/shapes.py):

    bench id=3-17 shape=code n=300 rate=50 framing=chunked

n index-coded word tokens in that shape, token i written at t0 + i / rate on an absolute
schedule (t0 = when the answer's headers were written, on CLOCK_MONOTONIC, which every process of
the machine shares), then a finish reason, a usage event and [DONE]. rate=0 writes them as fast as
the socket takes them, `batch` events per write (default 32). Paced writes are made by one timer of
the event loop for all streams (no task or sleep per token), so the fake stays cheap at 25,000
tokens/s. A request without a tag gets shape=para n=20 rate=50.

GET /bench-log?prefix=P answers, for every request whose id starts with P: when it arrived, t0,
the schedule, the tokens written, whether it was written to the end or the client went away,
how late the writes were against the schedule, and how many requests carried that id.
Non-streamed requests (the app's title requests) get a short JSON answer; GET .../models lists
"bench-model".
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import shapes  # noqa: E402

monotonic = time.monotonic
HEAD = '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench-model","choices":'
# The timer writes everything due within SLACK of now, and never wakes more often than MIN_SLEEP.
SLACK = 0.0005
MIN_SLEEP = 0.0005
log: dict[str, dict] = {}
options = argparse.Namespace(framing="chunked")


def event(obj_tail: str) -> bytes:
    return f"data: {HEAD}{obj_tail}}}\n\n".encode()


def token_event(content: str) -> bytes:
    return event(f'[{{"index":0,"delta":{{"content":{json.dumps(content)}}},"finish_reason":null}}]')


def final_events(prompt_tokens: int, n: int) -> list[bytes]:
    usage = f'{{"prompt_tokens":{prompt_tokens},"completion_tokens":{n},"total_tokens":{prompt_tokens + n}}}'
    return [
        event('[{"index":0,"delta":{},"finish_reason":"stop"}]'),
        event(f'[],"usage":{usage}'),
        b"data: [DONE]\n\n",
    ]


def framed(data: bytes, chunked: bool) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data


_encoded: dict[tuple[str, int, bool], tuple[bytes, ...]] = {}


def encoded(shape: str, n: int, chunked: bool) -> tuple[bytes, ...]:
    key = (shape, n, chunked)
    if key not in _encoded:
        if len(_encoded) > 32:
            _encoded.clear()
        _encoded[key] = tuple(framed(token_event(p), chunked) for p in shapes.pieces(shape, n))
    return _encoded[key]


class Stream:
    """One streamed answer on the schedule t0 + i / rate."""

    def __init__(self, writer: asyncio.StreamWriter, entry: dict, events: tuple[bytes, ...], chunked: bool):
        self.writer = writer
        self.entry = entry
        self.events = events
        self.chunked = chunked
        self.index = 0
        self.rate = entry["rate"]
        self.t0 = entry["t0"]
        self.ended = asyncio.get_running_loop().create_future()

    def due(self) -> float:
        return self.t0 + self.index / self.rate

    def step(self, now: float, due: float) -> bool:
        """Write the token that is due; False once the stream is over."""
        transport = self.writer.transport
        if transport.is_closing():
            self.end(cancelled=True)
            return False
        late = now - due
        entry = self.entry
        if late > entry["late_max"]:
            entry["late_max"] = late
        if late > 0.005:
            entry["late_over_5ms"] += 1
        transport.write(self.events[self.index])
        self.index += 1
        entry["sent"] = self.index
        if self.index == len(self.events):
            self.finish()
            return False
        return True

    def finish(self) -> None:
        tail = b"".join(framed(e, self.chunked) for e in final_events(7, len(self.events)))
        if self.chunked:
            tail += b"0\r\n\r\n"
        self.writer.transport.write(tail)
        self.entry["done"] = True
        self.entry["ended_at"] = monotonic()
        self.end(cancelled=False)

    def end(self, cancelled: bool) -> None:
        if cancelled and not self.entry["done"]:
            self.entry["cancelled"] = True
            self.entry["ended_at"] = monotonic()
        if not self.ended.done():
            self.ended.set_result(None)


class Scheduler:
    """One loop timer writes every token that is due, for all streams."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Stream]] = []
        self.count = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = float("inf")

    def add(self, stream: Stream) -> None:
        self.count += 1
        heapq.heappush(self.heap, (stream.due(), self.count, stream))
        if stream.due() < self.timer_at - SLACK:
            self.arm(stream.due())

    def arm(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = when
        self.timer = asyncio.get_running_loop().call_at(when, self.run)  # the loop's clock is time.monotonic

    def run(self) -> None:
        self.timer, self.timer_at = None, float("inf")
        now = monotonic()
        heap = self.heap
        while heap and heap[0][0] <= now + SLACK:
            due, _count, stream = heapq.heappop(heap)
            if stream.step(now, due):
                self.count += 1
                heapq.heappush(heap, (stream.due(), self.count, stream))
        if heap:
            self.arm(max(heap[0][0], now + MIN_SLEEP))


scheduler: Scheduler | None = None


async def read_request(reader: asyncio.StreamReader):
    line = await reader.readline()
    if not line:
        return None
    method, target, _version = line.decode("latin-1").split(" ", 2)
    headers = {}
    for _ in range(100):
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", 0) or 0)
    body = json.loads(await reader.readexactly(length)) if length else {}
    return method, target, headers, body


def respond(writer: asyncio.StreamWriter, status: int, body: bytes, keep_alive: bool) -> None:
    reason = {200: "OK", 404: "Not Found"}.get(status, "OK")
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n".encode()
        + body
    )


def spec_of(body: dict) -> dict:
    messages = body.get("messages") or [{"content": body.get("prompt", "")}]
    users = [m for m in messages if isinstance(m, dict) and m.get("role", "user") == "user"] or messages
    found = shapes.parse_tag(str(users[-1].get("content", "")))
    return {
        "id": found.get("id", ""),
        "shape": found.get("shape", "para") if found.get("shape") in shapes.SHAPES else "para",
        "n": max(1, min(100_000, int(found.get("n", 20)))),
        "rate": max(0.0, float(found.get("rate", 50))),
        "framing": found.get("framing") if found.get("framing") in ("chunked", "close") else options.framing,
        "batch": max(1, int(found.get("batch", 32))),
    }


async def stream_answer(writer: asyncio.StreamWriter, spec: dict, arrived: float) -> bool:
    """Write one streamed answer; True if the connection may serve another request."""
    chunked = spec["framing"] == "chunked"
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        + (b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n" if chunked else b"Connection: close\r\n\r\n")
    )
    entry = {
        "shape": spec["shape"],
        "n": spec["n"],
        "rate": spec["rate"],
        "framing": spec["framing"],
        "arrived": arrived,
        "t0": monotonic(),
        "sent": 0,
        "done": False,
        "cancelled": False,
        "ended_at": None,
        "late_max": 0.0,
        "late_over_5ms": 0,
        "requests": 1,
    }
    if spec["id"]:
        previous = log.get(spec["id"])
        if previous is not None:
            previous["requests"] += 1  # the first request's schedule stays the one measured
        else:
            log[spec["id"]] = entry
    events = encoded(spec["shape"], spec["n"], chunked)
    if spec["rate"] > 0:
        assert scheduler is not None
        stream = Stream(writer, entry, events, chunked)
        scheduler.add(stream)
        await stream.ended
    else:
        for first in range(0, len(events), spec["batch"]):
            writer.write(b"".join(events[first : first + spec["batch"]]))
            await writer.drain()
            entry["sent"] = min(len(events), first + spec["batch"])
            if writer.transport.is_closing():
                entry["cancelled"] = True
                return False
        Stream(writer, entry, events, chunked).finish()
    if entry["cancelled"]:
        return False
    await writer.drain()
    return chunked


def answer_json(body: dict) -> bytes:
    """A non-streamed answer (the app asks for titles this way)."""
    message = {"role": "assistant", "content": "Bench title"}
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 0,
            "model": "bench-model",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        }
    ).encode()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    try:
        for _request in range(100_000):  # keep-alive: one request after another
            request = await read_request(reader)
            if request is None:
                return
            method, target, headers, body = request
            arrived = monotonic()
            keep_alive = headers.get("connection", "").lower() != "close"
            path = urlsplit(target).path
            if method == "GET" and path == "/bench-log":
                prefix = parse_qs(urlsplit(target).query).get("prefix", [""])[0]
                data = {k: v for k, v in log.items() if k.startswith(prefix)}
                respond(writer, 200, json.dumps(data).encode(), keep_alive)
            elif method == "GET" and path.endswith("/models"):
                models = {"object": "list", "data": [{"id": "bench-model"}]}
                respond(writer, 200, json.dumps(models).encode(), keep_alive)
            elif method == "POST" and path.endswith("/completions"):
                if not body.get("stream"):
                    respond(writer, 200, answer_json(body), keep_alive)
                elif not await stream_answer(writer, spec_of(body), arrived):
                    return
            else:
                respond(writer, 404, b'{"error": {"message": "Not Found"}}', keep_alive)
            await writer.drain()
            if not keep_alive:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()


async def main(port: int):
    global scheduler
    scheduler = Scheduler()
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--framing", choices=("chunked", "close"), default="chunked")
    parser.parse_args(namespace=options)
    try:
        asyncio.run(main(options.port))
    except KeyboardInterrupt:
        sys.exit(0)
