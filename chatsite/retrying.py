"""Await something again, with growing pauses, while what it needs (the database, Redis) is briefly down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def retrying(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    seconds: float,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    first_pause: float = 0.25,
    longest_pause: float = 5.0,
) -> T:
    """Await `attempt()` until it works, pausing `first_pause`, twice that, ... (at most
    `longest_pause`) between tries, for `seconds`. The last failure is raised when the time is up.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pause = first_pause
    while True:
        try:
            return await attempt()
        except retry_on as exc:
            if loop.time() + pause > deadline:
                raise
            log.warning("%s failed (%r); trying again in %.2f s", what, exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest_pause)
