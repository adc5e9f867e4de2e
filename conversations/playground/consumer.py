"""The playground's websocket: Run, Stop and resync, with frames from playground.html.

A `ChatConsumer` (same authorization, resume, stop and watchdog) whose actions and frames are the
playground's (conversations/playground.py has the page and the settings view).
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from django.conf import settings
from django.template.loader import render_to_string
from django.utils.html import escape
from django.utils.translation import gettext as _

from conversations import events
from conversations.accounts import quotas
from conversations.chat.consumer import ChatConsumer
from conversations.generation import completion
from conversations.models import Busy, Conversation, Message
from conversations.playground import runs as run_views
from conversations.playground.views import PAGE, form_context
from conversations.providers import params as P


class PlaygroundConsumer(ChatConsumer):
    """The socket of a playground page: Run, Stop and resync; frames from playground.html."""

    async def receive(self, text_data=None, bytes_data=None):
        data = await self._read_frame(text_data)
        if data is None:
            return
        action = data.get("action") or "run"
        if action == "run":
            await self._run(data)
        elif action == "stop":
            await self.channel_layer.group_send(self.conversation.control_group_name, events.stop())
        elif action == "sync":
            await self._send_transcript()
        else:
            await self._send_error(_("Unknown action."))

    async def _run(self, data: dict):
        await self.conversation.arefresh_from_db()
        if self.conversation.mode != Conversation.Mode.COMPLETION:
            await self._send_error(_("This conversation is not a text completion."))
            return
        prompt = data.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            await self._send_error(_("Type a prompt first."))
            return
        if len(prompt) > settings.MAX_MESSAGE_CHARS:
            await self._send_error(
                _("Your prompt is %(length)s characters long; the limit is %(limit)s. Nothing was sent.")
                % {"length": f"{len(prompt):,}", "limit": f"{settings.MAX_MESSAGE_CHARS:,}"}
            )
            return
        result = P.validate(data, P.COMPLETION)
        if not result.ok:
            await self._send_feedback(data, result.errors, "error")
            return
        if (refusal := await quotas.acheck_conversation(self.scope["user"], self.conversation)) is not None:
            await self._send_error(refusal.on_send)
            return
        self.conversation.params = result.params
        await self.conversation.asave(update_fields=["params"])
        had_title = bool(self.conversation.title)
        try:
            run, choices = await database_sync_to_async(self.conversation.start_run)(prompt, result.params)
        except Busy:
            await self._send_error(_("A completion is still running. Wait for it, or stop it, first."))
            return
        opened = await completion.open_completion(self.conversation, run, choices)
        html = render_to_string(f"{PAGE}#added", {"runs": [run_views.Run(run, choices)]})
        if not had_title:
            html += await database_sync_to_async(self._title_and_sidebar)()
        await self.channel_layer.group_send(self.conversation.group_name, events.added(html, [c.pk for c in choices]))
        opened.start()
        await self._send_feedback(data, {}, "saved")

    async def _send_feedback(self, values: dict, errors: dict, status: str):
        context = {**form_context(self.conversation, values, errors), "status": status}
        await self.send(text_data=render_to_string(f"{PAGE}#form_feedback", context))

    # -- events from the group ----------------------------------------------------------------------

    async def chat_added(self, event):
        # Sent before the generation starts: every delta of these choices follows it, from seq 1.
        for message_id in event["reply_ids"]:
            self.last_seq[message_id] = 0
            self._watch(message_id)
        await self.send(text_data=event["html"] + self._composer(busy=True))

    # Playground text is plain (the prompt and its completion), not Markdown: its own frames.
    @staticmethod
    def _delta_frames(event) -> list[str]:
        return [f'<span id="msg-{event["message_id"]}-text" hx-swap-oob="beforeend">{escape(event["text"])}</span>']

    @staticmethod
    def _snapshot_frame(event) -> str:
        return f'<span id="msg-{event["message_id"]}-text" hx-swap-oob="innerHTML">{escape(event["content"])}</span>'

    async def generation_finished(self, event):
        message_id = event["message_id"]
        self.syncing.pop(message_id, None)
        self.last_seq.pop(message_id, None)
        self.heard.pop(message_id, None)
        html, busy = await database_sync_to_async(self._finished_html)(message_id)
        await self.send(text_data=html + self._composer(busy=busy))

    def _finished_html(self, message_id: int) -> tuple[str, bool]:
        """The finished choice, or its whole run once no choice of it streams any more."""
        run = run_views.run_of(self.conversation, message_id)
        busy = run_views.busy(self.conversation)
        if run is None:
            return "", busy
        if run.is_streaming:
            choice = next((c for c in run.choices if c.pk == message_id), None)
            if choice is None:
                return "", busy
            return render_to_string(f"{PAGE}#choice", {"run": run, "choice": choice, "oob": True}), busy
        return render_to_string(f"{PAGE}#run", {"run": run, "oob": True}), busy

    # -- helpers -----------------------------------------------------------------------------------

    async def _follow(self, message_id: int):
        """Follow every streaming choice of the run: one snapshot request answers for all of them."""
        streaming = [
            pk
            async for pk in self.conversation.messages.filter(status=Message.Status.STREAMING).values_list(
                "pk", flat=True
            )
        ]
        for pk in streaming or [message_id]:
            self.syncing[pk] = []
            self._watch(pk)
        await self.channel_layer.group_send(self.conversation.control_group_name, events.sync(self.channel_name))

    async def _send_transcript(self):
        await self.conversation.arefresh_from_db()
        runs = await database_sync_to_async(run_views.runs_of)(self.conversation)
        html = render_to_string(f"{PAGE}#runs", {"runs": runs, "oob": True})
        streaming = [c.pk for run in runs for c in run.choices if c.is_streaming]
        await self.send(text_data=html + self._composer(busy=bool(streaming)))
        if streaming:
            await self._follow(streaming[0])

    @staticmethod
    def _composer(busy: bool) -> str:
        return render_to_string(f"{PAGE}#run_actions", {"busy": busy, "oob": True})
