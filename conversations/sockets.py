"""The websocket every conversation page has: it admits the owner, follows streaming replies, runs actions from a table.

`ConversationSocket` is the base of the chat socket (conversations/chat/consumer.py) and of the
playground socket (conversations/playground/consumer.py). It does what both pages need:

- connect: only the owner, and the page joins its conversation's group only after that check;
- commands: `receive()` reads the browser's JSON frame and runs the action named by its
  "action" field from the subclass's `actions` table (the rest of the frame is its argument).
  An action validates, saves and starts a generation, then returns (DESIGN rule 1);
- following: whenever the page shows a reply that is still streaming, it asks the generation (in
  whatever process runs it) for a snapshot and holds live deltas until it arrives; it then sends
  the snapshot and only the deltas after it, so the text has no gap and no duplicate. A quiet
  streaming reply is checked by a watchdog (its process may have died).

Frames sent to the browser are HTML fragments that htmx swaps in by id (hx-swap-oob); the
subclass says how its page shows a delta, a snapshot, a finished reply, the transcript and the
composer's buttons.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from abc import ABCMeta, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import DatabaseError
from django.template.loader import render_to_string
from django.utils.translation import gettext as _

from chatsite import layers
from chatsite.db import close_broken, database_sync_to_async
from conversations import access, events, i18n
from conversations.models import Conversation, Message

# The chat page's header, sidebar and notices: the playground page includes the same partials.
CHAT_PAGE = "conversations/conversation.html"
# A streaming reply quiet this long makes the page look in the database (did it end? did its process die?).
SYNC_CHECK_SECONDS = 3.0
# A snapshot asked for and not come after this long is asked for again (a message lost on the layer).
SNAPSHOT_RETRY_SECONDS = 1.0

log = logging.getLogger(__name__)

Frame = dict[str, Any]  # a JSON object the browser sent
Action = Callable[[Any, Frame], Awaitable[None]]  # an action of a socket: (the socket, its frame)


class ConversationSocket(AsyncWebsocketConsumer, metaclass=ABCMeta):
    # Action name -> the method that runs it (a frame with no "action" runs `default_action`).
    actions: ClassVar[Mapping[str, Action]] = {}
    default_action: ClassVar[str] = "send"
    conversation: Conversation  # set by connect() before anything else can happen

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group: str | None = None  # the conversation's group, once joined
        self.syncing: dict[int, list[events.Event]] = {}  # message id -> deltas held until its snapshot
        self.heard: dict[int, float] = {}  # streaming message id -> when this page last heard of it
        self.last_seq: dict[int, int] = {}  # message id -> the last delta this page was given
        self.asked: dict[int, float] = {}  # message id -> when this page last asked for its snapshot
        self.watchdogs: set[asyncio.Task[None]] = set()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its close_old_connections() before every event.

        That is a trip to the database thread per event, queued behind all the database work of the
        process (under a burst of sends, every page's first delta waited seconds behind its
        `added`), and with CONN_MAX_AGE = 0 it closed the connection that thread keeps
        (chatsite/db.py). A connection broken under a handler is closed after its error instead.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        try:
            await handler(message)
        except DatabaseError:
            await sync_to_async(close_broken)()
            raise

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        # Channels runs no LocaleMiddleware: the owner's language for everything this socket renders,
        # and for the generations it starts (a task inherits it).
        await i18n.aactivate_for_scope(self.scope)
        conversation = await access.aconversation_for_socket(user, self.scope["url_route"]["kwargs"]["code"])
        if conversation is None:
            await self.close(code=4404)
            return
        self.conversation = conversation
        # Joining the group is the authorization: it happens only after the ownership check.
        await layers.group_add(self.channel_layer, conversation.group_name, self.channel_name)
        self.group = conversation.group_name
        await self.accept()
        await conversation.messages.stale().amark_interrupted()
        # Every reply still streaming (n choices stream at once).
        streaming = conversation.messages.filter(status=Message.Status.STREAMING).values_list("pk", flat=True)
        streaming_ids = [pk async for pk in streaming]
        await self.follow(streaming_ids)
        await self.send(text_data=self.composer(busy=bool(streaming_ids)))

    async def disconnect(self, code: int) -> None:
        for task in self.watchdogs:
            task.cancel()
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    # -- commands from the browser --------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        data = await self._read_frame(text_data)
        if data is None:
            return
        name = data.get("action") or self.default_action
        action = self.actions.get(name) if isinstance(name, str) else None
        if action is None:
            await self.send_error(_("Unknown action."))
            return
        await action(self, data)

    async def _read_frame(self, text_data: str | None) -> Frame | None:
        """The browser's JSON object, or None after telling the page it could not be read."""
        try:
            data = json.loads(text_data or "")
            if isinstance(data, dict):
                return data
        except ValueError:
            pass
        await self.send_error(_("That message could not be read. Reload the page and try again."))
        return None

    async def stop_replies(self, data: Frame) -> None:
        """Action: stop every reply streaming in the conversation (from any of its pages)."""
        await self.channel_layer.group_send(self.conversation.control_group_name, events.stop())

    async def resync(self, data: Frame) -> None:
        """Action: the page reconnected; show it the conversation as it is now."""
        await self.send_transcript()

    # -- events from the group ----------------------------------------------------------------

    async def chat_added(self, event: events.Event) -> None:
        # The generation starts only after this event is sent, and a channel delivers in order, so
        # every delta of the new reply comes after it: follow it from the start, no snapshot needed.
        for reply_id in event["reply_ids"]:
            self.last_seq[reply_id] = 0
            self.watch(reply_id)
        await self.send(text_data=event["html"] + self.composer(busy=True))

    async def chat_transcript(self, event: events.Event) -> None:
        await self.send_transcript()

    async def chat_title(self, event: events.Event) -> None:
        """The model named the conversation (generation/titles.py): the new header and sidebar."""
        await self.send(text_data=event["html"])

    async def generation_delta(self, event: events.Event) -> None:
        message_id, seq = event["message_id"], event["seq"]
        self.heard[message_id] = time.monotonic()
        if message_id in self.syncing:
            self.syncing[message_id].append(event)
            return
        last = self.last_seq.get(message_id)
        if last is None:
            # A reply this page was never told of (the layer lost its `added`): redraw from the database.
            log.info("Page of %s missed the start of reply %s: redrawing", self.group, message_id)
            await self.send_transcript()
            return
        if seq <= last:
            return  # already part of the snapshot this page was given
        if seq > last + 1:
            # The layer lost a delta: hold this one and ask where the reply stands (no hole on the page).
            log.info(
                "Page of %s missed deltas %d-%d of reply %s: asking for a snapshot",
                self.group,
                last + 1,
                seq - 1,
                message_id,
            )
            self.syncing[message_id] = [event]
            await self.ask_snapshot()
            return
        self.last_seq[message_id] = seq
        for frame in self.delta_frames(event):
            await self.send(text_data=frame)

    async def generation_snapshot(self, event: events.Event) -> None:
        message_id = event["message_id"]
        self.heard[message_id] = time.monotonic()
        if message_id not in self.syncing:
            return
        held = self.syncing.pop(message_id)
        self.asked.pop(message_id, None)
        has_all = self.last_seq.get(message_id) == event["seq"]  # a check found nothing missing
        self.last_seq[message_id] = event["seq"]
        # The reply's text as a page has it after every delta so far, then the deltas after it.
        frames = [] if has_all else [self.snapshot_frame(event)]
        for delta in held:
            if delta["seq"] > event["seq"]:
                self.last_seq[message_id] = delta["seq"]
                frames.extend(self.delta_frames(delta))
        for frame in frames:  # one message each: a frame for a table row must stand alone
            await self.send(text_data=frame)

    async def generation_finished(self, event: events.Event) -> None:
        message_id = event["message_id"]
        # It saw every delta, up to the last one: it may keep its copy of the text; else it gets it again.
        followed = (
            message_id not in self.syncing
            and event.get("seq") is not None
            and self.last_seq.get(message_id) == event["seq"]
        )
        self.syncing.pop(message_id, None)
        self.last_seq.pop(message_id, None)
        self.heard.pop(message_id, None)
        self.asked.pop(message_id, None)
        await self.send(text_data=await self.finished_frame(event, followed=followed))

    # -- what the page shows (the subclass's templates) -----------------------------------------

    @abstractmethod
    def composer(self, busy: bool) -> str:
        """The buttons under the input: Stop while a reply streams, and the submit button."""

    @abstractmethod
    def delta_frames(self, event: events.Event) -> list[str]:
        """The frames of one delta of a streaming reply."""

    @abstractmethod
    def snapshot_frame(self, event: events.Event) -> str:
        """A streaming reply's text as a page has it after every delta so far."""

    @abstractmethod
    async def finished_frame(self, event: events.Event, *, followed: bool) -> str:
        """A reply ended: how the page shows it now, and the composer. `followed`: the page saw every delta."""

    @abstractmethod
    async def transcript(self) -> tuple[str, list[int]]:
        """The conversation as the page shows it (a frame), and the ids of its replies still streaming."""

    # -- helpers for the subclasses ---------------------------------------------------------------

    async def send_transcript(self) -> None:
        """Re-render the page's transcript from the database (after a reconnect or a branch change)."""
        await self.conversation.arefresh_from_db()
        html, streaming = await self.transcript()
        await self.send(text_data=html + self.composer(busy=bool(streaming)))
        await self.follow(streaming)

    async def follow(self, message_ids: Iterable[int]) -> None:
        """Ask the generations of these streaming replies for a snapshot; hold their deltas until then.

        One request is enough: every generation of the conversation answers it for its reply.
        """
        message_ids = list(message_ids)
        if not message_ids:
            return
        for message_id in message_ids:
            self.syncing[message_id] = []
            # The page's copy was just drawn from the database (or not at all): the snapshot is sent
            # whatever this socket had sent before.
            self.last_seq.pop(message_id, None)
            self.watch(message_id)
        await self.ask_snapshot()

    async def ask_snapshot(self) -> None:
        """Ask every generation of the conversation where its replies stand (answered to this channel)."""
        now = time.monotonic()
        for message_id in self.syncing:
            self.asked[message_id] = now
        try:
            await self.channel_layer.group_send(self.conversation.control_group_name, events.sync(self.channel_name))
        except Exception as exc:  # the layer is down: the watchdog asks again
            log.warning("Could not ask for a snapshot in %s: %r", self.group, exc)

    def watch(self, message_id: int) -> None:
        """Start the watchdog of a streaming reply this page shows (once)."""
        if message_id in self.heard:
            return
        self.heard[message_id] = time.monotonic()
        task = asyncio.create_task(self._watchdog(message_id))
        self.watchdogs.add(task)
        task.add_done_callback(self.watchdogs.discard)

    async def _watchdog(self, message_id: int) -> None:
        """While a shown reply streams: repair what the channel layer may have lost.

        A snapshot asked for and not come is asked for again. A reply quiet for SYNC_CHECK_SECONDS
        is looked up in the database: if it ended (whoever ended it, in whatever process), the page
        gets its final state; if its heartbeat is stale (its process died), it is marked
        interrupted and every page is told; if it is alive but quiet, a snapshot makes sure no delta
        was lost. Errors (the database or the layer briefly down) never end the watchdog.
        """
        while message_id in self.heard:
            await asyncio.sleep(SNAPSHOT_RETRY_SECONDS)
            heard = self.heard.get(message_id)
            if heard is None:
                return
            now = time.monotonic()
            try:
                if message_id in self.syncing and now - self.asked.get(message_id, 0.0) >= SNAPSHOT_RETRY_SECONDS:
                    await self.ask_snapshot()
                if now - heard >= SYNC_CHECK_SECONDS:
                    self.heard[message_id] = now  # the next look in SYNC_CHECK_SECONDS
                    await self._look_up(message_id)
            except Exception:
                log.exception("Watchdog of reply %s in %s failed; it goes on", message_id, self.group)

    async def _look_up(self, message_id: int) -> None:
        """The database says whether a quiet reply ended or died; else ask for a snapshot."""
        rows = self.conversation.messages.filter(pk=message_id)
        status = await rows.values_list("status", flat=True).afirst()
        if status is None or status != Message.Status.STREAMING:
            await self.generation_finished(events.finished(message_id, status or ""))
            return
        if await rows.stale().amark_interrupted():
            finished = events.finished(message_id, Message.Status.INTERRUPTED)
            try:
                await self.channel_layer.group_send(self.conversation.group_name, finished)  # every page
            except Exception:
                await self.generation_finished(finished)  # this page at least; the others look themselves
            return
        if message_id not in self.syncing:
            self.syncing[message_id] = []
            await self.ask_snapshot()

    async def title_and_sidebar(self) -> str:
        """The conversation's new title in the header and the sidebar (after its first message named it)."""
        return await database_sync_to_async(self._title_and_sidebar)()

    def _title_and_sidebar(self) -> str:
        self.conversation.refresh_from_db(fields=["title"])
        context = {"conversation": self.conversation, "sidebar": access.sidebar_for(self.scope["user"]), "oob": True}
        return render_to_string(f"{CHAT_PAGE}#title", context) + render_to_string(f"{CHAT_PAGE}#sidebar", context)

    async def send_error(self, text: str) -> None:
        """Tell the page what went wrong, in its notices (nothing else changes)."""
        await self.send(text_data=render_to_string(f"{CHAT_PAGE}#notice", {"error": text}))
