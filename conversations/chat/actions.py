"""What the chat socket does for n choices, Continue, tool results, and live reasoning (issue 4).

`ReplyActionsMixin` is mixed into ChatConsumer: it handles the actions `pick` (go on with one
of n choices), `continue` (a reply cut off by max_tokens grows where it stopped, in the same
message, as ChatGPT's "Continue generating" does) and `tool_result` (one `tool` message per
call, then the model is asked again), and the group events `generation.extras` (reasoning and
tool calls so far, re-sent whole) and `choices.note`.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from django.conf import settings
from django.template.loader import render_to_string
from django.utils.translation import gettext as _

from conversations import events
from conversations.accounts import quotas
from conversations.generation import feeds
from conversations.generation.parts import tool_call_view
from conversations.models import Busy, CannotAnswer, CannotContinue, Conversation, NotAChoice

EXTRAS = "conversations/_message_extras.html"

ACTIONS = ("pick", "continue", "tool_result")
# Group events these handlers render without the database (see NO_DATABASE_EVENTS).
NO_DATABASE_EVENTS = {events.EXTRAS: "generation_extras", events.CHOICES_NOTE: "choices_note"}


def extras_frame(event: dict) -> str:
    """The reasoning and tool calls of a streaming reply so far, replacing what the page shows."""
    message_id = int(event["message_id"])
    reasoning = tools = ""
    if event.get("reasoning"):
        context = {"reasoning": event["reasoning"], "thinking": event.get("thinking")}
        reasoning = render_to_string(f"{EXTRAS}#live_reasoning", context)
    if event.get("tool_calls"):
        calls = [tool_call_view(c) for c in event["tool_calls"]]
        tools = render_to_string(f"{EXTRAS}#tool_calls", {"calls": calls, "live": True})
    return (
        f'<div id="msg-{message_id}-reasoning-live" hx-swap-oob="innerHTML">{reasoning}</div>'
        f'<div id="msg-{message_id}-tools-live" hx-swap-oob="innerHTML">{tools}</div>'
    )


def usage_frame(conversation: Conversation) -> str:
    """The conversation's token totals (header), to swap in when a reply ends."""
    return render_to_string("conversations/_usage_totals.html", {"conversation": conversation, "oob": True})


class ReplyActionsMixin:
    async def reply_action(self, action: str, data: dict):
        if action == "pick":
            await self._pick(data.get("message_id"))
        elif action == "continue":
            await self._continue(data.get("message_id"))
        elif action == "tool_result":
            await self._tool_result(data)

    async def _pick(self, message_id):
        message = await self._get_message(message_id, "assistant")
        if message is None:
            return
        try:
            await database_sync_to_async(self.conversation.pick)(message)
        except Busy:
            await self._send_error(_("Wait until every choice is finished (or stop them) before picking one."))
            return
        except NotAChoice:
            await self._send_error(_("That reply is not one of the choices to pick from."))
            return
        await self.channel_layer.group_send(self.conversation.group_name, events.transcript())

    async def _continue(self, message_id):
        message = await self._get_message(message_id, "assistant")
        if message is None:
            return
        if (refusal := await quotas.acheck_conversation(self.scope["user"], self.conversation.pk)) is not None:
            await self._send_error(refusal.on_regenerate)
            return
        try:
            message = await database_sync_to_async(self.conversation.reopen_to_continue)(message)
        except Busy:
            await self._send_error(_("A reply is still being written. Wait for it, or stop it, first."))
            return
        except CannotContinue:
            await self._send_error(_("Only the last reply, when it was cut off by max_tokens, can be continued."))
            return
        opened = await feeds.open_chat(self.conversation, [message], continuing=True)
        await self.channel_layer.group_send(self.conversation.group_name, events.transcript())
        opened.start()

    async def _tool_result(self, data: dict):
        message = await self._get_message(data.get("message_id"), "assistant")
        if message is None:
            return
        calls = [c for c in message.tool_calls or [] if isinstance(c, dict)]
        results = {}
        for call in calls:
            text = data.get(f"result:{call.get('id')}")
            if not isinstance(text, str) or not text.strip():
                name = (call.get("function") or {}).get("name") or call.get("id")
                await self._send_error(_("Enter a result for every tool call (%(name)s has none).") % {"name": name})
                return
            if len(text) > settings.MAX_MESSAGE_CHARS:
                await self._send_error(
                    _("A tool result is %(length)s characters long; the limit is %(limit)s. Nothing was sent.")
                    % {"length": f"{len(text):,}", "limit": f"{settings.MAX_MESSAGE_CHARS:,}"}
                )
                return
            results[call.get("id")] = text
        if not calls:
            await self._send_error(_("That reply called no tools."))
            return
        if (refusal := await quotas.acheck_conversation(self.scope["user"], self.conversation.pk)) is not None:
            await self._send_error(refusal.on_send)
            return
        try:
            replies = await database_sync_to_async(self.conversation.add_tool_results)(message, results)
        except Busy:
            await self._send_error(_("A reply is still being written. Wait for it, or stop it, first."))
            return
        except CannotAnswer:
            await self._send_error(_("The results of these tool calls were already sent."))
            return
        opened = await feeds.open_chat(self.conversation, replies)
        await self.channel_layer.group_send(self.conversation.group_name, events.transcript())
        opened.start()

    # -- group events (no database) -------------------------------------------------------------

    async def generation_extras(self, event):
        await self.send(text_data=extras_frame(event))

    async def choices_note(self, event):
        context = {"parent_id": event["parent_id"], "count": event["count"], "own_request": event["own_request"]}
        await self.send(text_data=render_to_string("conversations/_choices.html#note", {**context, "oob": True}))

    async def usage_totals(self) -> str:
        """The conversation's token totals, as a fragment to swap in."""
        return await database_sync_to_async(usage_frame)(self.conversation)
