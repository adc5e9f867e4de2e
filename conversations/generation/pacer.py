"""The pace of streaming in one event loop: the adaptive coalescing window, and batched checkpoints.

Under load the cost that grows is per delta and per network read, not per byte, so the
coalescing window adapts: it is COALESCE_SECONDS while the process keeps up and widens (up to
MAX_COALESCE_SECONDS) while it falls behind, that is while the event loop wakes up late. (Deltas
never wait for the database: the consumer skips channels' per-event database round trip for
them.) A reader waits one window after each read that brought text, so whatever arrives
meanwhile is read, parsed and published together. Checkpoints of all the replies streaming in a
process are written together, in one database round trip, by a task of the pacer, so a slow
database never holds up the text.

Liveness is proven by a thread (`Heartbeat`), not by the event loop: every HEARTBEAT_SECONDS it
writes `heartbeat_at` for the replies of every loop whose pacer ticked lately. A loop that is only
late (overloaded) still ticks, so its replies are never taken for dead by a page's watchdog; a
process that died writes nothing, and its replies go stale.

The pacer knows a reply only through `Streaming`: its id, whether its final save is on the way,
how far it has come, when its first token came, and what a checkpoint of it saves.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import Field
from django.utils import timezone

from conversations.models import Message

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
# The heartbeat proves the process alive this often (and a checkpoint is written at least this often).
HEARTBEAT_SECONDS = 2.0
# A loop whose pacer has not ticked for this long is stuck: its replies get no heartbeat any more.
LOOP_STALL_SECONDS = 30.0


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint saves of a streaming reply: the text sent out, its reasoning and tool calls."""

    content: str
    reasoning: str
    tool_calls: list[dict[str, Any]] | None


class Streaming(Protocol):
    """What the pacer needs of a reply while it streams."""

    @property
    def message_id(self) -> int: ...

    @property
    def closing(self) -> bool:
        """No more text comes: its final save is on the way (no checkpoint now)."""
        ...

    @property
    def progress(self) -> int:
        """Grows with every change worth a checkpoint."""
        ...

    @property
    def first_token_at(self) -> float | None:
        """When (time.monotonic) its first token came: checkpoints count from then."""
        ...

    def checkpoint(self) -> Checkpoint: ...


@dataclass
class _Saved:
    progress: int  # the reply's progress when its last checkpoint was taken
    at: float  # when (time.monotonic), or when it was added


class Pacer:
    """One per event loop: tunes the coalescing window, and checkpoints every streaming reply.

    Every TICK_SECONDS it measures how late its own wake-up was. Late means more work than the
    process keeps up with, so the window widens by half (fewer, larger deltas and reads); on time
    lets it narrow back towards COALESCE_SECONDS. On the same tick it gathers the replies due for a
    checkpoint (progress since their last one and CHECKPOINT_SECONDS gone by, or HEARTBEAT_SECONDS
    of silence) and writes them all in one transaction, in a task of its own.
    """

    def __init__(self) -> None:
        self.window = COALESCE_SECONDS
        # Read by the heartbeat thread: replaced whole, never changed in place.
        self.beating: frozenset[int] = frozenset()
        self.ticked_at = time.monotonic()
        self._replies: dict[Streaming, _Saved] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._pending: dict[int, Checkpoint] = {}

    def add(self, reply: Streaming) -> None:
        """Heartbeats, then checkpoints, for this reply until it is removed."""
        self._replies[reply] = _Saved(reply.progress, time.monotonic())
        self.beating = self.beating | {reply.message_id}
        self.ticked_at = time.monotonic()
        heartbeat.watch(self)
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick(), name="generation-pacer")

    def remove(self, reply: Streaming) -> None:
        """Forget a reply (before its final save: a checkpoint never follows it)."""
        self._replies.pop(reply, None)
        self._pending.pop(reply.message_id, None)
        self.beating = self.beating - {reply.message_id}
        if not self._replies and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
            self.window = COALESCE_SECONDS

    async def _tick(self) -> None:
        while self._replies:
            due = time.monotonic() + TICK_SECONDS
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            self.ticked_at = now
            lag = now - due
            if lag > LAG_HIGH_SECONDS:
                self.window = min(MAX_COALESCE_SECONDS, self.window * 1.5)
            elif lag < LAG_LOW_SECONDS:
                self.window = max(COALESCE_SECONDS, self.window * 0.8)
            self._gather(now)

    def _gather(self, now: float) -> None:
        for reply, saved in self._replies.items():
            if reply.closing:
                continue  # its final save is on the way
            # Checkpoints count from the first token (before it, only heartbeats).
            since = now - max(saved.at, reply.first_token_at or 0.0)
            progress = reply.progress
            if since >= settings.CHECKPOINT_SECONDS and (saved.progress != progress or since >= HEARTBEAT_SECONDS):
                saved.progress, saved.at = progress, now
                self._pending[reply.message_id] = reply.checkpoint()
        if self._pending and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self._write(), name="generation-checkpoints")

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                await sync_to_async(_write_checkpoints)(batch)
            except Exception:
                log.exception("Could not checkpoint %d streaming replies", len(batch))


