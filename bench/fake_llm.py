"""A stand-alone OpenAI-compatible provider for the streaming benchmark (its own process).

    python bench/fake_llm.py [--port 0]

Prints "PORT <n>" on stdout once it listens on 127.0.0.1. Every streamed request answers with
chunks whose content carries the chunk's index and its send time on the system-wide monotonic
clock, so a client anywhere on the machine can compute per-chunk delay and spot lost chunks:

    ⟨17:123456.789012⟩<space>

The shape of a reply is read from the last user message, e.g. "bench n=200 rate=50":
  n     chunks in the reply (default 200)
  rate  chunks per second, paced on an absolute schedule (no drift); 0 = unpaced: as fast as the
        socket takes them, written in batches of `batch` events per write (default 32)
  words 1 = plain word-like tokens ("lorem ") instead of timestamps (for the bytes-on-the-wire
        measure with realistic token sizes)
Anything else is answered with n=200 rate=50. Like tests/fake_provider.py it speaks real
HTTP/1.1 over real sockets, closes the connection after each answer, and handles GET /models.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time

CHUNK = (
    'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench-model",'
    '"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n'
)
FINAL = (
    'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench-model",'
    '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench-model",'
    '"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}\n\n'
    "data: [DONE]\n\n"
)
WORDS = ["lorem ", "ipsum ", "dolor ", "sit ", "amet, ", "consectetur ", "adipiscing ", "elit. "]
DIRECTIVE = re.compile(r"(\w+)=([\d.]+)")
monotonic = time.monotonic


def shape(body: dict) -> dict:
    messages = body.get("messages") or [{"content": body.get("prompt", "")}]
    text = str(messages[-1].get("content", ""))
    found = {k: float(v) for k, v in DIRECTIVE.findall(text)}
    return {
        "n": int(found.get("n", 200)),
        "rate": found.get("rate", 50.0),
        "batch": int(found.get("batch", 32)),
        "words": bool(found.get("words", 0)),
    }


def piece(index: int, words: bool) -> bytes:
    content = WORDS[index % len(WORDS)] if words else f"⟨{index}:{monotonic():.6f}⟩ "
    return (CHUNK % content).encode()


async def read_request(reader: asyncio.StreamReader):
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", 0) or 0)
    body = json.loads(await reader.readexactly(length)) if length else {}
    return method, path, body


def plain(writer, status: int, body: bytes):
    writer.write(
        f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    try:
        request = await read_request(reader)
        if request is None:
            return
        method, path, body = request
        if method == "GET" and path.endswith("/models"):
            plain(writer, 200, json.dumps({"object": "list", "data": [{"id": "bench-model"}]}).encode())
            await writer.drain()
            return
        if not path.endswith("/completions"):
            plain(writer, 404, b'{"detail": "Not Found"}')
            await writer.drain()
            return
        spec = shape(body)
        n, rate, words = spec["n"], spec["rate"], spec["words"]
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Connection: close\r\n\r\n"
        )
        if rate > 0:
            interval = 1.0 / rate
            start = monotonic()
            for index in range(n):
                wait = start + index * interval - monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(piece(index, words))
                if writer.transport.get_write_buffer_size() > 65536:
                    await writer.drain()
                if writer.transport.is_closing():
                    return
        else:
            batch = max(1, spec["batch"])
            for first in range(0, n, batch):
                writer.write(b"".join(piece(i, words) for i in range(first, min(n, first + batch))))
                await writer.drain()
                if writer.transport.is_closing():
                    return
        writer.write((FINAL % (7, n, 7 + n)).encode())
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()


async def main(port: int):
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.port))
    except KeyboardInterrupt:
        sys.exit(0)
