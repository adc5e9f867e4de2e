"""Streaming benchmark: real Daphne + real websockets + a fake provider in its own process.

    .venv/bin/python bench/stream_bench.py            # full run (N = 1, 10, 100, 200, 500 + ceiling)
    .venv/bin/python bench/stream_bench.py --quick    # smoke run (N = 1, 10, 50, short replies)

Options: --ns 1,10,200 (pick the N stages), --chunks/--rate (shape of the replies in those
stages), --no-ceiling, --json FILE (every figure), --keep (keep the temporary directory: database,
logs, profiles), --profile-stage N / --py-spy-stage N (profile Daphne during stage N, 0 = the
ceiling, with cProfile on its event-loop thread or py-spy on all its threads; py-spy must be
installed in the venv), --baseline DIR (run Daphne with conversations/llm.py and generation.py
from DIR, for before/after comparisons), --experiment ... (what-if changes outside the app's code,
see bench/settings_experiment.py and bench/asgi_bench.py; printed in the output when used).

What runs (everything on 127.0.0.1):
- bench/fake_llm.py in its own process: each reply is n chunks at `rate` chunks/s, every chunk
  carrying its index and its send time on the system-wide monotonic clock.
- ONE Daphne process serving bench.asgi_bench:application (the app's chatsite.asgi application
  plus write counters, loop-lag sampling and a cProfile switch), DEBUG=False, a fresh SQLite file
  database (migrated with manage.py), OPENAI_BASE_URL pointing at the fake.
- This process: creates users, sessions and conversations through the ORM on the same file, then
  drives websocket clients (the `websockets` asyncio client, many per process) and measures.

Delays are measured at the websocket client: arrival time of the frame carrying a chunk minus the
chunk's send time at the fake, minus the same figure measured directly against the fake (an httpx
streaming request from this process). Time to first token: websocket send -> first frame with
reply text, minus (request -> first content chunk) measured directly against the fake.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
MARK = re.compile(r"⟨(\d+):([\d.]+)⟩")
# Reply text arrives as htmx swaps into #msg-N-text (conversations/rendering.py), or whole in a
# snapshot of that element for a page that joined mid-stream.
TEXT_SWAP = re.compile(r'hx-swap-oob="([a-zA-Z]+):#msg-(\d+)-text')
SNAPSHOT = re.compile(r'<div id="msg-(\d+)-text" class="msg-text markdown" hx-swap-oob="true">(?!</div>)')
HAS_TEXT = re.compile(f"{TEXT_SWAP.pattern}|{SNAPSHOT.pattern}")
ARTICLE = re.compile(
    r'<article id="msg-(\d+)" class="msg msg-assistant" data-status="(\w+)" hx-swap-oob="true">.*?</article>', re.S
)
DONE = 'msg-assistant" data-status="complete" hx-swap-oob="true"'
BAD_STATUS = tuple(f'msg-assistant" data-status="{s}"' for s in ("error", "interrupted", "stopped"))


# --- small helpers -------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))
    return values[k]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":")
                out[name] = int(value.split()[0])
    return out


def ws_frame_bytes(payload: str) -> int:
    """Bytes of one server->client text frame on the wire (unmasked header + payload)."""
    size = len(payload.encode())
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


# --- processes -----------------------------------------------------------------------------------


class Processes:
    def __init__(self, tmp: Path, env: dict):
        self.tmp = tmp
        self.env = env
        self.fake: subprocess.Popen | None = None
        self.daphne: subprocess.Popen | None = None
        self.daphne_pid = 0
        self.daphne_port = 0
        self.fake_port = 0

    def start_fake(self) -> int:
        self.fake = subprocess.Popen(
            [PYTHON, str(BASE_DIR / "bench" / "fake_llm.py")],
            stdout=subprocess.PIPE,
            stderr=open(self.tmp / "fake.log", "wb"),  # noqa: SIM115
            text=True,
        )
        line = self.fake.stdout.readline()
        if not line.startswith("PORT"):
            raise RuntimeError(f"fake provider did not start: {line!r}")
        self.fake_port = int(line.split()[1])
        return self.fake_port

    def start_daphne(self):
        self.daphne_port = free_port()
        log = open(self.tmp / "daphne.log", "wb")  # noqa: SIM115
        self.daphne = subprocess.Popen(
            [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.daphne_port), "bench.asgi_bench:application"],
            cwd=BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.daphne.poll() is not None:
                raise RuntimeError("Daphne exited:\n" + (self.tmp / "daphne.log").read_text(errors="replace"))
            try:
                self.daphne_pid = self.stats()["pid"]
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("Daphne did not answer within 60 s")

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.daphne_port}{path}", timeout=30) as response:
            return json.loads(response.read())

    def stats(self, since: float = 0.0) -> dict:
        return self.get(f"/__bench__/stats?since={since}")

    def stop(self):
        for proc in (self.daphne, self.fake):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


# --- database setup (this process, same SQLite file) --------------------------------------------


@dataclass
class Seat:
    """A conversation, its owner's session, ready for one websocket."""

    code: str
    session_key: str