class Heartbeat:
    """A thread that writes `heartbeat_at` for the streaming replies of every live loop of the process."""

    def __init__(self) -> None:
        self._pacers: weakref.WeakSet[Pacer] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, pacer: Pacer) -> None:
        with self._lock:
            self._pacers.add(pacer)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="generation-heartbeat", daemon=True)
                self._thread.start()

    def due(self) -> list[int]:
        """The replies to prove alive now: those of the loops that ticked within LOOP_STALL_SECONDS."""
        now = time.monotonic()
        with self._lock:
            pacers = list(self._pacers)
        return [pk for pacer in pacers if now - pacer.ticked_at < LOOP_STALL_SECONDS for pk in pacer.beating]

    def _run(self) -> None:
        while True:
            time.sleep(HEARTBEAT_SECONDS)
            ids = self.due()
            try:
                if ids:
                    Message.objects.filter(pk__in=ids, status=Message.Status.STREAMING).update(
                        heartbeat_at=timezone.now()
                    )
                else:
                    connections.close_all()  # nothing streams: hold no connection
            except Exception as exc:  # the database is down for a while: beat again next time
                log.warning("Could not write the heartbeat of %d streaming replies: %r", len(ids), exc)
                connections.close_all()


heartbeat = Heartbeat()


def _field(name: str) -> Field[Any, Any]:
    field = Message._meta.get_field(name)
    assert isinstance(field, Field), name
    return field


def _column(name: str) -> str:
    column = _field(name).column
    assert column, name
    return connection.ops.quote_name(column)


def _write_checkpoints(batch: dict[int, Checkpoint]) -> None:
    """One statement (executemany) in one transaction for many replies.

    Only a reply still streaming is written: a checkpoint that lands after the final save must
    not roll its text back.
    """
    names = ("id", "content", "reasoning", "tool_calls", "heartbeat_at", "status")
    column = {name: _column(name) for name in names}
    table = connection.ops.quote_name(Message._meta.db_table)
    sql = (
        f"UPDATE {table} SET {column['content']} = %s, {column['reasoning']} = %s, "
        f"{column['tool_calls']} = %s, {column['heartbeat_at']} = %s "
        f"WHERE {column['id']} = %s AND {column['status']} = %s"
    )
    now = _field("heartbeat_at").get_db_prep_value(timezone.now(), connection)
    calls, streaming = _field("tool_calls"), Message.Status.STREAMING.value
    rows = [
        (row.content, row.reasoning, calls.get_db_prep_value(row.tool_calls, connection), now, message_id, streaming)
        for message_id, row in batch.items()
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()


def current() -> Pacer:
    """The pacer of the running event loop (made on first use)."""
    loop = asyncio.get_running_loop()
    pacer = _pacers.get(loop)
    if pacer is None:
        pacer = _pacers[loop] = Pacer()
    return pacer


def current_window() -> float:
    """The coalescing window on the running loop now (COALESCE_SECONDS if nothing streamed in it yet)."""
    pacer = _pacers.get(asyncio.get_running_loop())
    return pacer.window if pacer is not None else COALESCE_SECONDS
