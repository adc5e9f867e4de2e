"""A reply being generated: a task of the server process, not of any socket (DESIGN rules 1-6).

The generation streams from the provider, publishes coalesced deltas to the conversation's
group, answers snapshot requests from newly connected viewers, obeys stop commands sent
from any process through the channel layer, and writes the database only at start, about
once a second (checkpoint), and at the end.

Under load the cost that grows is per delta and per network read, not per byte, so the
coalescing window adapts: it is COALESCE_SECONDS while the process keeps up and widens (up to
MAX_COALESCE_SECONDS) while it falls behind, that is while the event loop wakes up late. (Deltas
never wait for the database: the consumer skips channels' per-event database round trip for
them.) The reader waits
one window after each read that brought text, so whatever arrives meanwhile is read, parsed and
published together. Checkpoints of all the replies streaming in a process are written together,
in one database round trip, by a per-loop task, so a slow database never holds up the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from conversations import events, rendering
from conversations.accounts.usage import arecord_reply
from conversations.generation import parts as stream_parts
from conversations.generation import titles
from conversations.models import Conversation, Message, Provider
from conversations.providers import client as llm
from conversations.providers.params import InvalidParams, request_fields

log = logging.getLogger(__name__)

# Deltas that arrive within this window go out as one frame (the window while the loop keeps up).
COALESCE_SECONDS = 0.015
# The widest the window gets while the event loop is behind (many replies streaming at once).
MAX_COALESCE_SECONDS = 0.5
# How often the loop's lateness is sampled (to tune the window) and checkpoints are gathered.
TICK_SECONDS = 0.05
# A tick later than this widens the window by half; one on time within LAG_LOW narrows it.
LAG_HIGH_SECONDS = 0.02
LAG_LOW_SECONDS = 0.005
# Tokens a chat template adds around each message (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 6
# Without new text, the heartbeat still proves the process alive this often.
HEARTBEAT_SECONDS = 2.0
# Reasoning and tool calls being written are re-sent whole to viewers at most this often.
EXTRAS_SECONDS = 0.25

_running: dict[int, Generation] = {}


def running(message_id: int) -> Generation | None:
    return _running.get(message_id)


@dataclass
class Prompt:
    messages: list[dict]
    context_start_id: int | None
    text: str


async def build_prompt(conversation: Conversation, reply: Message, provider: Provider, model: str) -> Prompt:
    """The branch up to the reply, trimmed oldest-first to fit the model's context window.

    The system prompt and the newest message are always kept. Token counts come from the
    model's own tokenizer when the provider can count (the bundled llama.cpp server), else
    from a cautious estimate with a safety margin.
    """
    branch = await sync_to_async(conversation.branch_to)(reply.parent_id)
    context_length = await sync_to_async(provider.context_length_for)(model)
    history = [
        m
        for m in branch
        if m.role in (Message.Role.USER, Message.Role.ASSISTANT, Message.Role.TOOL)
        and (m.content or m.tool_calls or m.role != Message.Role.ASSISTANT)
    ]
    system = [{"role": "system", "content": conversation.system_prompt}] if conversation.system_prompt else []

    async def cost(text: str) -> int:
        counted = await llm.count_tokens(provider, text)
        return (counted if counted is not None else llm.estimate_tokens(text)) + MESSAGE_OVERHEAD_TOKENS

    max_tokens = conversation.params.get("max_tokens")
    reserve = int(max_tokens) if max_tokens else min(512, context_length // 4)
    budget = int(context_length * 0.95) - reserve - sum([await cost(m["content"]) for m in system])
    kept: list[Message] = []
    for message in reversed(history):
        needed = await cost(stream_parts.prompt_text(message))
        if not kept and needed > budget:
            raise llm.ProviderError(
                _(
                    "This message is about %(needed)s tokens, more than fits in the model's context window "
                    "(%(context)s tokens, with %(reserve)s kept for the reply). Shorten it, lower "
                    "max_tokens, or pick a model with a larger context."
                )
                % {"needed": f"{needed:,}", "context": f"{context_length:,}", "reserve": f"{reserve:,}"}
            )
        if kept and needed > budget:
            break
        budget -= needed
        kept.append(message)
    kept.reverse()
    trimmed = len(kept) < len(history)
    # In the API's format: tool calls and tool results included, reasoning never sent back.
    messages = system + [stream_parts.api_message(m) for m in kept]
    return Prompt(
        messages=messages,
        context_start_id=kept[0].pk if trimmed and kept else None,
        text="\n".join(stream_parts.api_text(m) for m in messages),
    )


class Generation:
    def __init__(self, conversation: Conversation, reply: Message, *, continuing: bool = False):
        self.conversation = conversation
        self.reply = reply
        self.message_id = reply.pk
        self.choice_index = reply.choice_index
        # One of n > 1 choices: the ChoiceSet that feeds them all (conversations/choices.py).
        self.choices = None
        self.own_request = reply.own_request
        self.json_mode = False
        # Continue after "length": the reply grows from what it has (conversations/reply_actions.py).
        self.continuing = continuing
        self.extras = stream_parts.ReplyParts(
            **(
                {
                    "reasoning": reply.reasoning,
                    "reasoning_ms": reply.reasoning_ms,
                    "logprobs": reply.logprobs,
                    "answered": bool(reply.content.strip()),
                }
                if continuing
                else {}
            )
        )
        self._extras_sent = (0, 0.0)  # (extras.version, time.monotonic()) of the last live update
        self.group = conversation.group_name
        self.control_group = conversation.control_group_name
        self.layer = get_channel_layer()
        self._text = ""  # what has gone out in deltas
        self._parts: list[str] = []  # received since the last delta
        self.flushed = 0  # len(self._text)
        self.written = 0  # how much of it the last checkpoint saved
        self.written_at = 0.0  # when (time.monotonic), or when the first text came
        self.seq = 0
        self.finish_reason = ""
        self.usage: llm.Usage | None = None
        self.usage_estimated = False
        self.model = reply.model
        self.started = time.monotonic()
        self.ttft_ms: int | None = None
        self.stop_requested = False
        self._usage_recorded = False
        self._new_text = asyncio.Event()
        self._closing = False  # the reader is done: the flusher sends what is left and ends
        self._reader: asyncio.Task | None = None
        self._control_channel = ""
        self._control: asyncio.Task | None = None
        self.task: asyncio.Task | None = None
        if continuing:
            self._text = reply.content
            self.flushed = self.written = len(reply.content)
        self._base_length = len(self._text)
        # The reply's HTML as viewers have it, and the frames that update it (rendered once, here).
        self.stream = rendering.StreamRenderer(f"msg-{self.message_id}-text", self._text)

    @property
    def content(self) -> str:
        """Everything received so far."""
        return self._text + "".join(self._parts) if self._parts else self._text

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Start listening for commands, before anyone is told the reply exists (so no sync is lost)."""
        self._control_channel = await self.layer.new_channel()
        await self.layer.group_add(self.control_group, self._control_channel)
        self._control = asyncio.create_task(self._listen())

    def start(self) -> asyncio.Task:
        _running[self.message_id] = self
        self.task = asyncio.create_task(self._run(), name=f"generation-{self.message_id}")
        return self.task

    async def _run(self):
        pacer = _pacer()
        try:
            if not self._control_channel:
                await self.open()
            pacer.add(self)  # heartbeats, then checkpoints, until the final save
            try:
                provider, prompt = await (self.choices.prepare(self) if self.choices else self._prepare())
            except llm.ProviderError as exc:
                await self._finish(Message.Status.ERROR, exc.user_message)
                return
            if self.stop_requested:
                await self._finish(Message.Status.STOPPED)
                return
            self._reader = asyncio.create_task(self._read(provider, prompt))
            flusher = asyncio.create_task(self._flush_loop())
            try:
                await self._reader
                status, error = Message.Status.COMPLETE, ""
            except asyncio.CancelledError:
                if not self.stop_requested:
                    raise
                status, error = Message.Status.STOPPED, ""
            except llm.ProviderError as exc:
                log.info("Generation %s failed: %s (%s)", self.message_id, exc.kind, exc.message)
                status, error = Message.Status.ERROR, exc.user_message
                if isinstance(exc, llm.StreamInterrupted):
                    status = Message.Status.INTERRUPTED
            finally:
                self._closing = True
                self._new_text.set()
            await flusher  # it publishes what is left, in order, then ends
            if status == Message.Status.COMPLETE and not self.content and not self.finish_reason:
                status, error = Message.Status.ERROR, _("The provider finished without saying anything.")
            await self._record_usage(provider, prompt)
            await self._finish(status, error)
        except Exception as exc:
            log.exception("Generation %s crashed", self.message_id)
            await self._finish(
                Message.Status.ERROR, _("Internal error while generating: %(error)s") % {"error": type(exc).__name__}
            )
        finally:
            pacer.remove(self)
            await self._close_control()
            _running.pop(self.message_id, None)

    async def _prepare(self) -> tuple[Provider, Prompt]:
        conversation = await Conversation.objects.select_related("provider").aget(pk=self.conversation.pk)
        self.conversation = conversation
        provider = conversation.provider
        if provider is None or not provider.enabled:
            raise llm.ProviderError(_("This conversation's provider is gone or disabled; pick another model."))
        if not self.model:
            self.model = conversation.model or provider.default_model or await self._first_model(provider)
        prompt = await build_prompt(conversation, self.reply, provider, self.model)
        if self.continuing:
            prompt = stream_parts.continuation_prompt(prompt, self.reply)
        self.json_mode = stream_parts.asks_for_json(conversation.params)
        if prompt.context_start_id:
            await Message.objects.filter(pk=self.message_id).aupdate(context_start_id=prompt.context_start_id)
            await self._publish(events.context(self.message_id, prompt.context_start_id))
        return provider, prompt

    async def _first_model(self, provider: Provider) -> str:
        models = await llm.list_models(provider)
        if not models:
            raise llm.ProviderError(_("The provider lists no models."))
        return models[0]

    def payload(self, prompt: Prompt) -> dict:
        try:
            # Checked again at send time: only settings that pass the panel's rules are sent.
            params = request_fields(self.conversation.params)
        except InvalidParams as exc:
            raise llm.ProviderError(exc.message) from None
        if self.choices is None and params.get("n", 1) != 1:
            params.pop("n")  # one reply (a continuation): n > 1 is the ChoiceSet's business
        return {
            "model": self.model,
            "messages": prompt.messages,
            **params,
            "user": llm.user_id_for_provider(self.conversation.owner_id),
        }

    async def _read(self, provider: Provider, prompt: Prompt):
        if self.choices is not None:
            await self.choices.read(self, provider, prompt)  # one upstream request (or n) for all choices
            return
        usage = await read_stream(provider, self.payload(prompt), lambda index: self if index == 0 else None)
        if usage:
            self.usage = usage

    def _accept(self, choice: llm.ChoiceDelta, model: str) -> bool:
        """Take one delta of this reply's choice; True when it changed anything viewers see."""
        if model:
            self.model = model
        version = self.extras.version
        text = self.extras.feed(choice)
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason
            text += self.extras.finish()
        if text:
            self._parts.append(text)
        changed = bool(text) or self.extras.version != version
        if changed and self.ttft_ms is None:
            self.ttft_ms = int((time.monotonic() - self.started) * 1000)
            # Checkpoints count from the first token (before it, only heartbeats).
            self.written_at = time.monotonic()
        if text:
            self._new_text.set()  # the flusher sends it now
        return changed

    async def _send_extras(self, *, force: bool = False, to: str = ""):
        """Show viewers the reasoning and tool calls so far (whole: a late viewer needs no history)."""
        version, sent_at = self._extras_sent
        now = time.monotonic()
        if not to and (self.extras.version == version or (not force and now - sent_at < EXTRAS_SECONDS)):
            return
        if not to:
            self._extras_sent = (self.extras.version, now)
        if not (self.extras.reasoning or self.extras.tool_calls):
            return
        event = events.extras(self.message_id, self.extras.reasoning, self.extras.thinking, self.extras.tool_calls)
        if to:
            await self.layer.send(to, event)
        else:
            await self.layer.group_send(self.group, event)

    # -- publishing ---------------------------------------------------------------------------

    async def _publish(self, event: events.Event):
        await self.layer.group_send(self.group, event)

    async def _flush(self):
        final = self._closing  # no more text: every block is finished
        if not self._parts and (not final or self.stream.final):
            return
        text = "".join(self._parts)
        self._parts.clear()
        self._text += text
        self.flushed = len(self._text)
        frames = self.stream.update(self._text, final=final)
        if not text and not frames:
            return
        self.seq += 1
        await self._publish(events.delta(self.message_id, self.seq, text, frames))

    async def _flush_loop(self):
        """Publish new text as soon as the reader has some; the reader paces itself (see _read).

        Checkpoints and heartbeats are the pacer's job, so the database never delays a delta.
        """
        while not self._closing:
            await self._new_text.wait()
            self._new_text.clear()
            # Rendered HTML goes out at most every so often (conversations/rendering.py): gather text.
            while not self._closing and (delay := self.stream.delay(sum(map(len, self._parts)))) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_text.wait(), delay)
                self._new_text.clear()
            await self._flush()
        await self._flush()

    async def _listen(self):
        """Obey commands sent to this conversation's control group from any process."""
        while True:
            event = await self.layer.receive(self._control_channel)
            if event.get("type") == events.END:
                return
            if event.get("type") == events.STOP:
                self.stop()
            elif event.get("type") == events.SYNC and event.get("reply_to"):
                await self._answer_sync(event["reply_to"])

    async def _answer_sync(self, reply_to: str):
        """A viewer that just connected asks where the reply stands: a snapshot, then its extras."""
        await self.layer.send(reply_to, events.snapshot(self.message_id, self.seq, self._text, self.stream.html))
        await self._send_extras(to=reply_to)

    async def _close_control(self):
        """Leave the control group and end the listener by a message, not by cancelling it.

        A receive() cancelled while it waits on the Redis layer can lose or delay a message meant
        for another channel of this process (all of a process's channels share one Redis list),
        such as the `generation.finished` a viewer is waiting for.
        """
        if not self._control_channel:
            return
        await self.layer.group_discard(self.control_group, self._control_channel)
        if self._control is None or self._control.done():
            return
        await self.layer.send(self._control_channel, events.end())
        try:
            await asyncio.wait_for(asyncio.shield(self._control), timeout=5)
        except TimeoutError:
            self._control.cancel()

    def stop(self):
        if self.choices is not None:
            self.choices.stop()  # every choice of the request, and the request itself
            return
        self.stop_requested = True
        if self._reader is not None:
            self._reader.cancel()  # closes the upstream connection

    async def _record_usage(self, provider: Provider, prompt: Prompt):
        if self.usage and self.usage.completion_tokens is not None:
            return
        # What this request generated: a continuation's earlier text is not counted again.
        text = self.content[self._base_length :] + self.extras.new_text()
        prompt_tokens = await llm.count_tokens(provider, prompt.text)
        completion_tokens = await llm.count_tokens(provider, text) if text else 0
        self.usage = llm.Usage(
            prompt_tokens if prompt_tokens is not None else llm.estimate_tokens(prompt.text),
            completion_tokens if completion_tokens is not None else llm.estimate_tokens(text),
        )
        if self.choices is not None and self.choices.shares_prompt(self):
            self.usage.prompt_tokens = 0  # one request for n choices: its prompt is counted on the first
        self.usage_estimated = True

    async def _finish(self, status: str, error: str = ""):
        _pacer().remove(self)  # no checkpoint after this
        usage = self.usage or llm.Usage()
        parts = stream_parts.final_parts(self)
        await Message.objects.filter(pk=self.message_id).aupdate(
            content=parts.content,
            reasoning=parts.reasoning,
            reasoning_ms=parts.reasoning_ms,
            tool_calls=parts.tool_calls,
            logprobs=parts.logprobs,
            json_mode=self.json_mode,
            own_request=self.own_request,
            status=status,
            error=error,
            finish_reason=self.finish_reason or "",
            model=self.model or "",
            prompt_tokens=parts.prompt_tokens,
            completion_tokens=parts.completion_tokens,
            usage_estimated=parts.usage_estimated,
            ttft_ms=self.ttft_ms,
            duration_ms=int((time.monotonic() - self.started) * 1000),
            heartbeat_at=timezone.now(),
        )
        if not self._usage_recorded:
            self._usage_recorded = True  # once per reply, even if its end is written twice
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
        # The pages that followed the stream already show this text: they keep their copy.
        shown = self.stream.final and self.stream.text == parts.content
        await self._publish(events.finished(self.message_id, status, shown))
        titles.after_reply(self, status)  # names the conversation in the background after its first exchange


