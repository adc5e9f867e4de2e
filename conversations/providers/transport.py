"""httpcore's network backend on asyncio's own streams, for reading a provider's stream cheaply.

httpx (through httpcore) reads a provider's answer through anyio by default. Each read there
opens a cancel scope for its timeout and pauses and resumes the transport (two `epoll_ctl`
calls), and a streamed reply is one read per token: with 200 replies streaming, reading the
provider was half of the busy time of a process, two thirds of it in those per-read costs.

This backend gives httpcore asyncio's `StreamReader`/`StreamWriter`: a read returns what the
transport has buffered (everything that arrived since the last read, in one piece), the
transport is paused only when a reader falls far behind, and a timeout is one timer handle.
Errors are httpcore's own (ConnectError, ReadTimeout...), which httpx maps as it
always does; TLS goes through `StreamWriter.start_tls`. `install()` puts it under an
`httpx.AsyncClient`'s default transport (proxies from the environment keep httpcore's default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
from httpcore._backends.base import SOCKET_OPTION as SocketOption
from httpcore._utils import is_socket_readable

log = logging.getLogger(__name__)

# How much a connection may buffer before its transport is paused (a reader far behind).
BUFFER_LIMIT = 1 << 20


@contextlib.contextmanager
def _errors(timeout_error: type[Exception], other: type[Exception]):
    try:
        yield
    except TimeoutError as exc:
        raise timeout_error(str(exc) or "timed out") from exc
    except (OSError, EOFError, ssl.SSLError) as exc:
        raise other(str(exc) or type(exc).__name__) from exc


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _errors(httpcore.ReadTimeout, httpcore.ReadError):
            if timeout is None:
                return await self._reader.read(max_bytes)
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        with _errors(httpcore.WriteTimeout, httpcore.WriteError):
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        with _errors(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info == "is_readable":  # an idle pooled connection the server closed (or wrote to)
            sock = self._writer.get_extra_info("socket")
            return self._reader.at_eof() or (sock is not None and is_socket_readable(sock))
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _errors(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None, limit=BUFFER_LIMIT
                )
            _apply(writer, socket_options)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> httpcore.AsyncNetworkStream:
        with _errors(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=BUFFER_LIMIT)
            _apply(writer, socket_options)
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _apply(writer: asyncio.StreamWriter, options: Iterable[SocketOption] | None) -> None:
    sock: socket.socket | None = writer.get_extra_info("socket")
    for option in options or ():
        if sock is not None:
            sock.setsockopt(*option)


def install(client: httpx.AsyncClient) -> bool:
    """Read through AsyncioBackend on the client's default transport; False if httpx's layout changed."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
        log.warning("httpx's transport has no connection pool where expected: reading through anyio")
        return False
    pool._network_backend = AsyncioBackend()
    return True
