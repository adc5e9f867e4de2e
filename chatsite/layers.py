"""The one-process channel layer: Channels' in-memory layer without its per-message costs, and no silent drop.

Channels' `InMemoryChannelLayer` scans every channel and every group member for expired messages
on each `receive()` and `group_send()` (a quarter of the busy time of a process streaming 200
replies), starts a task per member for each group message and deep-copies the message for each
one, and drops a message to a full channel without a word. This layer cleans expired messages at
most once a second, sends to a group's members in a plain loop with a shallow copy (events are
built fresh and never changed by their receivers), and logs a drop at WARNING and counts it
(`dropped`): a page that misses a delta finds out by its sequence numbers and repairs itself, but
an operator must see that the capacity is too small.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

from chatsite.retrying import retrying

log = logging.getLogger(__name__)

CLEAN_EVERY_SECONDS = 1.0


class ProcessChannelLayer(InMemoryChannelLayer):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dropped = 0
        self._cleaned_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < CLEAN_EVERY_SECONDS:
            return
        self._cleaned_at = now
        super()._clean_expired()  # type: ignore[misc]  # channels' own hook, missing from its stubs

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        self._put(channel, message)

    def _put(self, channel: str, message: dict[str, Any]) -> None:
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        try:
            queue.put_nowait((time.time() + self.expiry, dict(message)))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning(
                "Channel %s is full (%d messages): a %s event was dropped", channel, queue.qsize(), message.get("type")
            )
            raise ChannelFull(channel) from None

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, {})):
            # A drop is logged and counted; the page repairs itself from its sequence numbers.
            with contextlib.suppress(ChannelFull):
                self._put(channel, message)


# How long joining a group is tried again while the layer is down (Redis restarting): a page
# connecting, or a reply starting, right after a restart waits for it instead of failing.
JOIN_SECONDS = 5.0


async def group_add(layer: Any, group: str, channel: str, *, seconds: float = JOIN_SECONDS) -> None:
    """`layer.group_add(group, channel)`, tried again with growing pauses for `seconds` if it fails.

    Right after Redis restarts, the first subscription of a process can fail on a connection of the
    old server; the next one works.
    """
    await retrying(
        f"Joining group {group}",
        lambda: layer.group_add(group, channel),
        seconds=seconds,
        first_pause=0.05,
        longest_pause=1.0,
    )
