"""The websocket of one conversation page: a viewer of its generations and a way to command them.

`receive()` validates, saves and starts a generation, then returns (DESIGN rule 1). Frames
sent to the browser are HTML fragments that htmx swaps in by id (hx-swap-oob).

Whenever this page shows a reply that is still streaming, it asks the generation (in whatever
process runs it) for a snapshot and holds live deltas until it arrives; it then sends the
snapshot and only the deltas after it, so the text has no gap and no duplicate.
"""

import asyncio
import json
import logging
import time
import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _

from conversations import events, i18n
from conversations.accounts import quotas
from conversations.chat import actions as reply_actions
from conversations.generation import feeds
from conversations.library import views as library
from conversations.models import Busy, Conversation, Message

log = logging.getLogger(__name__)

PAGE = "conversations/conversation.html"
MESSAGE_TEXT = "conversations/_message_text.html"
# How often a page waiting for a snapshot checks whether the generation's process died.
SYNC_CHECK_SECONDS = 3.0


# Group events whose handlers never touch the database. Channels runs close_old_connections in
# the database thread before every event it dispatches; for these that round trip is pure delay
# (under load each delta would queue behind all the database work of the process).
NO_DATABASE_EVENTS = {
    events.DELTA: "generation_delta",
    events.SNAPSHOT: "generation_snapshot",
    events.CONTEXT: "generation_context",
    **reply_actions.NO_DATABASE_EVENTS,
}


