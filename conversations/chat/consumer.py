"""The chat page's websocket: its actions (send, edit, regenerate, pick, continue, tool results...) and events.

A `ConversationSocket` (conversations/sockets.py: who may connect, following streaming replies,
the action table) whose actions command a chat's tree of messages and whose frames are the chat
page's (conversations/chat/frames.py). Every action validates, saves through a tree verb of
`Conversation` and starts the generation, in this order: open it (it listens for Stop and sync
from then on), tell every page of the conversation (the group), then start it.

Actions (the frame's "action"; none means send):
    send, edit        a new message, or a new version of an earlier one (the old one stays as a branch)
    regenerate, retry new version(s) of a reply
    switch            show another version
    pick              go on with one of n choices (the others stay as versions)
    continue          a reply cut off by max_tokens grows where it stopped, in the same message
    tool_result       one `tool` message per call of a reply, then the model is asked again
    stop, sync        stop every streaming reply; re-render after a reconnect
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from django.conf import settings
from django.utils.translation import gettext as _

from chatsite import db
from chatsite.db import database_sync_to_async
from conversations import events
from conversations.accounts import quotas
from conversations.chat import frames
from conversations.generation import feeds
from conversations.library import views as library
from conversations.models import Busy, CannotAnswer, CannotContinue, Message, NotAChoice
from conversations.sockets import Action, ConversationSocket, Frame

log = logging.getLogger(__name__)


class ChatSocket(ConversationSocket):
    # -- actions ----------------------------------------------------------------------------------

    async def send_message(self, data: Frame) -> None:
        await self._send_text(data.get("message"))

    async def edit_message(self, data: Frame) -> None:
        await self._send_text(data.get("message"), replacing_id=data.get("message_id"))

    async def _send_text(self, text: object, replacing_id: object = None) -> None:
        if not isinstance(text, str) or not text.strip():
            await self.send_error(_("Type a message first."))
            return
        if len(text) > settings.MAX_MESSAGE_CHARS:
            await self.send_error(
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
        had_title = bool(self.conversation.title)
        try:
            # One trip to the database thread: the quota check, then the exchange (with n > 1 in
            # the settings, n replies side by side: generation/feeds.py).
            refusal, sent = await database_sync_to_async(self._check_and_send)(text.strip(), replacing)
        except Busy:
            await self.send_error(_("A reply is still being written. Wait for it, or stop it, before sending."))
            return
        if refusal is not None:
            await self.send_error(refusal.on_send)  # over a limit: nothing saved, nothing sent
            return
        user_message, replies, reading = sent
        opened = await feeds.open_chat(self.conversation, replies, reading=reading)
        opened.start(announced=False)  # the provider is asked while the pages are told
        try:
            if replacing is None:
                # Rendered once here, not by every viewer: the pages of one conversation are all its owner's.
                event = events.added(frames.added(user_message, replies[0]), [r.pk for r in replies])
            else:
                event = events.transcript()
            await self.channel_layer.group_send(self.conversation.group_name, event)
        finally:
            opened.announced()  # the replies publish from now on
        # What the page needs besides the reply comes after.
        if replacing is None:
            # Only the tab that sent it has its box emptied, and only once the message is saved.
            await self.send(text_data=frames.emptied_composer_input())
            if not had_title:  # its first message named it: the header and the sidebar, on every page
                # In a task: this socket goes back to its events (the reply's first words) at once,
                # instead of waiting for the database thread, busy with everyone's sends in a burst.
                task = asyncio.create_task(self._announce_title())
                self.watchdogs.add(task)
                task.add_done_callback(self.watchdogs.discard)

    async def _announce_title(self) -> None:
        await db.after_others()  # the sends of a burst, and their replies' first words, go first
        try:
            frame = await self.title_and_sidebar()
            await self.channel_layer.group_send(self.conversation.group_name, events.title(frame))
        except Exception:  # the page keeps its old title until the model's title or a reload
            log.exception("Could not announce the new title of conversation %s", self.conversation.pk)

    def _check_and_send(self, text: str, replacing: Message | None):
        refusal = quotas.check_conversation(self.scope["user"], self.conversation)
        if refusal is not None:
            return refusal, None
        user_message, replies = self.conversation.send(text, self.conversation.model, replacing=replacing)
        return None, (user_message, replies, feeds.read_for(self.conversation.pk, replies[0]))

    async def regenerate(self, data: Frame) -> None:
        reply = await self._get_message(data.get("message_id"), "assistant")
        if reply is None:
            return
        if (refusal := await quotas.acheck_conversation(self.scope["user"], self.conversation)) is not None:
            await self.send_error(refusal.on_regenerate)
            return
        try:
            replies = await database_sync_to_async(self.conversation.regenerate)(reply)
        except Busy:
            await self.send_error(_("A reply is still being written. Wait for it, or stop it, first."))
            return
        opened = await feeds.open_chat(self.conversation, replies)
        await self.channel_layer.group_send(self.conversation.group_name, events.transcript())
        opened.start()

    async def switch(self, data: Frame) -> None:
        message = await self._get_message(data.get("message_id"))
        if message is None:
            return
        await database_sync_to_async(self.conversation.switch_to)(message.pk)
        await self.channel_layer.group_send(self.conversation.group_name, events.transcript())

    async def pick(self, data: Frame) -> None:
        message = await self._get_message(data.get("message_id"), "assistant")
        if message is None:
            return
        try:
            await database_sync_to_async(self.conversation.pick)(message)
        except Busy:
            await self.send_error(_("Wait until every choice is finished (or stop them) before picking one."))
            return
        except NotAChoice:
            await self.send_error(_("That reply is not one of the choices to pick from."))
            return
        await self.channel_layer.group_send(self.conversation.group_name, events.transcript())

    async def continue_reply(self, data: Frame) -> None:
        message = await self._get_message(data.get("message_id"), "assistant")
        if message is None:
            return
        if (refusal := await quotas.acheck_conversation(self.scope["user"], self.conversation.pk)) is not None:
            await self.send_error(refusal.on_regenerate)
            return
        try:
            message = await database_sync_to_async(self.conversation.reopen_to_continue)(message)
        except Busy:
            await self.send_error(_("A reply is still being written. Wait for it, or stop it, first."))
            return
        except CannotContinue:
            await self.send_error(_("Only the last reply, when it was cut off by max_tokens, can be continued."))
            return
        opened = await feeds.open_chat(self.conversation, [message], continuing=True)
        await self.channel_layer.group_send(self.conversation.group_name, events.transcript())
        opened.start()

    async def answer_tools(self, data: Frame) -> None:
        message = await self._get_message(data.get("message_id"), "assistant")
        if message is None:
            return
        calls = [c for c in message.tool_calls or [] if isinstance(c, dict)]
        results: dict[Any, str] = {}  # call id -> its result
        for call in calls:
            text = data.get(f"result:{call.get('id')}")
            if not isinstance(text, str) or not text.strip():
                name = (call.get("function") or {}).get("name") or call.get("id")
                await self.send_error(_("Enter a result for every tool call (%(name)s has none).") % {"name": name})
                return
            if len(text) > settings.MAX_MESSAGE_CHARS:
                await self.send_error(
                    _("A tool result is %(length)s characters long; the limit is %(limit)s. Nothing was sent.")
                    % {"length": f"{len(text):,}", "limit": f"{settings.MAX_MESSAGE_CHARS:,}"}
                )
                return
            results[call.get("id")] = text
        if not calls:
            await self.send_error(_("That reply called no tools."))
            return
        if (refusal := await quotas.acheck_conversation(self.scope["user"], self.conversation.pk)) is not None:
            await self.send_error(refusal.on_send)
            return
        try:
            replies = await database_sync_to_async(self.conversation.add_tool_results)(message, results)
        except Busy:
            await self.send_error(_("A reply is still being written. Wait for it, or stop it, first."))
            return
        except CannotAnswer:
            await self.send_error(_("The results of these tool calls were already sent."))
            return
        opened = await feeds.open_chat(self.conversation, replies)
        await self.channel_layer.group_send(self.conversation.group_name, events.transcript())
        opened.start()

    actions: ClassVar[dict[str, Action]] = {
        "send": send_message,
        "edit": edit_message,
        "regenerate": regenerate,
        "retry": regenerate,
        "switch": switch,
        "stop": ConversationSocket.stop_replies,
        "sync": ConversationSocket.resync,
        "pick": pick,
        "continue": continue_reply,
        "tool_result": answer_tools,
    }

    async def _get_message(self, message_id: Any, role: str | None = None) -> Message | None:
        """A message of this conversation (with that role), or None after saying it is not one."""
        messages = self.conversation.messages.filter(role=role) if role else self.conversation.messages.all()
        try:
            return await messages.aget(pk=int(message_id))
        except (TypeError, ValueError, Message.DoesNotExist):
            await self.send_error(_("That message is not in this conversation."))
            return None

    # -- events from the group (the rest are ConversationSocket's) ---------------------------------

    async def generation_context(self, event: events.Event) -> None:
        await self.send(text_data=frames.context_marker(event))

    async def generation_extras(self, event: events.Event) -> None:
        """Reasoning and tool calls so far, re-sent whole."""
        await self.send(text_data=frames.live_extras(event))

    async def choices_note(self, event: events.Event) -> None:
        await self.send(text_data=frames.choices_note(event))

    # -- the chat page's frames -------------------------------------------------------------------

    def composer(self, busy: bool) -> str:
        return frames.composer_actions(busy)

    def delta_frames(self, event: events.Event) -> list[str]:
        return frames.delta(event)

    def snapshot_frame(self, event: events.Event) -> str:
        return frames.snapshot(event)

    async def finished_frame(self, event: events.Event, *, followed: bool) -> str:
        message_id = event["message_id"]
        # A page that followed every delta already shows the finished text: it keeps its copy.
        shown = event.get("text_shown") and followed
        # The branch shown may have changed since this page connected (another tab sent a message).
        await self.conversation.arefresh_from_db(fields=["active_leaf"])
        # None: not shown. One of n choices shown side by side counts as shown.
        message = await database_sync_to_async(self.conversation.shown_or_open_choice)(message_id)
        html = frames.message(message, preserve_text=message_id if shown else None) if message else ""
        busy = await self.conversation.messages.filter(status=Message.Status.STREAMING).aexists()
        usage = await database_sync_to_async(frames.usage_totals)(self.conversation)
        return html + usage + self.composer(busy=busy)

    async def transcript(self) -> tuple[str, list[int]]:
        # The newest page of the branch, as the page itself shows it; older pages load on scroll.
        context = await database_sync_to_async(library.transcript_context)(self.conversation)
        return frames.transcript(context), feeds.streaming_ids(context["branch"])