async def read_stream(provider: Provider, payload: dict, route) -> llm.Usage | None:
    """Stream one request, handing each choice's deltas to the Generation `route(index)` names.

    Returns the request's usage, if the provider sent it. After a read that brought anything,
    the reader waits one coalescing window, so what arrives meanwhile waits in the socket to be
    read, parsed and published together: one read and one delta per window, not per chunk.
    """
    pacer = _pacer()
    usage = None
    batches = llm.stream_batches(provider, "/chat/completions", payload)
    # aclosing: a stop that lands while the reader waits still closes the upstream request.
    async with contextlib.aclosing(batches):
        async for batch in batches:
            changed: dict[int, Generation] = {}
            for chunk in batch:
                if chunk.usage:
                    usage = chunk.usage
                for choice in chunk.choices:
                    generation = route(choice.index)
                    if generation is not None and generation._accept(choice, chunk.model):
                        changed[generation.message_id] = generation
            for generation in changed.values():
                await generation._send_extras(force=bool(generation.finish_reason))
            # After the finish reasons only usage and [DONE] are left: no need to wait.
            if changed and not all(g.finish_reason for g in changed.values()):
                await asyncio.sleep(pacer.window)
    return usage


class _Pacer:
    """One per event loop: tunes the coalescing window, and checkpoints every streaming reply.

    Every TICK_SECONDS it measures how late its own wake-up was. Late means more work than the
    process keeps up with, so the window widens by half (fewer, larger deltas and reads); on time
    lets it narrow back towards COALESCE_SECONDS. On the same tick it gathers the replies due for a checkpoint
    (text changed and CHECKPOINT_SECONDS since their last one, or HEARTBEAT_SECONDS of silence) and
    writes them all in one transaction, in a task of its own.
    """

    def __init__(self):
        self.window = COALESCE_SECONDS
        self.generations: set[Generation] = set()
        self._ticker: asyncio.Task | None = None
        self._writer: asyncio.Task | None = None
        self._pending: dict[int, str] = {}

    def add(self, generation: Generation):
        generation.written_at = time.monotonic()
        self.generations.add(generation)
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick(), name="generation-pacer")

    def remove(self, generation: Generation):
        """Forget a reply (before its final save: a checkpoint never follows it)."""
        self.generations.discard(generation)
        self._pending.pop(generation.message_id, None)
        if not self.generations and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
            self.window = COALESCE_SECONDS

    async def _tick(self):
        while self.generations:
            due = time.monotonic() + TICK_SECONDS
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            lag = now - due
            if lag > LAG_HIGH_SECONDS:
                self.window = min(MAX_COALESCE_SECONDS, self.window * 1.5)
            elif lag < LAG_LOW_SECONDS:
                self.window = max(COALESCE_SECONDS, self.window * 0.8)
            self._gather(now)

    def _gather(self, now: float):
        for generation in self.generations:
            if generation._closing:
                continue  # its final save is on the way
            since = now - generation.written_at
            # Progress: the text sent out, plus the reasoning and tool calls received.
            progress = generation.flushed + generation.extras.size
            if since >= settings.CHECKPOINT_SECONDS and (generation.written != progress or since >= HEARTBEAT_SECONDS):
                generation.written, generation.written_at = progress, now
                self._pending[generation.message_id] = (
                    generation._text,
                    generation.extras.reasoning,
                    generation.extras.tool_calls or None,
                )
        if self._pending and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self._write(), name="generation-checkpoints")

    async def _write(self):
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                await sync_to_async(_write_checkpoints)(batch)
            except Exception:
                log.exception("Could not checkpoint %d streaming replies", len(batch))


