"""A feed's ear on its conversation's control group: stop and sync commands from any tab or process.

Pages send `generation.stop` and `generation.sync` to the conversation's control group (see
conversations/events.py); every feed running for the conversation, in whatever process, has a
channel in that group and obeys them. The channel joins the group before anyone is told the
replies exist, so no sync is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from channels.layers import BaseChannelLayer, get_channel_layer

from conversations import events


def channel_layer() -> BaseChannelLayer:
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is configured"
    return layer


class Control:
    """Listens on a channel of its own in `group`: calls `stop()` on a stop, `sync(reply_to)` on a sync."""

    def __init__(self, group: str, *, stop: Callable[[], None], sync: Callable[[str], Awaitable[None]]):
        self.group = group
        self._stop = stop
        self._sync = sync
        self._layer = channel_layer()
        self._channel = ""
        self._listener: asyncio.Task[None] | None = None

    @property
    def opened(self) -> bool:
        return bool(self._channel)

    async def open(self) -> None:
        """Start listening for commands."""
        self._channel = await self._layer.new_channel()
        await self._layer.group_add(self.group, self._channel)
        self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        while True:
            event = await self._layer.receive(self._channel)
            if event.get("type") == events.END:
                return
            if event.get("type") == events.STOP:
                self._stop()
            elif event.get("type") == events.SYNC and event.get("reply_to"):
                await self._sync(event["reply_to"])

    async def close(self) -> None:
        """Leave the control group and end the listener by a message, not by cancelling it.

        A receive() cancelled while it waits on the Redis layer can lose or delay a message meant
        for another channel of this process (all of a process's channels share one Redis list),
        such as the `generation.finished` a viewer is waiting for.
        """
        if not self._channel:
            return
        await self._layer.group_discard(self.group, self._channel)
        if self._listener is None or self._listener.done():
            return
        await self._layer.send(self._channel, events.end())
        try:
            await asyncio.wait_for(asyncio.shield(self._listener), timeout=5)
        except TimeoutError:
            self._listener.cancel()
