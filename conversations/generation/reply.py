"""One reply's stream: its text, seq-numbered deltas, snapshots, checkpoint state and final save.

A `Reply` is one assistant message being written. A feed (feeds.py for chat, completion.py for
the playground) hands it what the provider sends, through `take()` (a chat delta: answer,
reasoning, tool calls, log-probabilities) or `add_text()` (plain text). The reply buffers it and
publishes it to the conversation's group as `generation.delta` events, one per flush: its
flusher sends new text as soon as there is some (the feed's reader paces itself), so the
database never delays a delta. It answers a viewer's sync with a snapshot, gives the pacer
(pacer.py) what a checkpoint saves, and at the end writes the message once, records its usage
and announces `generation.finished`.

It does not know where its text comes from, nor whether it is one of n choices. How it looks
is a `Display`: `Markdown` (chat: the HTML is rendered once, here, and deltas carry the frames
that update every page's copy) or `PlainText` (the playground: plain deltas, no frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from asgiref.sync import sync_to_async
from django.db import DatabaseError
from django.utils import timezone

from chatsite.db import close_broken
from chatsite.retrying import retrying
from conversations import events, rendering
from conversations.accounts.usage import arecord_reply
from conversations.generation import pacer, titles
from conversations.generation.control import channel_layer
from conversations.generation.pacer import Checkpoint
from conversations.generation.parts import ReplyParts, final_parts
from conversations.models import Conversation, Message
from conversations.providers import client as llm

log = logging.getLogger(__name__)

# Reasoning and tool calls being written are re-sent whole to viewers at most this often.
EXTRAS_SECONDS = 0.25
# The final save is tried again, with growing pauses, this long while the database is down: the
# text is in memory until then, and the row says "streaming" (its heartbeat keeps it so).
FINAL_SAVE_SECONDS = 180.0
# The end is announced to the pages again, with growing pauses, this long while the channel layer
# is down (a page that never hears it finds the end in the database: its watchdog looks).
ANNOUNCE_SECONDS = 30.0


class Display(Protocol):
    """How viewers see a reply's text while it streams."""

    @property
    def html(self) -> str | None:
        """The reply as a page has it after every delta so far (None: its plain text is enough)."""
        ...

    @property
    def needs_final(self) -> bool:
        """The end of the text still changes what pages show (a last frame), even with no new text."""
        ...

    def delay(self, pending: int) -> float:
        """Seconds to gather more text before the next delta, with `pending` characters waiting."""
        ...

    def frames(self, text: str, *, final: bool) -> list[str] | None:
        """What updates a page's copy to `text` (the whole reply so far); None: deltas carry plain text."""
        ...

    def shown(self, content: str) -> bool:
        """A page that followed every delta already shows `content`, as saved at the end."""
        ...


class Markdown:
    """Chat: rendered once, here, for every viewer (conversations/rendering.py)."""

    def __init__(self, element_id: str, text: str = ""):
        self._stream = rendering.StreamRenderer(element_id, text)

    @property
    def html(self) -> str | None:
        return self._stream.html

    @property
    def needs_final(self) -> bool:
        return not self._stream.final  # every block is finished by a last render

    def delay(self, pending: int) -> float:
        # Rendered HTML goes out at most every so often (conversations/rendering.py): gather text.
        return self._stream.delay(pending)

    def frames(self, text: str, *, final: bool) -> list[str] | None:
        return self._stream.update(text, final=final)

    def shown(self, content: str) -> bool:
        return self._stream.final and self._stream.text == content


class PlainText:
    """The playground: its text is plain (a prompt and its completion), the page escapes it."""

    html = None
    needs_final = False

    def delay(self, pending: int) -> float:
        return 0.0

    def frames(self, text: str, *, final: bool) -> list[str] | None:
        return None

    def shown(self, content: str) -> bool:
        return False


