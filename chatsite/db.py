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

from collections.abc import Callable
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


def database_sync_to_async(func: Callable[..., T]) -> Callable[..., Any]:
    """`channels.db.database_sync_to_async`, keeping the thread's connection between calls."""
    return _KeptConnection(func, thread_sensitive=True)


def close_kept() -> None:
    """Close the connections the thread-sensitive thread keeps (from sync code outside a loop)."""
    executor = SyncToAsync.single_thread_executor
    executor.submit(connections.close_all).result(timeout=30)