def _write_checkpoints(batch: dict[int, tuple[str, str, list | None]]):
    """One statement (executemany) in one transaction for many replies.

    Only a reply still streaming is written: a checkpoint that lands after the final save must
    not roll its text back.
    """
    meta = Message._meta
    quote = connection.ops.quote_name
    names = ("id", "content", "reasoning", "tool_calls", "heartbeat_at", "status")
    column = {name: quote(meta.get_field(name).column) for name in names}
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {column['content']} = %s, {column['reasoning']} = %s, "
        f"{column['tool_calls']} = %s, {column['heartbeat_at']} = %s "
        f"WHERE {column['id']} = %s AND {column['status']} = %s"
    )
    now = meta.get_field("heartbeat_at").get_db_prep_value(timezone.now(), connection)
    calls, streaming = meta.get_field("tool_calls"), Message.Status.STREAMING.value
    rows = [
        (content, reasoning, calls.get_db_prep_value(tool_calls, connection), now, message_id, streaming)
        for message_id, (content, reasoning, tool_calls) in batch.items()
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pacer] = weakref.WeakKeyDictionary()


def _pacer() -> _Pacer:
    loop = asyncio.get_running_loop()
    pacer = _pacers.get(loop)
    if pacer is None:
        pacer = _pacers[loop] = _Pacer()
    return pacer