class ChatConsumer(reply_actions.ReplyActionsMixin, AsyncWebsocketConsumer):
    async def dispatch(self, message):
        handler = NO_DATABASE_EVENTS.get(message["type"])
        if handler is None:
            await super().dispatch(message)
        else:
            await getattr(self, handler)(message)

    async def connect(self):
        self.conversation = None
        self.syncing: dict[int, list[dict]] = {}  # message id -> deltas held until its snapshot
        self.heard: dict[int, float] = {}  # streaming message id -> when this page last heard of it
        self.last_seq: dict[int, int] = {}
        self.watchdogs: set[asyncio.Task] = set()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        # Channels runs no LocaleMiddleware: the owner's language for everything this socket renders,
        # and for the generations it starts (a task inherits it).
        await i18n.aactivate_for_scope(self.scope)
        try:
            code = uuid.UUID(self.scope["url_route"]["kwargs"]["code"])
            conversation = await Conversation.objects.for_user(user).aget(code=code)
        except (ValueError, Conversation.DoesNotExist):
            await self.close(code=4404)
            return
        self.conversation = conversation
        # Joining the group is the authorization: it happens only after the ownership check.
        await self.channel_layer.group_add(conversation.group_name, self.channel_name)
        await self.accept()
        await self.conversation.messages.stale().amark_interrupted()
        # Every reply still streaming (n choices stream at once).
        streaming = self.conversation.messages.filter(status=Message.Status.STREAMING).values_list("pk", flat=True)
        streaming = [pk async for pk in streaming]
        for message_id in streaming:
            await self._follow(message_id)
        await self.send(text_data=self._composer(busy=bool(streaming)))

    async def disconnect(self, code):
        for task in self.watchdogs:
            task.cancel()
        if self.conversation is not None:
            await self.channel_layer.group_discard(self.conversation.group_name, self.channel_name)

    # -- commands from the browser --------------------------------------------------------------

    async def _read_frame(self, text_data) -> dict | None:
        """The browser's JSON object, or None after telling the page it could not be read."""
        try:
            data = json.loads(text_data or "")
            if isinstance(data, dict):
                return data
        except ValueError:
            pass
        await self._send_error(_("That message could not be read. Reload the page and try again."))
        return None

    async def receive(self, text_data=None, bytes_data=None):
        data = await self._read_frame(text_data)
        if data is None:
            return
        action = data.get("action") or "send"
        if action == "send":
            await self._send_message(data.get("message"))
        elif action == "edit":
            await self._send_message(data.get("message"), replacing_id=data.get("message_id"))
        elif action in ("regenerate", "retry"):
            await self._regenerate(data.get("message_id"))
        elif action == "switch":
            await self._switch(data.get("message_id"))
        elif action == "stop":
            await self.channel_layer.group_send(self.conversation.control_group_name, events.stop())
        elif action == "sync":
            await self._send_transcript()
        elif action in reply_actions.ACTIONS:
            await self.reply_action(action, data)
        else:
            await self._send_error(_("Unknown action."))

    async def _get_message(self, message_id, role=None) -> Message | None:
        messages = self.conversation.messages.filter(role=role) if role else self.conversation.messages
        try:
            return await messages.aget(pk=int(message_id))
        except (TypeError, ValueError, Message.DoesNotExist):
            await self._send_error(_("That message is not in this conversation."))
            return None

    async def _send_message(self, text, replacing_id=None):
        if not isinstance(text, str) or not text.strip():
            await self._send_error(_("Type a message first."))
            return
        if len(text) > settings.MAX_MESSAGE_CHARS:
            await self._send_error(
                _(
                    "Your message is %(length)s characters long; the limit is %(limit)s. "
                    "Nothing was sent, and your text is still in the box."
                )
                % {"length": f"{len(text):,}", "limit": f"{settings.MAX_MESSAGE_CHARS:,}"}
            )
            return
        replacing = None
        if replacing_id is not None and (replacing := await self._get_message(replacing_id, "user")) is None:
            return
        if (refusal := await quotas.acheck_conversation(self.scope["user"], self.conversation)) is not None:
            await self._send_error(refusal.on_send)  # over a limit: nothing saved, nothing sent
            return
        had_title = bool(self.conversation.title)
        try:
            # n > 1 in the settings: n replies, side by side (conversations/choices.py).
            user_message, replies = await database_sync_to_async(self.conversation.send)(
                text.strip(), self.conversation.model, replacing=replacing
            )
        except Busy:
            await self._send_error(_("A reply is still being written. Wait for it, or stop it, before sending."))
            return
        reply = replies[0]
        opened = await feeds.open_chat(self.conversation, replies)
        if replacing is None:
            # Rendered once here, not by every viewer: the pages of one conversation are all its owner's.
            html = render_to_string(f"{PAGE}#added", {"messages": [user_message, reply]})
            if not had_title:
                html += await database_sync_to_async(self._title_and_sidebar)()
            event = events.added(html, [r.pk for r in replies])
        else:
            event = events.transcript()
        await self.channel_layer.group_send(self.conversation.group_name, event)
        opened.start()
        if replacing is None:
            # Only the tab that sent it has its box emptied, and only once the message is saved.
            await self.send(text_data=render_to_string(f"{PAGE}#composer_input", {"oob": True}))

    async def _regenerate(self, message_id):
        reply = await self._get_message(message_id, "assistant")
        if reply is None:
            return
        if (refusal := await quotas.acheck_conversation(self.scope["user"], self.conversation)) is not None:
            await self._send_error(refusal.on_regenerate)
            return
        try:
            replies = await database_sync_to_async(self.conversation.regenerate)(reply)
        except Busy:
            await self._send_error(_("A reply is still being written. Wait for it, or stop it, first."))
            return
        opened = await feeds.open_chat(self.conversation, replies)
        await self.channel_layer.group_send(self.conversation.group_name, events.transcript())
        opened.start()

    async def _switch(self, message_id):
        message = await self._get_message(message_id)
        if message is None:
            return
        await database_sync_to_async(self.conversation.switch_to)(message.pk)
        await self.channel_layer.group_send(self.conversation.group_name, events.transcript())

    # -- events from the group ----------------------------------------------------------------

    async def chat_added(self, event):
        # The generation starts only after this event is sent, and a channel delivers in order, so
        # every delta of the new reply comes after it: follow it from the start, no snapshot needed.
        for reply_id in event["reply_ids"]:
            self.last_seq[reply_id] = 0
            self._watch(reply_id)
        await self.send(text_data=event["html"] + self._composer(busy=True))

    async def chat_transcript(self, event):
        await self._send_transcript()

    async def chat_title(self, event):
        """The model named the conversation (conversations/titles.py): the new header and sidebar."""
        await self.send(text_data=event["html"])

    async def generation_delta(self, event):
        message_id = event["message_id"]
        self.heard[message_id] = time.monotonic()
        if message_id in self.syncing:
            self.syncing[message_id].append(event)
            return
        if event["seq"] <= self.last_seq.get(message_id, 0):
            return  # already part of the snapshot this page was given
        self.last_seq[message_id] = event["seq"]
        for frame in self._delta_frames(event):
            await self.send(text_data=frame)

    async def generation_snapshot(self, event):
        message_id = event["message_id"]
        self.heard[message_id] = time.monotonic()
        if message_id not in self.syncing:
            return
        held = self.syncing.pop(message_id)
        self.last_seq[message_id] = event["seq"]
        # The reply's text as a page has it after every delta so far, then the deltas after it.
        frames = [self._snapshot_frame(event)]
        for delta in held:
            if delta["seq"] > event["seq"]:
                self.last_seq[message_id] = delta["seq"]
                frames.extend(self._delta_frames(delta))
        for frame in frames:  # one message each: a frame for a table row must stand alone
            await self.send(text_data=frame)

    @staticmethod
    def _delta_frames(event) -> list[str]:
        """The frames of one delta: HTML the generation rendered once for every viewer."""
        return event["frames"]

    @staticmethod
    def _snapshot_frame(event) -> str:
        html = event.get("html")
        context = {"message": {"pk": event["message_id"], "content": event["content"]}, "text_oob": True}
        context["text_html"] = mark_safe(html) if html is not None else None  # noqa: S308 - rendering.py made it
        return render_to_string(MESSAGE_TEXT, context)

    async def generation_context(self, event):
        context = {"start_id": event["context_start_id"], "oob": True}
        await self.send(text_data=render_to_string(f"{PAGE}#context_marker", context))

    async def generation_finished(self, event):
        message_id = event["message_id"]
        # This page followed every delta: it already shows the finished text.
        shown = event.get("text_shown") and message_id in self.last_seq and message_id not in self.syncing
        self.syncing.pop(message_id, None)
        self.last_seq.pop(message_id, None)
        self.heard.pop(message_id, None)
        # None: not shown. One of n choices shown side by side counts as shown.
        message = await database_sync_to_async(self.conversation.shown_or_open_choice)(message_id)
        context = {"message": message, "oob": True, "preserve_text": message_id if shown else None}
        html = render_to_string(f"{PAGE}#message", context) if message else ""
        busy = await self.conversation.messages.filter(status=Message.Status.STREAMING).aexists()
        await self.send(text_data=html + await self.usage_totals() + self._composer(busy=busy))

    # -- helpers --------------------------------------------------------------------------------

    async def _follow(self, message_id: int):
        """Ask the generation of a streaming reply for a snapshot; hold its deltas until then."""
        self.syncing[message_id] = []
        await self.channel_layer.group_send(self.conversation.control_group_name, events.sync(self.channel_name))
        self._watch(message_id)

    def _watch(self, message_id: int):
        if message_id in self.heard:
            return
        self.heard[message_id] = time.monotonic()
        task = asyncio.create_task(self._watchdog(message_id))
        self.watchdogs.add(task)
        task.add_done_callback(self.watchdogs.discard)

    async def _watchdog(self, message_id: int):
        """While a shown reply streams: if it goes quiet, ask the database whether its process died.

        A reply whose heartbeat is stale (its process was killed) is marked interrupted and shown
        so. While deltas keep coming, this costs nothing.
        """
        while message_id in self.heard:
            await asyncio.sleep(SYNC_CHECK_SECONDS)
            heard = self.heard.get(message_id)
            if heard is None:
                return
            if time.monotonic() - heard < SYNC_CHECK_SECONDS:
                continue
            if await self.conversation.messages.filter(pk=message_id).stale().amark_interrupted():
                await self.generation_finished(events.finished(message_id))

    async def _send_transcript(self):
        """Re-render the shown branch from the database (after a reconnect or a branch change)."""
        await self.conversation.arefresh_from_db()
        # The newest page of the branch, as the page itself shows it; older pages load on scroll.
        transcript = await database_sync_to_async(library.transcript_context)(self.conversation)
        streaming = feeds.streaming_ids(transcript["branch"])
        context = {**transcript, "oob": True}
        html = render_to_string(f"{PAGE}#transcript", context)
        await self.send(text_data=html + self._composer(busy=bool(streaming)))
        for message_id in streaming:
            await self._follow(message_id)

    def _title_and_sidebar(self) -> str:
        self.conversation.refresh_from_db(fields=["title"])
        context = {
            "conversation": self.conversation,
            "sidebar": Conversation.objects.for_user(self.scope["user"]).sidebar(),
            "oob": True,
        }
        return render_to_string(f"{PAGE}#title", context) + render_to_string(f"{PAGE}#sidebar", context)

    @staticmethod
    def _composer(busy: bool) -> str:
        return render_to_string(f"{PAGE}#composer_actions", {"busy": busy, "oob": True})

    async def _send_error(self, text: str):
        await self.send(text_data=render_to_string(f"{PAGE}#notice", {"error": text}))
