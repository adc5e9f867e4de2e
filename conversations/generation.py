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
from django.utils.crypto import salted_hmac

from . import llm
from .models import Conversation, Message, Provider

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

_running: dict[int, Generation] = {}


def running(message_id: int) -> Generation | None:
    return _running.get(message_id)


def user_id_for_provider(user_id: int) -> str:
    """A stable id for the account that cannot be turned back into it (the `user` parameter)."""
    return salted_hmac("conversations.provider-user", str(user_id)).hexdigest()[:32]


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
        and (m.content or m.role != Message.Role.ASSISTANT)
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
        needed = await cost(message.content)
        if not kept and needed > budget:
            raise llm.ProviderError(
                f"This message is about {needed:,} tokens, more than fits in the model's context window "
                f"({context_length:,} tokens, with {reserve:,} kept for the reply). Shorten it, lower "
                "max_tokens, or pick a model with a larger context."
            )
        if kept and needed > budget:
            break
        budget -= needed
        kept.append(message)
    kept.reverse()
    trimmed = len(kept) < len(history)
    messages = system + [{"role": m.role, "content": m.content} for m in kept]
    return Prompt(
        messages=messages,
        context_start_id=kept[0].pk if trimmed and kept else None,
        text="\n".join(m["content"] for m in messages),
    )


