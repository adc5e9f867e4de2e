"""The feeds running in this process: started here, so that they can all be stopped at once (tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

from conversations.generation import titles


class Feed(Protocol):
    def stop(self) -> None:
        """Stop every reply of the feed, and its upstream request(s)."""
        ...


_running: dict[Feed, asyncio.Task[None]] = {}


def start(feed: Feed, run: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
    """Run `run`, the feed's work, in a task of its own; the feed counts as running until it ends."""
    task = asyncio.create_task(run, name=name)
    _running[feed] = task
    task.add_done_callback(lambda _task: _running.pop(feed, None))
    return task


async def stop_all_and_wait(timeout: float) -> None:
    """Stop every feed still running and wait for them (each reply saved), then for the title requests.

    For tests: a database reset racing a reply's final save, or the title written after a first
    reply, deadlocked on PostgreSQL. Title requests still running after `timeout` are cancelled.
    """
    running = [(feed, task) for feed, task in _running.items() if not task.done()]
    for feed, _task in running:
        feed.stop()
    tasks = [task for _feed, task in running]
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    try:
        await asyncio.wait_for(titles.wait_idle(), timeout=timeout)
    except TimeoutError:
        titles.cancel_all()