def setup_django(env: dict):
    os.environ.update(env)
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


def create_seats(users: int, conversations: int) -> list[Seat]:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import connection, transaction

    from conversations.models import Conversation, Provider

    User = get_user_model()
    Provider.sync_from_settings()
    provider = Provider.objects.default()
    password = make_password("bench-password-123")  # one hash for all: make_password is slow on purpose
    with transaction.atomic():
        User.objects.bulk_create([User(username=f"bench{i}", password=password) for i in range(users)])
        people = list(User.objects.filter(username__startswith="bench").order_by("pk"))
        keys = []
        for user in people:
            store = SessionStore()
            store[SESSION_KEY] = str(user.pk)
            store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            store[HASH_SESSION_KEY] = user.get_session_auth_hash()
            store.create()
            keys.append(store.session_key)
        convs = Conversation.objects.bulk_create(
            [
                Conversation(owner=people[i % users], provider=provider, model="bench-model")
                for i in range(conversations)
            ]
        )
    seats = [Seat(str(c.code), keys[i % users]) for i, c in enumerate(convs)]
    connection.close()
    return seats


# --- the websocket side ----------------------------------------------------------------------------


@dataclass
class Chat:
    seat: Seat
    message: str
    ws: object = None
    sent: float = 0.0
    first_text: float | None = None
    done: float | None = None
    frames: list[tuple[float, str]] = field(default_factory=list)
    error: str = ""


async def open_socket(port: int, chat: Chat):
    from websockets.asyncio.client import connect

    origin = f"http://127.0.0.1:{port}"
    chat.ws = await connect(
        f"ws://127.0.0.1:{port}/ws/c/{chat.seat.code}/",
        additional_headers={"Cookie": f"sessionid={chat.seat.session_key}", "Origin": origin},
        open_timeout=120,
        ping_interval=None,
        close_timeout=5,
        compression=None,
        max_size=None,
        max_queue=None,
    )
    await asyncio.wait_for(chat.ws.recv(), 60)  # the composer: the consumer is ready


async def run_chat(chat: Chat, start_at: float, timeout: float):
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    ws = chat.ws
    frames = chat.frames
    monotonic = time.monotonic
    try:
        async with asyncio.timeout(timeout):
            chat.sent = monotonic()
            await ws.send(json.dumps({"message": chat.message}))
            while True:
                frame = await ws.recv()
                now = monotonic()
                frames.append((now, frame))
                if chat.first_text is None and HAS_TEXT.search(frame):
                    chat.first_text = now
                if DONE in frame:
                    chat.done = now
                    if chat.first_text is None:  # the whole reply came only in its finished form
                        chat.first_text = now
                    return
                if "database is locked" in frame:
                    chat.error = "database is locked"
                    return
                if 'role="alert"' in frame or any(s in frame for s in BAD_STATUS):
                    chat.error = re.sub(r"<[^>]+>", " ", frame)[:200].strip()
                    return
    except TimeoutError:
        chat.error = "timeout"
    except Exception as exc:  # connection closed, protocol error
        chat.error = f"{type(exc).__name__}: {exc}"


async def connect_all(port: int, chats: list[Chat], concurrency: int = 24):
    gate = asyncio.Semaphore(concurrency)

    async def one(chat):
        async with gate:
            for _attempt in range(3):
                try:
                    await open_socket(port, chat)
                    return
                except Exception as exc:  # noqa: BLE001
                    chat.error = f"connect: {type(exc).__name__}: {exc}"
                    await asyncio.sleep(0.5)

    await asyncio.gather(*(one(c) for c in chats))
    for chat in chats:
        if chat.ws is not None:
            chat.error = ""


async def close_all(chats: list[Chat]):
    async def one(chat):
        if chat.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(chat.ws.close(), 5)

    await asyncio.gather(*(one(c) for c in chats))


# --- analysis --------------------------------------------------------------------------------------


@dataclass
class ChatResult:
    delays: list[float]
    delays_live: list[float]  # chunks sent after the page first showed text (steady streaming)
    received: int
    live: int
    duplicates: int
    ttft: float | None
    failed: str
    bytes_total: int
    frames: int
    text_frames: int
    final_html: int
    reply_text: str
    delta_bytes: int  # frames carrying streamed text (deltas, snapshot)
    final_frame_bytes: int  # the frame with the finished <article>


