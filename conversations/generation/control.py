"""A feed's ear on its conversation's control group: stop and sync commands from any tab or process.

Pages send `generation.stop` and `generation.sync` to the conversation's control group (see
conversations/events.py); every feed running for the conversation, in whatever process, has a
channel in that group and obeys them. The channel joins the group before anyone is told the
replies exist, so no command is lost: with Redis pub/sub a subscription takes effect a little
after it is asked for, so `open()` returns only once a probe sent to the group came back.

The channel layer may fail for a while (Redis restarting): the listener and the probe wait and
try again instead of dying, so Stop and snapshots work again as soon as the layer is back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import BaseChannelLayer, get_channel_layer

from chatsite import layers
from conversations import events

log = logging.getLogger(__name__)

# How long open() waits for its probe, in all, before going on without the confirmation.
PROBE_SECONDS = 5.0
# After a failed receive, the listener waits this long before it tries again.
RETRY_SECONDS = 0.5


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
        self._probe: tuple[str, asyncio.Future[None]] | None = None

    @property
    def opened(self) -> bool:
        return bool(self._channel)

    async def open(self) -> None:
        """Start listening for commands; return once the group is heard (or PROBE_SECONDS went by)."""
        self._channel = await self._layer.new_channel()
        await layers.group_add(self._layer, self.group, self._channel)
        self._listener = asyncio.create_task(self._listen())
        await self._confirm()

    async def _confirm(self) -> None:
        token = uuid.uuid4().hex
        heard: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._probe = (token, heard)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_SECONDS
        wait = 0.02
        try:
            while loop.time() < deadline:
                try:
                    await self._layer.group_send(self.group, events.probe(token))
                except Exception as exc:  # the layer is down: try again until the deadline
                    log.warning("Could not probe control group %s: %r", self.group, exc)
                try:
                    await asyncio.wait_for(asyncio.shield(heard), wait)
                    return
                except TimeoutError:
                    wait = min(wait * 2, 0.5)
            log.warning("Control group %s not confirmed in %.0f s; going on", self.group, PROBE_SECONDS)
        finally:
            self._probe = None

    async def _listen(self) -> None:
        while True:
            try:
                event = await self._layer.receive(self._channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the layer is down for a while: keep listening once it is back
                log.warning("Control channel of %s failed (%r); listening again", self.group, exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            kind = event.get("type")
            if kind == events.END:
                return
            try:
                await self._obey(kind, event)
            except Exception:
                log.exception("Command %s to %s failed", kind, self.group)

    async def _obey(self, kind: Any, event: events.Event) -> None:
        if kind == events.STOP:
            self._stop()
        elif kind == events.SYNC and event.get("reply_to"):
            await self._sync(event["reply_to"])
        elif kind == events.PROBE and self._probe is not None and event.get("token") == self._probe[0]:
            heard = self._probe[1]
            if not heard.done():
                heard.set_result(None)

    async def close(self) -> None:
        """Leave the control group and end the listener by a message, not by cancelling it.

        A receive() cancelled while it waits on a Redis layer can lose or delay a message meant
        for another channel of this process, such as the `generation.finished` a viewer waits for.
        """
        if not self._channel:
            return
        try:
            await self._layer.group_discard(self.group, self._channel)
            if self._listener is None or self._listener.done():
                return
            await self._layer.send(self._channel, events.end())
            await asyncio.wait_for(asyncio.shield(self._listener), timeout=5)
        except Exception as exc:  # the layer is down or the end did not come: stop listening anyway
            log.warning("Control channel of %s closed without its end message (%r)", self.group, exc)
            if self._listener is not None and not self._listener.done():
                self._listener.cancel()
