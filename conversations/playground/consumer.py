"""The playground page's websocket: Run, Stop and resync, with frames from playground.html.

A `ConversationSocket` (conversations/sockets.py: the same authorization, resume, Stop and
watchdog as the chat's) whose one command of its own is Run: check the prompt and the completion
parameters, save them and the run, then open its `CompletionGeneration`, show the run on every
page of the conversation and start it. Its text is plain (the prompt and its completion), not
Markdown: deltas and snapshots are spans of escaped text.

Actions (the frame's "action"; none means run): run, stop, sync.
"""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.template.loader import render_to_string
from django.utils.translation import gettext as _

from chatsite.db import database_sync_to_async
from conversations import events
from conversations.accounts import quotas
from conversations.generation import completion
from conversations.models import Busy, Conversation
from conversations.playground import runs as run_views
from conversations.playground.views import PAGE, form_context
from conversations.providers import params as P
from conversations.sockets import Action, ConversationSocket, Frame


class PlaygroundSocket(ConversationSocket):
    default_action = "run"

    # -- actions ----------------------------------------------------------------------------------

    async def run(self, data: Frame) -> None:
        await self.conversation.arefresh_from_db()
        if self.conversation.mode != Conversation.Mode.COMPLETION:
            await self.send_error(_("This conversation is not a text completion."))
            return
        prompt = data.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            await self.send_error(_("Type a prompt first."))
            return
        if len(prompt) > settings.MAX_MESSAGE_CHARS:
            await self.send_error(
                _("Your prompt is %(length)s characters long; the limit is %(limit)s. Nothing was sent.")
                % {"length": f"{len(prompt):,}", "limit": f"{settings.MAX_MESSAGE_CHARS:,}"}
            )
            return
        result = P.validate(data, P.COMPLETION)
        if not result.ok:
            await self._send_feedback(data, result.errors, "error")
            return
        if (refusal := await quotas.acheck_conversation(self.scope["user"], self.conversation)) is not None:
            await self.send_error(refusal.on_send)
            return
        self.conversation.params = result.params
        await self.conversation.asave(update_fields=["params"])
        had_title = bool(self.conversation.title)
        try:
            run, choices = await database_sync_to_async(self.conversation.start_run)(prompt, result.params)
        except Busy:
            await self.send_error(_("A completion is still running. Wait for it, or stop it, first."))
            return
        opened = await completion.open_completion(self.conversation, run, choices)
        html: str = render_to_string(f"{PAGE}#added", {"runs": [run_views.Run(run, choices)]})
        if not had_title:
            html += await self.title_and_sidebar()
        await self.channel_layer.group_send(self.conversation.group_name, events.added(html, [c.pk for c in choices]))
        opened.start()
        await self._send_feedback(data, {}, "saved")

    actions: ClassVar[dict[str, Action]] = {
        "run": run,
        "stop": ConversationSocket.stop_replies,
        "sync": ConversationSocket.resync,
    }

    async def _send_feedback(self, values: Frame, errors: dict[str, str], status: str) -> None:
        """The form's status line and every error slot (never its inputs: nothing typed is lost)."""
        context = {**form_context(self.conversation, values, errors), "status": status}
        await self.send(text_data=render_to_string(f"{PAGE}#form_feedback", context))

    # -- the playground page's frames ------------------------------------------------------------

    def composer(self, busy: bool) -> str:
        return render_to_string(f"{PAGE}#run_actions", {"busy": busy, "oob": True})

    def delta_frames(self, event: events.Event) -> list[str]:
        context = {"message_id": event["message_id"], "text": event["text"], "swap": "beforeend"}
        return [render_to_string(f"{PAGE}#completion_text", context)]

    def snapshot_frame(self, event: events.Event) -> str:
        context = {"message_id": event["message_id"], "text": event["content"], "swap": "innerHTML"}
        return render_to_string(f"{PAGE}#completion_text", context)

    async def finished_frame(self, event: events.Event, *, followed: bool) -> str:
        html, busy = await database_sync_to_async(self._finished_html)(event["message_id"])
        return html + self.composer(busy=busy)

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

    async def transcript(self) -> tuple[str, list[int]]:
        runs = await database_sync_to_async(run_views.runs_of)(self.conversation)
        html = render_to_string(f"{PAGE}#runs", {"runs": runs, "oob": True})
        return html, [c.pk for run in runs for c in run.choices if c.is_streaming]