class Generation:
    def __init__(self, conversation: Conversation, reply: Message):
        self.conversation = conversation
        self.reply = reply
        self.message_id = reply.pk
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
        self._new_text = asyncio.Event()
        self._closing = False  # the reader is done: the flusher sends what is left and ends
        self._reader: asyncio.Task | None = None
        self._control_channel = ""
        self._control: asyncio.Task | None = None
        self.task: asyncio.Task | None = None

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
                provider, prompt = await self._prepare()
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
                status, error = Message.Status.ERROR, "The provider finished without saying anything."
            await self._record_usage(provider, prompt)
            await self._finish(status, error)
        except Exception as exc:
            log.exception("Generation %s crashed", self.message_id)
            await self._finish(Message.Status.ERROR, f"Internal error while generating: {type(exc).__name__}")
        finally:
            pacer.remove(self)
            await self._close_control()
            _running.pop(self.message_id, None)

    async def _prepare(self) -> tuple[Provider, Prompt]:
        conversation = await Conversation.objects.select_related("provider").aget(pk=self.conversation.pk)
        self.conversation = conversation
        provider = conversation.provider
        if provider is None or not provider.enabled:
            raise llm.ProviderError("This conversation's provider is gone or disabled; pick another model.")
        if not self.model:
            self.model = conversation.model or provider.default_model or await self._first_model(provider)
        prompt = await build_prompt(conversation, self.reply, provider, self.model)
        if prompt.context_start_id:
            await Message.objects.filter(pk=self.message_id).aupdate(context_start_id=prompt.context_start_id)
            await self._publish("generation.context", context_start_id=prompt.context_start_id)
        return provider, prompt

    async def _first_model(self, provider: Provider) -> str:
        models = await llm.list_models(provider)
        if not models:
            raise llm.ProviderError("The provider lists no models.")
        return models[0]

    def payload(self, prompt: Prompt) -> dict:
        params = {k: v for k, v in self.conversation.params.items() if v not in (None, "", [])}
        return {
            "model": self.model,
            "messages": prompt.messages,
            **params,
            "user": user_id_for_provider(self.conversation.owner_id),
        }

    async def _read(self, provider: Provider, prompt: Prompt):
        pacer = _pacer()
        parts = self._parts
        batches = llm.stream_batches(provider, "/chat/completions", self.payload(prompt))
        # aclosing: a stop that lands while the reader waits still closes the upstream request.
        async with contextlib.aclosing(batches):
            async for batch in batches:
                text = False
                for chunk in batch:
                    if chunk.usage:
                        self.usage = chunk.usage
                    if chunk.model:
                        self.model = chunk.model
                    for choice in chunk.choices:
                        if choice.index != 0:
                            continue
                        if choice.content:
                            parts.append(choice.content)
                            text = True
                        if choice.finish_reason:
                            self.finish_reason = choice.finish_reason
                if text:
                    if self.ttft_ms is None:
                        self.ttft_ms = int((time.monotonic() - self.started) * 1000)
                        # Checkpoints count from the first text (before it, only heartbeats).
                        self.written_at = time.monotonic()
                    self._new_text.set()  # the flusher sends it now...
                    if not self.finish_reason:
                        # ...and what arrives during the next window waits in the socket, to be
                        # read, parsed and published together: one read and one delta per window,
                        # not per chunk. (After the finish reason only usage and [DONE] are left.)
                        await asyncio.sleep(pacer.window)

    # -- publishing ---------------------------------------------------------------------------

    async def _publish(self, type_: str, **fields):
        await self.layer.group_send(self.group, {"type": type_, "message_id": self.message_id, **fields})

    async def _flush(self):
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts.clear()
        self._text += text
        self.flushed = len(self._text)
        self.seq += 1
        await self._publish("generation.delta", seq=self.seq, text=text)

    async def _flush_loop(self):
        """Publish new text as soon as the reader has some; the reader paces itself (see _read).

        Checkpoints and heartbeats are the pacer's job, so the database never delays a delta.
        """
        while not self._closing:
            await self._new_text.wait()
            self._new_text.clear()
            await self._flush()
        await self._flush()

    async def _listen(self):
        """Obey commands sent to this conversation's control group from any process."""
        while True:
            event = await self.layer.receive(self._control_channel)
            if event.get("type") == "generation.end":
                return
            if event.get("type") == "generation.stop":
                self.stop()
            elif event.get("type") == "generation.sync" and event.get("reply_to"):
                await self.layer.send(
                    event["reply_to"],
                    {
                        "type": "generation.snapshot",
                        "message_id": self.message_id,
                        "seq": self.seq,
                        "content": self._text,
                    },
                )

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
        await self.layer.send(self._control_channel, {"type": "generation.end"})
        try:
            await asyncio.wait_for(asyncio.shield(self._control), timeout=5)
        except TimeoutError:
            self._control.cancel()

    def stop(self):
        self.stop_requested = True
        if self._reader is not None:
            self._reader.cancel()  # closes the upstream connection

    async def _record_usage(self, provider: Provider, prompt: Prompt):
        if self.usage and self.usage.completion_tokens is not None:
            return
        prompt_tokens = await llm.count_tokens(provider, prompt.text)
        completion_tokens = await llm.count_tokens(provider, self.content) if self.content else 0
        self.usage = llm.Usage(
            prompt_tokens if prompt_tokens is not None else llm.estimate_tokens(prompt.text),
            completion_tokens if completion_tokens is not None else llm.estimate_tokens(self.content),
        )
        self.usage_estimated = True

    async def _finish(self, status: str, error: str = ""):
        _pacer().remove(self)  # no checkpoint after this
        usage = self.usage or llm.Usage()
        await Message.objects.filter(pk=self.message_id).aupdate(
            content=self.content,
            status=status,
            error=error,
            finish_reason=self.finish_reason or "",
            model=self.model or "",
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            usage_estimated=self.usage_estimated,
            ttft_ms=self.ttft_ms,
            duration_ms=int((time.monotonic() - self.started) * 1000),
            heartbeat_at=timezone.now(),
        )
        await self._publish("generation.finished", status=status)


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
            if since >= settings.CHECKPOINT_SECONDS and (
                generation.written != generation.flushed or since >= HEARTBEAT_SECONDS
            ):
                generation.written, generation.written_at = generation.flushed, now
                self._pending[generation.message_id] = generation._text
        if self._pending and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self._write(), name="generation-checkpoints")

    async def _write(self):
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                await sync_to_async(_write_checkpoints)(batch)
            except Exception:
                log.exception("Could not checkpoint %d streaming replies", len(batch))


def _write_checkpoints(batch: dict[int, str]):
    """One statement (executemany) in one transaction for many replies.

    Only a reply still streaming is written: a checkpoint that lands after the final save must
    not roll its text back.
    """
    meta = Message._meta
    quote = connection.ops.quote_name
    column = {name: quote(meta.get_field(name).column) for name in ("id", "content", "heartbeat_at", "status")}
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {column['content']} = %s, {column['heartbeat_at']} = %s "
        f"WHERE {column['id']} = %s AND {column['status']} = %s"
    )
    now = meta.get_field("heartbeat_at").get_db_prep_value(timezone.now(), connection)
    rows = [(content, now, message_id, Message.Status.STREAMING.value) for message_id, content in batch.items()]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pacer] = weakref.WeakKeyDictionary()


def _pacer() -> _Pacer:
    loop = asyncio.get_running_loop()
    pacer = _pacers.get(loop)
    if pacer is None:
        pacer = _pacers[loop] = _Pacer()
    return pacer
