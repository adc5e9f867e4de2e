"""Database work from async code on one thread that keeps its connection.

Channels' `database_sync_to_async` calls `close_old_connections()` before and after every call. With
`CONN_MAX_AGE = 0` (the only safe setting under ASGI, where each HTTP request gets a thread of its
own) that opens and closes a connection for each call: with SQLite, opening one (the connection,
its PRAGMAs, Django's functions) was a fifth of the database thread's time while 200 replies
streamed, and every send paid for four of them before its request left for the provider.

The websockets and generations of a process do their database work on asgiref's one
thread-sensitive thread. `database_sync_to_async` here runs there too, but keeps that thread's
connection open between calls: a connection is closed only when it is broken (an error occurred
and it no longer answers) or its transaction state is off, as `close_if_unusable_or_obsolete()`
would, without the age check. PostgreSQL's pool (settings.py) lends it one connection for good;
`close_kept()` gives it back (tests that drop their database call it first).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asgiref.sync import SyncToAsync
from django.db import connections

T = TypeVar("T")


def close_broken() -> None:
    """Close this thread's connections that are broken, keep the rest (whatever their age)."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        if conn.get_autocommit() != conn.settings_dict["AUTOCOMMIT"]:
            conn.close()  # a transaction left open: start afresh
        elif conn.errors_occurred:
            if conn.is_usable():
                conn.errors_occurred = False
            else:
                conn.close()


class _KeptConnection(SyncToAsync):
    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            close_broken()


_in_flight = 0  # calls of database_sync_to_async asked for and not finished, in this process


def database_sync_to_async(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """`channels.db.database_sync_to_async`, keeping the thread's connection between calls."""
    call = _KeptConnection(func, thread_sensitive=True)

    @functools.wraps(func)
    async def run(*args: Any, **kwargs: Any) -> T:
        global _in_flight
        _in_flight += 1
        try:
            return await call(*args, **kwargs)
        finally:
            _in_flight -= 1

    return run


async def after_others(limit: float = 5.0) -> None:
    """Wait until no database call is in flight (at most `limit` seconds): for work nobody waits on.

    The database thread runs calls in the order they are asked for. Under a burst of sends, a
    page's new-title frame (a sidebar query and two templates) asked for between two sends would
    delay every send after it, and with them the first words of their replies.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while _in_flight and loop.time() < deadline:
        await asyncio.sleep(0.02)


def close_kept() -> None:
    """Close the connections the thread-sensitive thread keeps (from sync code outside a loop)."""
    executor = SyncToAsync.single_thread_executor
    executor.submit(connections.close_all).result(timeout=30)