def analyse(chat: Chat) -> ChatResult:
    seen: dict[int, float] = {}
    delays: list[float] = []
    delays_live: list[float] = []
    delta_bytes = 0
    final_frame_bytes = 0
    duplicates = 0
    late = 0
    total = 0
    text_frames = 0
    final_html = 0
    text = ""
    for t, frame in chat.frames:
        total += ws_frame_bytes(frame)
        swaps = [swap for swap, _mid in TEXT_SWAP.findall(frame)]
        has_text = bool(swaps) or SNAPSHOT.search(frame) is not None
        # A frame that only appends must not carry a chunk twice; one that replaces an element may.
        appends_only = bool(swaps) and all(swap == "beforeend" for swap in swaps)
        if has_text:
            for index, stamp in MARK.findall(unescape(frame)):
                index = int(index)
                if index in seen:
                    duplicates += appends_only
                    continue
                seen[index] = t
                delays.append(t - float(stamp))
                if chat.first_text is not None and float(stamp) >= chat.first_text:
                    delays_live.append(t - float(stamp))
        text_frames += has_text
        if has_text:
            delta_bytes += ws_frame_bytes(frame)
        if DONE in frame:
            final_frame_bytes += ws_frame_bytes(frame)
        for match in ARTICLE.finditer(frame):
            article = match.group(0)
            if " hx-preserve></div>" in article:  # the page keeps the streamed text: count it in
                from tests.frames import plain, replay

                html = replay([f for _t, f in chat.frames], int(match.group(1)))
                article = article.replace(" hx-preserve></div>", f">{html}</div>", 1)
                text = plain(html)
            final_html = len(article.encode())
            # Text that never came live shows up here, in the finished reply: it reached the user
            # late (its delay counts) but it is not lost.
            for index, stamp in MARK.findall(unescape(match.group(0))):
                index = int(index)
                if index not in seen:
                    seen[index] = t
                    late += 1
                    delays.append(t - float(stamp))
    failed = chat.error
    if not failed and chat.done is None:
        failed = "no complete reply"
    return ChatResult(
        delays=delays,
        delays_live=delays_live,
        delta_bytes=delta_bytes,
        final_frame_bytes=final_frame_bytes,
        received=len(seen),
        live=len(seen) - late,
        duplicates=duplicates,
        ttft=(chat.first_text - chat.sent) if chat.first_text is not None and chat.sent else None,
        failed=failed,
        bytes_total=total,
        frames=len(chat.frames),
        text_frames=text_frames,
        final_html=final_html,
        reply_text=text,
    )


# --- direct baselines (no app in the path) --------------------------------------------------------


async def direct_ttft(fake_port: int, trials: int) -> list[float]:
    import httpx

    out = []
    body = {"model": "bench-model", "messages": [{"role": "user", "content": "bench n=3 rate=50"}], "stream": True}
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(trials):
            start = time.monotonic()
            async with client.stream("POST", f"http://127.0.0.1:{fake_port}/v1/chat/completions", json=body) as r:
                async for raw in r.aiter_bytes():
                    if "⟨".encode() in raw:
                        out.append(time.monotonic() - start)
                        break
            await asyncio.sleep(0.02)
    return out


async def direct_delays(fake_port: int, streams: int, n: int, rate: float) -> list[float]:
    import httpx

    body = {
        "model": "bench-model",
        "messages": [{"role": "user", "content": f"bench n={n} rate={rate}"}],
        "stream": True,
    }
    delays: list[float] = []

    async def one(client):
        async with client.stream("POST", f"http://127.0.0.1:{fake_port}/v1/chat/completions", json=body) as r:
            async for raw in r.aiter_bytes():
                now = time.monotonic()
                for _i, stamp in MARK.findall(raw.decode("utf-8", "replace")):
                    delays.append(now - float(stamp))

    limits = httpx.Limits(max_connections=2000)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(one(client) for _ in range(streams)))
    return delays


# --- one stage -----------------------------------------------------------------------------------


@dataclass
class StageResult:
    name: str
    n_chats: int
    chunks_each: int
    rate: float
    wall: float
    chats: list[ChatResult]
    cpu: float
    client_cpu: float
    rss_peak_kb: int
    hwm_kb: int
    writes: dict
    locked: int
    loop_lag_max_ms: float | None
    loop_lag_p99_ms: float | None
    connect_seconds: float
    queries: dict
    connections_opened: int
    window_p50_ms: float | None = None
    window_max_ms: float | None = None
    durations: list[float] = field(default_factory=list)  # seconds, each reply's own duration_ms


async def sample_memory(pid: int, stop: asyncio.Event, out: list[int]):
    while not stop.is_set():
        try:
            out.append(proc_mem(pid)["VmRSS"])
        except OSError:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


def reply_durations(codes: list[str]) -> list[float]:
    """Each reply's duration as the app recorded it (Message.duration_ms), in seconds.

    Runs in a worker thread and closes its connection at once: an idle SQLite connection held by
    this process would change how the server's connections behave (the last one to close
    checkpoints the WAL).
    """
    from django.db import connection

    from conversations.models import Message

    try:
        values = Message.objects.filter(conversation__code__in=codes, role=Message.Role.ASSISTANT).values_list(
            "duration_ms", flat=True
        )
        return [(v or 0) / 1000 for v in values]
    finally:
        connection.close()