class Reply:
    """One assistant message being streamed: what viewers have seen of it, and its final save.

    A feed sets what it learns on the public fields (`model`, `json_mode`, `own_request`,
    `finish_reason`, `usage`, `usage_estimated`, `conversation`) and drives the stream:
    `start()`, then `take()`/`add_text()` as text comes, `close()` and `drained()` when no more
    comes, and `finish()`.
    """

    def __init__(self, conversation: Conversation, message: Message, *, continuing: bool = False, plain: bool = False):
        self.conversation = conversation
        self.message = message
        self.message_id: int = message.pk
        self.group = conversation.group_name
        self.layer = channel_layer()
        self.model = message.model
        self.json_mode = False
        self.own_request = message.own_request
        # Continue after "length": the reply grows from what it has (conversations/chat/actions.py).
        self.continuing = continuing
        if continuing:
            self.extras = ReplyParts(
                reasoning=message.reasoning,
                reasoning_ms=message.reasoning_ms,
                logprobs=message.logprobs,
                answered=bool(message.content.strip()),
            )
        else:
            self.extras = ReplyParts()
        self.gate: asyncio.Event | None = None  # set once the reply may publish (ChatFeed.start)
        self.finish_reason = ""
        self.usage: llm.Usage | None = None
        self.usage_estimated = False
        self.seq = 0
        self.started = time.monotonic()
        self.ttft_ms: int | None = None
        self.first_token_at: float | None = None
        self._text = message.content if continuing else ""  # what has gone out in deltas
        self._base_length = len(self._text)
        self._parts: list[str] = []  # received since the last delta
        self._new_text = asyncio.Event()
        self._closing = False  # no more text: the flusher sends what is left and ends
        self._closed = asyncio.Event()
        self.publish_failures = 0  # events the channel layer refused (pages repair from the seq numbers)
        self._flusher: asyncio.Task[None] | None = None
        self._extras_sent = (0, 0.0)  # (extras.version, time.monotonic()) of the last live update
        self._usage_recorded = False
        self._display: Display = PlainText() if plain else Markdown(f"msg-{self.message_id}-text", self._text)

    @property
    def content(self) -> str:
        """Everything received so far."""
        return self._text + "".join(self._parts) if self._parts else self._text

    def generated_text(self) -> str:
        """What this request generated, reasoning and tool calls included (a continuation's earlier text is not)."""
        return self.content[self._base_length :] + self.extras.new_text()

    # -- taking text ------------------------------------------------------------------------------

    def take(self, choice: llm.ChoiceDelta, model: str = "") -> bool:
        """Take one chat delta of this reply's choice; True when it changed anything viewers see."""
        if model:
            self.model = model
        version = self.extras.version
        text = self.extras.feed(choice)
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason
            text += self.extras.finish()
        return self._received(text, changed=bool(text) or self.extras.version != version)

    def add_text(self, text: str) -> bool:
        """Take plain text, as it is; True if there was any."""
        return self._received(text, changed=bool(text))

    def _received(self, text: str, *, changed: bool) -> bool:
        if text:
            self._parts.append(text)
        if changed and self.ttft_ms is None:
            self.first_token_at = time.monotonic()
            self.ttft_ms = int((self.first_token_at - self.started) * 1000)
        if text:
            self._new_text.set()  # the flusher sends it now
        return changed

    # -- publishing -------------------------------------------------------------------------------

    async def publish(self, event: events.Event) -> bool:
        """To every page open on the conversation; False if the channel layer failed.

        A failed delta is not sent again: its seq number was used, so a page that missed it sees a
        gap at the next one (or at the end) and repairs its copy from a snapshot or the database.
        """
        if self.gate is not None:
            await self.gate.wait()  # the pages are told the reply exists first
        try:
            await self.layer.group_send(self.group, event)
        except Exception as exc:
            self.publish_failures += 1
            log.warning("Could not publish %s of reply %s: %r", event.get("type"), self.message_id, exc)
            return False
        return True

    def start(self) -> None:
        """Text may come: publish it as it does."""
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop())

    def close(self) -> None:
        """No more text comes: the flusher sends what is left (every block finished) and ends."""
        self._closing = True
        self._closed.set()
        self._new_text.set()

    async def drained(self) -> None:
        """Wait until everything received has gone out (after close())."""
        if self._flusher is not None:
            await self._flusher

    async def _flush_loop(self) -> None:
        """Publish new text as soon as the reader has some; the reader paces itself.

        Checkpoints and heartbeats are the pacer's job, so the database never delays a delta.
        """
        while not self._closing:
            await self._new_text.wait()
            self._new_text.clear()
            if self.seq:  # the first words go out at once (time to first token)
                # Coalesce: whatever else arrives within the pacer's window goes out in the same delta.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), pacer.current_window())
            while not self._closing and (delay := self._display.delay(sum(map(len, self._parts)))) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_text.wait(), delay)
                self._new_text.clear()
            await self._flush()
        await self._flush()

    async def _flush(self) -> None:
        final = self._closing  # no more text: every block is finished
        if not self._parts and not (final and self._display.needs_final):
            return
        text = "".join(self._parts)
        self._parts.clear()
        self._text += text
        frames = self._display.frames(self._text, final=final)
        if not text and not frames:
            return
        self.seq += 1
        await self.publish(events.delta(self.message_id, self.seq, text, frames))

    async def send_extras(self, *, force: bool = False) -> None:
        """Show viewers the reasoning and tool calls so far, if they changed (at most every EXTRAS_SECONDS)."""
        version, sent_at = self._extras_sent
        now = time.monotonic()
        if self.extras.version == version or (not force and now - sent_at < EXTRAS_SECONDS):
            return
        self._extras_sent = (self.extras.version, now)
        if self.extras.reasoning or self.extras.tool_calls:
            await self.publish(self._extras_event())

    def _extras_event(self) -> events.Event:
        # Whole: a late viewer needs no history.
        return events.extras(self.message_id, self.extras.reasoning, self.extras.thinking, self.extras.tool_calls)

    async def answer_sync(self, reply_to: str) -> None:
        """A viewer that just connected asks where the reply stands: a snapshot, then its extras."""
        await self.layer.send(reply_to, events.snapshot(self.message_id, self.seq, self._text, self._display.html))
        if self.extras.reasoning or self.extras.tool_calls:
            await self.layer.send(reply_to, self._extras_event())

    # -- what the pacer reads (pacer.Streaming) -----------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def progress(self) -> int:
        """The text sent out, plus the reasoning and tool calls received."""
        return len(self._text) + self.extras.size

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self._text, self.extras.reasoning, self.extras.tool_calls or None)

    # -- the end --------------------------------------------------------------------------------------

    async def finish(self, status: str, error: str = "") -> None:
        """The final save, the usage record (once, even if the end is written twice), `generation.finished`.

        The save is tried again while the database is briefly down (FINAL_SAVE_SECONDS), and the
        announcement while the channel layer is (ANNOUNCE_SECONDS): a reply whose text arrived is
        never lost, nor turned into an error, by a blip.
        """
        parts = final_parts(
            self.extras, self.content, self.usage, self.usage_estimated, self.message if self.continuing else None
        )
        fields = {
            "content": parts.content,
            "reasoning": parts.reasoning,
            "reasoning_ms": parts.reasoning_ms,
            "tool_calls": parts.tool_calls,
            "logprobs": parts.logprobs,
            "json_mode": self.json_mode,
            "own_request": self.own_request,
            "status": status,
            "error": error,
            "finish_reason": self.finish_reason or "",
            "model": self.model or "",
            "prompt_tokens": parts.prompt_tokens,
            "completion_tokens": parts.completion_tokens,
            "usage_estimated": parts.usage_estimated,
            "ttft_ms": self.ttft_ms,
            "duration_ms": int((time.monotonic() - self.started) * 1000),
        }

        async def save() -> None:
            try:
                await Message.objects.filter(pk=self.message_id).aupdate(**fields, heartbeat_at=timezone.now())
            except DatabaseError:
                await sync_to_async(close_broken)()  # a broken connection is not reused
                raise

        await retrying(f"Saving reply {self.message_id}", save, seconds=FINAL_SAVE_SECONDS, retry_on=(DatabaseError,))
        if not self._usage_recorded:
            self._usage_recorded = True
            usage = self.usage or llm.Usage()
            try:
                await arecord_reply(
                    user_id=self.conversation.owner_id,
                    provider_id=self.conversation.provider_id,
                    model=self.model or "",
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                )
            except Exception:
                log.exception("Could not record the usage of reply %s", self.message_id)
        # The pages that followed every delta already show this text: they keep their copy.
        finished = events.finished(self.message_id, status, self._display.shown(parts.content), self.seq)

        async def announce() -> None:
            if not await self.publish(finished):
                raise ConnectionError("the channel layer refused the event")

        with contextlib.suppress(ConnectionError):  # then the pages' watchdogs find the end in the database
            await retrying(
                f"Announcing the end of reply {self.message_id}",
                announce,
                seconds=ANNOUNCE_SECONDS,
                retry_on=(ConnectionError,),
            )
        # Names the conversation in the background after its first exchange.
        titles.after_reply(self.conversation, self.message_id, status)