def diff_writes(before: dict, after: dict) -> dict:
    out = {}
    for table, kinds in after.items():
        for kind, value in kinds.items():
            delta = value - before.get(table, {}).get(kind, 0)
            if delta:
                out.setdefault(table, {})[kind] = delta
    return out


async def run_stage(
    procs: Processes,
    seats: list[Seat],
    name: str,
    n_chats: int,
    chunks: int,
    rate: float,
    spread: float = 0.020,
    words: bool = False,
    profile: str | None = None,
    py_spy: str | None = None,
) -> StageResult:
    message = f"bench n={chunks} rate={rate:g}" + (" words=1" if words else "")
    chats = [Chat(seat, message) for seat in seats[:n_chats]]
    t_connect = time.monotonic()
    await connect_all(procs.daphne_port, chats)
    connect_seconds = time.monotonic() - t_connect
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    stats_before = await loop.run_in_executor(None, procs.stats)
    if profile:
        await loop.run_in_executor(None, procs.get, "/__bench__/profile/start")
    spy = None
    if py_spy:
        spy = subprocess.Popen(
            [
                str(Path(PYTHON).parent / "py-spy"),
                "record",
                "-p",
                str(procs.daphne_pid),
                "--threads",
                "--idle",
                "--rate",
                "200",
                "--format",
                "raw",
                "-o",
                py_spy,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(1.0)
    cpu_before = proc_cpu(procs.daphne_pid)
    client_before = time.process_time()
    stop = asyncio.Event()
    rss: list[int] = []
    sampler = asyncio.create_task(sample_memory(procs.daphne_pid, stop, rss))
    start = time.monotonic() + 0.05
    duration = chunks / rate if rate else 0
    timeout = duration + 120
    ready = [c for c in chats if c.ws is not None]
    step = spread / max(1, len(ready))
    await asyncio.gather(*(run_chat(c, start + i * step, timeout) for i, c in enumerate(ready)))
    end = max([c.done for c in chats if c.done] or [time.monotonic()])
    cpu_after = proc_cpu(procs.daphne_pid)
    client_cpu = time.process_time() - client_before
    stop.set()
    await sampler
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        await loop.run_in_executor(None, spy.wait)
    if profile:
        await loop.run_in_executor(None, procs.get, f"/__bench__/profile/stop?out={profile}")
    stats_after = await loop.run_in_executor(None, lambda: procs.stats(since=start))
    durations = await loop.run_in_executor(None, reply_durations, [c.seat.code for c in chats])
    mem = proc_mem(procs.daphne_pid)
    await close_all(chats)
    results = [analyse(c) for c in chats]
    return StageResult(
        name=name,
        n_chats=n_chats,
        chunks_each=chunks,
        rate=rate,
        wall=end - start,
        chats=results,
        cpu=cpu_after - cpu_before,
        client_cpu=client_cpu,
        rss_peak_kb=max(rss + [mem["VmRSS"]]),
        hwm_kb=mem["VmHWM"],
        writes=diff_writes(stats_before["writes"], stats_after["writes"]),
        locked=stats_after["locked_errors"] - stats_before["locked_errors"],
        loop_lag_max_ms=stats_after["loop_lag_max_ms"],
        loop_lag_p99_ms=stats_after["loop_lag_p99_ms"],
        connect_seconds=connect_seconds,
        queries={
            k: v - stats_before["queries"].get(k, 0)
            for k, v in stats_after["queries"].items()
            if v - stats_before["queries"].get(k, 0)
        },
        connections_opened=stats_after["connections_opened"] - stats_before["connections_opened"],
        window_p50_ms=stats_after.get("window_p50_ms"),
        window_max_ms=stats_after.get("window_max_ms"),
        durations=durations,
    )


def summarise(stage: StageResult, base_delay: float, base_ttft: float) -> dict:
    delays = [d - base_delay for r in stage.chats for d in r.delays]
    delays_live = [d - base_delay for r in stage.chats for d in r.delays_live]
    ttfts = [r.ttft - base_ttft for r in stage.chats if r.ttft is not None]
    expected = stage.n_chats * stage.chunks_each
    received = sum(r.received for r in stage.chats)
    failed = [r.failed for r in stage.chats if r.failed]
    msg_writes = stage.writes.get("conversations_message", {})
    message_writes = sum(v for k, v in msg_writes.items() if k in ("insert", "update", "delete"))
    all_writes = sum(
        v for kinds in stage.writes.values() for k, v in kinds.items() if k in ("insert", "update", "delete")
    )
    text_frames = sum(r.text_frames for r in stage.chats)
    return {
        "stage": stage.name,
        "chats": stage.n_chats,
        "chunks_each": stage.chunks_each,
        "rate": stage.rate,
        "ttft_added_p50_ms": None if not ttfts else pct(ttfts, 0.5) * 1000,
        "ttft_added_p99_ms": None if not ttfts else pct(ttfts, 0.99) * 1000,
        "delay_added_p50_ms": None if not delays else pct(delays, 0.5) * 1000,
        "delay_added_p99_ms": None if not delays else pct(delays, 0.99) * 1000,
        "delay_added_max_ms": None if not delays else max(delays) * 1000,
        "delay_after_first_text_p50_ms": None if not delays_live else pct(delays_live, 0.5) * 1000,
        "delay_after_first_text_p99_ms": None if not delays_live else pct(delays_live, 0.99) * 1000,
        "chunks_expected": expected,
        "chunks_received": received,
        "chunks_lost": expected - received,
        "chunks_live_share": sum(r.live for r in stage.chats) / received if received else None,
        "duplicates": sum(r.duplicates for r in stage.chats),
        "failed_chats": len(failed),
        "failures": sorted(set(failed))[:5],
        "db_locked_errors": stage.locked,
        "daphne_cpu_s": stage.cpu,
        "cpu_s_per_1000_chunks": stage.cpu / (received / 1000) if received else None,
        "client_cpu_share": stage.client_cpu / stage.wall if stage.wall > 0 else None,
        "rss_peak_mb": stage.rss_peak_kb / 1024,
        "vmhwm_mb": stage.hwm_kb / 1024,
        "wall_s": stage.wall,
        "chunks_per_s": received / stage.wall if stage.wall > 0 else None,
        "ws_text_frames_per_chat": text_frames / stage.n_chats,
        "message_writes_per_chat": message_writes / stage.n_chats,
        "reply_seconds_mean": statistics.mean(stage.durations) if stage.durations else None,
        "allowed_writes_per_chat": (3 * len(stage.durations) + sum(stage.durations)) / len(stage.durations)
        if stage.durations
        else None,
        "message_writes_effective_per_chat": sum(v for k, v in msg_writes.items() if k.endswith("_effective"))
        / stage.n_chats,
        "all_writes_per_chat": all_writes / stage.n_chats,
        "writes": stage.writes,
        "loop_lag_p99_ms": stage.loop_lag_p99_ms,
        "loop_lag_max_ms": stage.loop_lag_max_ms,
        "connect_s": stage.connect_seconds,
        "sql_statements_per_chat": sum(stage.queries.values()) / stage.n_chats,
        "sql_by_kind_per_chat": {k: round(v / stage.n_chats, 2) for k, v in stage.queries.items()},
        "db_connections_opened_per_chat": stage.connections_opened / stage.n_chats,
        "window_p50_ms": stage.window_p50_ms,
        "window_max_ms": stage.window_max_ms,
    }


def print_py_spy(path: str, limit: int = 25):
    """Summarise py-spy's raw (collapsed) stacks: samples per thread, then self and inclusive time."""
    from collections import Counter

    threads, leaf, inclusive, idle, app = Counter(), Counter(), Counter(), Counter(), Counter()
    total = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        count = int(count)
        frames = stack.split(";")
        thread = frames[0]
        threads[thread] += count
        total += count
        names = [
            re.sub(r" \((?:/work/main/)?(?:\.venv/lib/python3.11/site-packages/)?(.*?)\)$", r" (\1)", f)
            for f in frames[1:]
        ]
        if names:
            leaf[names[-1]] += count
            waiting = any(w in names[-1] for w in ("epoll", "select (", "_worker (concurrent"))
            mine = [n for n in names if "conversations/" in n or "channels/" in n]
            if not waiting:
                app[(thread, mine[-1] if mine else names[-1])] += count
            if any(w in names[-1] for w in ("epoll", "poll (", "select (", "wait (threading", "_worker (concurrent")):
                idle[thread] += count
        for name in set(names):
            inclusive[name] += count
    print(f"\n--- py-spy: {total} samples at 200 Hz, all threads (idle included) ---")
    for thread, count in threads.most_common(8):
        print(f"{count:>7} {count / total:6.1%}  {thread}  (of which waiting: {idle[thread] / count:.0%})")
    print("by innermost app frame (conversations/...) per thread, waiting excluded:")
    for (thread, name), count in app.most_common(limit):
        print(f"{count:>7} {count / total:6.1%}  {thread[:40]:<40} {name}")
    print("self (leaf) time:")
    for name, count in leaf.most_common(limit):
        print(f"{count:>7} {count / total:6.1%}  {name}")
    print("inclusive time:")
    for name, count in inclusive.most_common(limit * 2):
        print(f"{count:>7} {count / total:6.1%}  {name}")


def print_profile(path: str, limit: int = 30):
    import io
    import pstats

    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(path, stream=out).sort_stats(key).print_stats(limit)
        text = out.getvalue()
        print(f"\n--- cProfile of Daphne's event-loop thread, by {key} ---")
        print(text[text.find("   ncalls") :])


# --- main ---------------------------------------------------------------------------------------


async def bench(args, procs: Processes, seats: list[Seat], tmp: Path) -> dict:
    results: dict = {"stages": []}
    quick = args.quick
    chunks = args.chunks or (50 if quick else 200)
    rate = args.rate
    cursor = 0

    def take(count: int) -> list[Seat]:
        nonlocal cursor
        taken = seats[cursor : cursor + count]
        cursor += count
        if len(taken) < count:
            raise RuntimeError("not enough conversations prepared")
        return taken

    # Direct baselines against the fake (no app in the path).
    d_ttft = await direct_ttft(procs.fake_port, 5 if quick else 30)
    d_delay = await direct_delays(procs.fake_port, 1, chunks, rate)
    base_ttft = statistics.median(d_ttft)
    base_delay = statistics.median(d_delay)
    results["direct"] = {
        "ttft_p50_ms": base_ttft * 1000,
        "ttft_p99_ms": pct(d_ttft, 0.99) * 1000,
        "delay_p50_ms": base_delay * 1000,
        "delay_p99_ms": pct(d_delay, 0.99) * 1000,
    }
    print(
        f"direct to the fake: first chunk p50 {base_ttft * 1000:.2f} ms; per-chunk delay p50 "
        f"{base_delay * 1000:.2f} ms, p99 {pct(d_delay, 0.99) * 1000:.2f} ms",
        flush=True,
    )

    # Warm-up (first use of templates, the httpx client, the markdown renderer): not measured.
    await run_stage(procs, take(2), "warm-up", 2, 5, rate)
    # Time to first token, one stream at a time (short replies).
    trials = 5 if quick else 20
    ttft_single = []
    for _ in range(trials):
        stage = await run_stage(procs, take(1), "ttft", 1, 5, rate)
        ttft_single += [r.ttft for r in stage.chats if r.ttft is not None]
        for r in stage.chats:
            if r.failed or r.ttft is None:
                print(f"  ttft trial failed: {r.failed or 'no reply text seen'}", flush=True)
        await asyncio.sleep(0.05)
    results["ttft_single"] = {
        "trials": trials,
        "raw_p50_ms": pct(ttft_single, 0.5) * 1000,
        "added_p50_ms": (pct(ttft_single, 0.5) - base_ttft) * 1000,
        "added_p99_ms": (pct(ttft_single, 0.99) - base_ttft) * 1000,
    }
    print(
        f"time to first token, 1 stream x {trials}: raw p50 {pct(ttft_single, 0.5) * 1000:.2f} ms, "
        f"added p50 {results['ttft_single']['added_p50_ms']:.2f} ms",
        flush=True,
    )

    ns = [int(x) for x in args.ns.split(",")] if args.ns else ([1, 10, 50] if quick else [1, 10, 100, 200, 500])
    for n in ns:
        profile = str(tmp / f"daphne-N{n}.prof") if args.profile_stage == n else None
        spy = str(tmp / f"py-spy-N{n}.txt") if args.py_spy_stage == n else None
        stage = await run_stage(procs, take(n), f"N={n}", n, chunks, rate, profile=profile, py_spy=spy)
        summary = summarise(stage, base_delay, base_ttft)
        results["stages"].append(summary)
        if n == 1 and stage.chats:
            r = stage.chats[0]
            results["bytes_timestamped"] = {
                "ws_bytes": r.bytes_total,
                "delta_bytes": r.delta_bytes,
                "final_frame_bytes": r.final_frame_bytes,
                "final_html": r.final_html,
                "ratio": r.bytes_total / r.final_html if r.final_html else None,
                "frames": r.frames,
                "reply_chars": len(r.reply_text),
            }
        progress(summary)
        if profile:
            print_profile(profile)
        if spy:
            print_py_spy(spy)
        await asyncio.sleep(1.0)

    # Bytes on the wire for one reply with word-sized tokens (like a real model's).
    stage = await run_stage(procs, take(1), "bytes", 1, chunks, rate, words=True)
    r = stage.chats[0]
    results["bytes_words"] = {
        "ws_bytes": r.bytes_total,
        "delta_bytes": r.delta_bytes,
        "final_frame_bytes": r.final_frame_bytes,
        "final_html": r.final_html,
        "ratio": r.bytes_total / r.final_html if r.final_html else None,
        "frames": r.frames,
        "reply_chars": len(r.reply_text),
        "failed": r.failed,
    }

    # The ceiling: unpaced replies, as fast as the app relays them.
    if args.no_ceiling:
        return results
    c_chats, c_chunks = (10, 500) if quick else (50, 2000)
    profile = str(tmp / "daphne-ceiling.prof") if args.profile_stage == 0 else None
    spy = str(tmp / "py-spy-ceiling.txt") if args.py_spy_stage == 0 else None
    stage = await run_stage(procs, take(c_chats), "ceiling", c_chats, c_chunks, 0, profile=profile, py_spy=spy)
    summary = summarise(stage, 0.0, base_ttft)
    results["ceiling"] = summary
    progress(summary)
    if profile:
        print_profile(profile)
    if spy:
        print_py_spy(spy)
    return results


def fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def progress(x: dict):
    """One line per stage while the run goes on (the table at the end has the figures)."""
    print(
        f"{x['stage']:>8}: TTFT+ p50 {fmt(x['ttft_added_p50_ms'])} p99 {fmt(x['ttft_added_p99_ms'])} ms | dly+ p50 "
        f"{fmt(x['delay_added_p50_ms'])} p99 {fmt(x['delay_added_p99_ms'])} ms | lost {x['chunks_lost']} failed "
        f"{x['failed_chats']} | CPU/1k {fmt(x['cpu_s_per_1000_chunks'], '.3f')} s | {fmt(x['chunks_per_s'], '.0f')} "
        f"chunks/s | window p50 {fmt(x['window_p50_ms'])} max {fmt(x['window_max_ms'])} ms | lag p99 "
        f"{fmt(x['loop_lag_p99_ms'])} ms | SQL/chat {x['sql_statements_per_chat']:.1f} | new DB connections/chat "
        f"{x['db_connections_opened_per_chat']:.1f}",
        flush=True,
    )


COLUMNS = [
    # (header, unit, key, format)
    ("TTFT+p50", "ms", "ttft_added_p50_ms", ".1f"),
    ("TTFT+p99", "ms", "ttft_added_p99_ms", ".1f"),
    ("dly+p50", "ms", "delay_added_p50_ms", ".1f"),
    ("dly+p99", "ms", "delay_added_p99_ms", ".1f"),
    ("live99", "ms", "delay_after_first_text_p99_ms", ".1f"),
    ("lost", "chunk", "chunks_lost", "d"),
    ("failed", "chat", "failed_chats", "d"),
    ("CPU/1k", "s", "cpu_s_per_1000_chunks", ".3f"),
    ("peakRSS", "MB", "rss_peak_mb", ".1f"),
    ("VmHWM", "MB", "vmhwm_mb", ".1f"),
    ("wr/msg", "", "message_writes_per_chat", ".2f"),
    ("allowed", "", "allowed_writes_per_chat", ".2f"),
    ("frames", "/chat", "ws_text_frames_per_chat", ".1f"),
    ("window", "ms p50", "window_p50_ms", ".1f"),
    ("chunk/s", "", "chunks_per_s", ".0f"),
    ("cliCPU", "", "client_cpu_share", ".0%"),
    ("lag99", "ms", "loop_lag_p99_ms", ".1f"),
]


def print_table(results: dict, args):
    d = results["direct"]
    t1 = results["ttft_single"]
    print()
    print("=" * 150)
    print(
        f"Direct to the fake (subtracted below): first chunk p50 {d['ttft_p50_ms']:.2f} ms; per-chunk delay p50 "
        f"{d['delay_p50_ms']:.2f} ms (p99 {d['delay_p99_ms']:.2f} ms)"
    )
    print(
        f"Added time to first token, 1 stream ({t1['trials']} trials one after another): p50 "
        f"{t1['added_p50_ms']:.2f} ms, p99 {t1['added_p99_ms']:.2f} ms"
    )
    rows = results["stages"] + ([results["ceiling"]] if "ceiling" in results else [])
    print(f"{'N':>5} " + " ".join(f"{h:>8}" for h, _u, _k, _f in COLUMNS))
    print(f"{'':>5} " + " ".join(f"{u:>8}" for _h, u, _k, _f in COLUMNS))
    for row in rows:
        label = str(row["chats"]) if row["stage"] != "ceiling" else f"C{row['chats']}"
        print(f"{label:>5} " + " ".join(f"{fmt(row.get(k), f):>8}" for _h, _u, k, f in COLUMNS))
    print(
        "TTFT+ = websocket send -> first frame with reply text, minus the direct figure; dly+ = per-chunk arrival "
        "minus send stamp, minus the direct figure;\nlive99 = dly+ p99 of chunks sent after the page first showed "
        "text; wr/msg = INSERT/UPDATE rows on the message table per chat, allowed = 3 + the reply's duration in s;\n"
        "window = the app's coalescing window (p50 of samples); cliCPU = this client process's CPU share; lag99 = "
        "Daphne event-loop lag p99. C<n> = the unpaced ceiling stage (n chats)."
    )
    c = results.get("ceiling")
    if c:
        print(
            f"Ceiling (unpaced, {c['chats']} chats x {c['chunks_each']} chunks): {c['chunks_per_s']:.0f} chunks/s "
            f"delivered to websocket clients ({c['chunks_received']} chunks in {c['wall_s']:.2f} s), lost "
            f"{c['chunks_lost']}, failed {c['failed_chats']}; {c['chunks_live_share'] or 0:.0%} reached the page "
            "before the finished reply"
        )
    for key, label in (("bytes_timestamped", "timestamped chunks"), ("bytes_words", "word-sized tokens")):
        b = results.get(key)
        if b and b.get("ratio"):
            print(
                f"Bytes to the browser for one reply ({label}): {b['ws_bytes']} B in {b['frames']} frames = "
                f"{b['ratio']:.2f}x the final <article> ({b['final_html']} B); of which text frames "
                f"{b['delta_bytes']} B ({b['delta_bytes'] / b['final_html']:.2f}x), the finished-reply frame "
                f"{b['final_frame_bytes']} B, other frames "
                f"{b['ws_bytes'] - b['delta_bytes'] - b['final_frame_bytes']} B"
            )
    for row in results["stages"]:
        if row["failures"]:
            print(f"failures at N={row['chats']}: {row['failures']}")
    last = results["stages"][-1]
    per_table = {
        t: {k: round(v / last["chats"], 2) for k, v in kinds.items() if k in ("insert", "update", "delete")}
        for t, kinds in last["writes"].items()
    }
    print(f"DB writes per chat by table at N={last['chats']}: {json.dumps(per_table)}")
    print("=" * 150)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small N and short replies: a smoke run")
    parser.add_argument("--ns", default="", help="comma-separated N to run (default 1,10,100,200,500)")
    parser.add_argument("--profile-stage", type=int, default=None, help="cProfile Daphne during stage N (0: ceiling)")
    parser.add_argument(
        "--py-spy-stage", type=int, default=None, help="sample Daphne with py-spy during stage N (0: ceiling)"
    )
    parser.add_argument("--json", default="", help="write all figures to this file")
    parser.add_argument(
        "--experiment",
        default="",
        help="what-if changes outside the app's code (bench-only): "
        "switch=SECONDS, conn_max_age=SECONDS, layer=lazyclean, dispatch=fast",
    )
    parser.add_argument("--chunks", type=int, default=0, help="chunks per reply in the N stages (default 200)")
    parser.add_argument("--rate", type=float, default=50.0, help="chunks per second in the N stages (default 50)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the unpaced ceiling stage")
    parser.add_argument("--baseline", default="", help="run Daphne with llm.py/generation.py from this directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="streambench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "CSRF_TRUSTED_ORIGINS")}
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}",
        DEBUG="False",
        SECRET_KEY="bench-secret-key-not-for-production-0123456789abcdefghijklmnop",
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="False",
        SESSION_COOKIE_SECURE="False",
        CSRF_COOKIE_SECURE="False",
        SECURE_HSTS_SECONDS="0",
        OPENAI_API_KEY="",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(BASE_DIR),
    )
    for item in filter(None, args.experiment.split(",")):
        name, _, value = item.partition("=")
        if name == "switch":
            env["BENCH_SWITCH_INTERVAL"] = value
        elif name == "conn_max_age":
            env["BENCH_CONN_MAX_AGE"] = value
            env["DJANGO_SETTINGS_MODULE"] = "bench.settings_experiment"
        elif name == "dispatch":
            env["BENCH_FAST_DISPATCH"] = "1"
        elif name == "layer":
            env["BENCH_LAYER"] = value
            env["DJANGO_SETTINGS_MODULE"] = "bench.settings_experiment"
        else:
            parser.error(f"unknown experiment {name!r}")
    if args.baseline:
        env["BENCH_BASELINE_DIR"] = str(Path(args.baseline).resolve())
        print(f"BASELINE: conversations/llm.py and generation.py loaded from {args.baseline}", flush=True)
    if args.experiment:
        print(f"WHAT-IF EXPERIMENT (not the app's configuration): {args.experiment}", flush=True)
    procs = Processes(tmp, env)
    try:
        env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{procs.start_fake()}/v1"
        subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env, check=True)
        setup_django(env)
        ns = (
            [int(x) for x in args.ns.split(",")] if args.ns else ([1, 10, 50] if args.quick else [1, 10, 100, 200, 500])
        )
        needed = 2 + (5 if args.quick else 20) + sum(ns) + 1 + (10 if args.quick else 50)
        seats = create_seats(users=min(500, max(ns + [50])), conversations=needed)
        procs.start_daphne()
        print(
            f"machine: {os.cpu_count()} CPUs; Daphne pid {procs.daphne_pid} on port {procs.daphne_port}; "
            f"fake provider pid {procs.fake.pid} on port {procs.fake_port}; db {tmp / 'bench.sqlite3'}",
            flush=True,
        )
        results = asyncio.run(bench(args, procs, seats, tmp))
        log = (tmp / "daphne.log").read_text(errors="replace")
        results["daphne_log_locked"] = log.count("database is locked")
        results["daphne_log_tracebacks"] = log.count("Traceback")
        results["elapsed_s"] = time.monotonic() - started
        print_table(results, args)
        print(
            f"Daphne log: {results['daphne_log_locked']} 'database is locked', "
            f"{results['daphne_log_tracebacks']} tracebacks. Total run {results['elapsed_s']:.0f} s."
        )
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    finally:
        procs.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
