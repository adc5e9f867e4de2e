"""Streaming at scale: what users meet when N replies stream at once, judged page by page as a browser would.

    .venv/bin/python bench/stream_bench.py --quick                     # smoke run, under a minute
    .venv/bin/python bench/stream_bench.py                             # N = 1,10,50,200,500 x 4 shapes
    .venv/bin/python bench/stream_bench.py --ns 200 --shapes para,code,table,short
    .venv/bin/python bench/stream_bench.py --redis --workers 2 --ns 200,500
    .venv/bin/python bench/stream_bench.py --redis --workers 1 --ns 200 --redis-restart 4

What runs (loopback only; everything the bench starts, it stops, on Ctrl-C and errors too):
- bench/fake_llm.py, its own process: an OpenAI-compatible provider speaking chunked HTTP/1.1
  (one SSE event per HTTP chunk, keep-alive) or close-delimited answers. Each reply is n
  index-coded word tokens (w0, w1, ...) in one of four shapes (bench/shapes.py: one long
  paragraph, a 300-line code block, a 200-row table, 20 short paragraphs), token i written at
  t0 + i / rate. The fake records t0 per reply, keyed by the id in the user message's tag
  ("bench id=3-17 shape=code n=300 rate=50 framing=chunked"), at GET /bench-log.
- The site: one Daphne process serving bench.asgi_bench:application (the app plus write counters,
  loop-lag sampling and a cProfile switch), or `manage.py runchat --workers N --no-model`, or N
  instrumented Daphne processes on N ports (--ports-per-worker). DEBUG=False, a fresh database
  (SQLite file, or a PostgreSQL database created for the run), the in-memory channel layer or a
  private redis-server (--redis).
- This process creates 20 users, their sessions and one new conversation per page through the
  ORM, then forks client processes that open one websocket per conversation (the `websockets`
  client, with the session cookie), send the tagged message and record every frame with its
  arrival time. A closed socket is reopened as the page's htmx ws extension and chat.js would
  (backoff 0.5 s doubling, then {"action": "sync"}).

Order of a run: the direct baselines against the fake; a warm-up (2 pages per shape, 40 tokens,
not counted); the TTFT trials (single 5-token replies, 0.5 s apart); then one stage per N and
shape, each on new conversations (so each reply is its conversation's first, title and sidebar
frames included); the unpaced ceiling if asked. Server CPU counts from the stage's first send to
the moment every page's socket has closed (1 s after the last reply ended).

How a page is judged (after the stage, from the recorded frames): every frame is applied, in order,
to a model of the page (bench/page_model.py: htmx out-of-band swaps, hx-preserve, the HTML
parser's table rules) that starts from the real conversation page. After each frame the reply's
<article id="msg-N"> visible text gives the token indices the page shows. So:
- token i's delay = arrival of the frame that first shows it - (t0 + i / rate), minus the same
  measured directly against the fake (an httpx stream from this process): "added per-token delay";
- added TTFT = websocket send -> first frame that shows a token, minus direct request -> first token;
- added time to the whole reply = websocket send -> first frame that shows the last token, minus
  direct first token + (tokens - 1) / rate: what the page adds to a user's wait for all of it;
- holes (a token missing while a later one is shown), duplicates, pages never finished (the final
  article still says data-status="streaming"), pages told "complete" while missing text, replies
  saved in the database other than complete (and saved with holes), false interruptions (page or
  row marked interrupted while the fake wrote the whole reply);
- bytes of every frame the page got for the exchange (payload + websocket header) against the
  reply's final HTML (its <article> as the page ends up with it), over pages that ended right;
- server CPU-seconds per 1,000 tokens delivered to pages (utime + stime of every server process:
  Daphne workers, runchat's parent; not the fake, the client or Redis, whose CPU is printed apart),
  RSS of the server processes (peak of the sum, sampled every 0.25 s), and the client processes'
  own CPU share (if one nears 100%, use --client-procs 2).

Options:
  --quick                N = 1, 10, every shape, 60-token replies, 5 TTFT trials (< 1 minute)
  --ns 1,10,200          the N stages (default 1,10,50,200,500)
  --shapes para,code     the shapes (default all four: para, code, table, short)
  --tokens N             tokens per reply in every shape (default: the shape's realistic size:
                         para 1,019 tokens = 5,003 chars, code 300 lines, table 400 = 200 rows,
                         short 300 = 20 paragraphs)
  --rate R               tokens per second per reply (default 50)
  --framing chunked|close  how the fake frames its answers (default chunked)
  --users N              users the conversations belong to (default 20)
  --spread S             the N messages of a stage are sent over S seconds (default 0.02)
  --ttft-trials K        single replies one after another for the added TTFT (default 20)
  --ceiling              also run 50 replies of 2,000 tokens unpaced (how many tokens/s at most)
  --redis                start a private redis-server on a free port and give the app REDIS_URL
  --redis-restart S      kill that redis-server S seconds into each stage, restart it on the same
                         port 3 s later; then a new chat on a new page must work, and every reply
                         and page must still end right (needs --redis)
  --workers N            run the site as `manage.py runchat --workers N --no-model` (N > 1 needs
                         --redis; without runchat --workers, N = 1 runs Daphne as without the
                         option). runchat's processes are not instrumented: lag99/win50 are "-"
  --ports-per-worker     with --workers N: N instrumented Daphne processes on N ports, pages spread
                         over them round-robin (a multi-process setup without runchat)
  --database-url URL     a PostgreSQL server (postgres://postgres@127.0.0.1:5432/): a database
                         is created for the run and dropped after it (SQLite file by default)
  --client-procs K       websocket clients in K processes (default 1)
  --profile-stage N[:shape]  cProfile of Daphne's event-loop thread during that stage (instrumented
                         Daphne only)
  --py-spy-stage N[:shape]   py-spy on every server process during that stage (install it in the
                         venv for the run: .venv/bin/pip install py-spy)
  --experiment ...       what-if changes outside the app's code, printed when used:
                         switch=SECONDS (sys.setswitchinterval in instrumented Daphne),
                         conn_max_age=SECONDS (bench/settings_experiment.py; SQLite only). Gone:
                         dispatch=fast and layer=lazyclean (the app does both now: the socket's
                         no-database dispatch, chatsite/layers.py), --baseline (the modules it
                         swapped no longer exist)
  --json FILE            every figure as JSON
  --keep                 keep the temporary directory (server logs, database, profiles, the
                         frames of each stage's first page) and the PostgreSQL database

Targets (printed "met"/"missed" beside each figure): 0 holes, 0 duplicates, 0 stuck pages, 0 false
complete, 0 replies saved other than complete, 0 false interruptions at N = 200 and 500; <= 0.15
server CPU-s per 1,000 tokens delivered at every shape and load; one process keeps 200 replies live
with added per-token delay p99 <= 500 ms; added TTFT <= 5 ms p50 for one reply and <= 1 s p99 for
200 at once; added per-token delay p50 <= 60 ms at N = 1; bytes to the browser <= 3x the final HTML.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import shapes  # noqa: E402
from bench.page_model import FALLBACK_SKELETON, Page, parse  # noqa: E402

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
ARTICLE = re.compile(r'<article id="msg-(\d+)"([^>]*)>')
STATUS = re.compile(r'data-status="(\w+)"')
MAX_RECONNECTS = 8
GRACE_SECONDS = 1.0  # frames still read after the last page ended (a late frame could break a page)


# --- small helpers -------------------------------------------------------------------------------


def pct(values, q: float):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))]


def ms(value):
    return None if value is None else value * 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root: int) -> list[int]:
    """root and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo and len(out) < 1000:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def ws_frame_bytes(payload: str) -> int:
    """Bytes of one server->client text frame on the wire (unmasked header + payload)."""
    size = len(payload.encode())
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


def http_json(port: int, path: str, timeout: float = 30) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise OSError(f"GET {path}: HTTP {response.status}")
        return json.loads(body)
    finally:
        conn.close()


def http_status(port: int, path: str, timeout: float = 5) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "127.0.0.1"})
        return conn.getresponse().status
    finally:
        conn.close()


# --- processes -----------------------------------------------------------------------------------


class Proc:
    """A child process in a session of its own (Ctrl-C reaches only the bench, which stops it)."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict | None = None, stdout=None):
        self.name = name
        self.log = log
        out = open(log, "ab")  # noqa: SIM115 - handed to the child
        self.popen = subprocess.Popen(
            args,
            cwd=BASE_DIR,
            env=env,
            stdout=stdout if stdout is not None else out,
            stderr=out,
            start_new_session=True,
            text=stdout is not None,
        )
        out.close()
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig=signal.SIGTERM, wait: float = 10) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)  # its own group: runchat's Daphne children too
        try:
            self.popen.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(5)


class Fake:
    def __init__(self, tmp: Path, framing: str):
        self.proc = Proc(
            "fake",
            [PYTHON, str(BASE_DIR / "bench" / "fake_llm.py"), "--framing", framing],
            tmp / "fake.log",
            stdout=subprocess.PIPE,
        )
        line = self.proc.popen.stdout.readline()
        if not line.startswith("PORT"):
            self.proc.stop()
            raise RuntimeError(f"fake provider did not start: {line!r}")
        self.port = int(line.split()[1])

    def log(self, prefix: str) -> dict:
        return http_json(self.port, f"/bench-log?prefix={urllib.parse.quote(prefix)}")


class Redis:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.port = free_port()
        self.proc: Proc | None = None
        self.cpu_before_restart = 0.0  # CPU of killed instances
        self.start()

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.tmp), "--daemonize", "no", "--loglevel", "warning"]
        self.proc = Proc("redis", args, self.tmp / "redis.log")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.ping():
                return
            if not self.proc.alive():
                break
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start: " + (self.tmp / "redis.log").read_text(errors="replace")[-500:])

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None:
            self.cpu_before_restart += proc_cpu(self.proc.pid)
            self.proc.stop(signal.SIGKILL, wait=5)

    def cpu(self) -> float:
        return self.cpu_before_restart + (proc_cpu(self.proc.pid) if self.proc else 0.0)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Servers:
    """The site: one instrumented Daphne, N of them on N ports, or runchat (N workers on one port)."""

    def __init__(self, tmp: Path, env: dict, mode: str, workers: int):
        self.mode = mode
        self.workers = workers
        self.procs: list[Proc] = []
        self.ports: list[int] = []
        count = workers if mode == "ports" else 1
        for k in range(count):
            port = free_port()
            if mode == "runchat":
                args = [PYTHON, "manage.py", "runchat", "--host", "127.0.0.1", "--port", str(port)]
                args += ["--workers", str(workers), "--no-model"]
            else:
                args = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "bench.asgi_bench:application"]
            self.procs.append(Proc(f"server{k}", args, tmp / f"server{k}.log", env=env))
            self.ports.append(port)
        for proc, port in zip(self.procs, self.ports, strict=True):
            self._wait(proc, port)

    @property
    def instrumented(self) -> bool:
        return self.mode != "runchat"

    def _wait(self, proc: Proc, port: int) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n" + proc.log.read_text(errors="replace")[-3000:])
            try:
                if self.instrumented:
                    http_json(port, "/__bench__/stats", timeout=2)
                else:
                    http_status(port, "/", timeout=2)
                if self.mode == "runchat" and len(descendants(proc.pid)) < 1 + self.workers:
                    raise OSError("workers not all up yet")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{proc.name} did not answer within 90 s")

    def pids(self) -> list[int]:
        out = []
        for proc in self.procs:
            out += descendants(proc.pid)
        return out

    def cpu(self) -> dict[int, float]:
        return {pid: proc_cpu(pid) for pid in self.pids()}

    def rss_kb(self) -> dict[int, int]:
        return {pid: proc_rss_kb(pid) for pid in self.pids()}

    def stats(self, since: float = 0.0) -> list[dict]:
        if not self.instrumented:
            return []
        return [http_json(port, f"/__bench__/stats?since={since}") for port in self.ports]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


class Database:
    """SQLite in the temporary directory, or a PostgreSQL database created for the run."""

    def __init__(self, tmp: Path, url: str):
        self.pg = None
        if not url:
            self.url = f"sqlite:///{tmp / 'bench.sqlite3'}"
            return
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("--database-url must be postgres://USER@127.0.0.1:PORT/ (loopback only)")
        name = f"streambench_{os.getpid()}_{int(time.time())}"
        self.pg = {"host": parts.hostname, "port": str(parts.port or 5432), "user": parts.username or "postgres"}
        self.name = name
        self._psql(f'CREATE DATABASE "{name}"')
        auth = parts.username or "postgres"
        if parts.password:
            auth += f":{parts.password}"
        self.url = f"postgres://{auth}@{parts.hostname}:{parts.port or 5432}/{name}"

    def _psql(self, sql: str) -> None:
        pg = self.pg
        subprocess.run(
            ["psql", "-h", pg["host"], "-p", pg["port"], "-U", pg["user"], "-d", "postgres", "-v", "ON_ERROR_STOP=1"]
            + ["-q", "-c", sql],
            check=True,
            timeout=60,
            capture_output=True,
        )

    def drop(self) -> None:
        if self.pg:
            try:
                self._psql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            except (subprocess.SubprocessError, OSError) as exc:
                print(f"could not drop database {self.name}: {exc}", flush=True)


# --- this process's Django: seats, the page skeleton, the saved replies ----------------------------


@dataclass
class Seat:
    """A conversation and its owner's session, for one page."""

    code: str
    session_key: str


def setup_django(env: dict):
    os.environ.update(env)
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


def page_skeleton(seat: Seat) -> tuple[str, str]:
    """The real conversation page (rendered here, as Daphne would), with its transcript and sidebar emptied."""
    from django.db import connection
    from django.test import Client, override_settings

    try:
        warnings.filterwarnings("ignore", message="No directory at")  # whitenoise: no collectstatic here
        storages = {
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        }
        with override_settings(STORAGES=storages):
            client = Client()
            client.cookies["sessionid"] = seat.session_key
            response = client.get(f"/c/{seat.code}/", HTTP_HOST="127.0.0.1")
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        root, _ = parse(response.content.decode(), fragment=False)
        for element in root.walk():
            if element.id in ("messages", "sidebar-list"):
                element.children = []
        html = root.inner_html()
        if 'id="messages"' not in html:
            raise RuntimeError("no #messages")
        return html, "the app's conversation page"
    except Exception as exc:  # noqa: BLE001 - the fallback still judges the reply
        return FALLBACK_SKELETON, f"a built-in skeleton (the page could not be rendered: {exc})"
    finally:
        connection.close()


def saved_replies(codes: list[str]) -> dict[str, dict]:
    """conversation code -> its assistant message as saved (status, content)."""
    from django.db import connection

    from conversations.models import Message

    try:
        rows = Message.objects.filter(conversation__code__in=codes, role=Message.Role.ASSISTANT).values(
            "conversation__code", "pk", "status", "content"
        )
        return {str(r["conversation__code"]): r for r in rows}
    finally:
        connection.close()


# --- the websocket clients (forked processes) -----------------------------------------------------


@dataclass
class PageSpec:
    key: str
    port: int
    code: str
    session: str
    message: str
    bench_id: str
    offset: float  # seconds after the stage's start
    n: int
    rate: float


@dataclass
class PageLog:
    key: str
    pre: list[str] = field(default_factory=list)  # frames before the message was sent (the composer)
    frames: list[tuple[float, str]] = field(default_factory=list)
    sent: float | None = None
    reply_id: int | None = None
    ended_at: float | None = None
    end_status: str = ""
    error: str = ""
    reconnects: int = 0
    connect_attempts: int = 0
    closes: list[tuple[float, int]] = field(default_factory=list)


async def open_socket(spec: PageSpec, *, wait_first: bool):
    from websockets.asyncio.client import connect

    ws = await connect(
        f"ws://127.0.0.1:{spec.port}/ws/c/{spec.code}/",
        additional_headers={"Cookie": f"sessionid={spec.session}", "Origin": f"http://127.0.0.1:{spec.port}"},
        open_timeout=120,
        ping_interval=None,
        close_timeout=5,
        compression=None,
        max_size=None,
        max_queue=None,
    )
    first = await asyncio.wait_for(ws.recv(), 60) if wait_first else None
    return ws, first


class ClientStage:
    def __init__(self, specs: list[PageSpec], deadline_after: float):
        self.specs = specs
        self.logs = {s.key: PageLog(s.key) for s in specs}
        self.socks: dict[str, object] = {}
        self.deadline_after = deadline_after
        self.deadline = float("inf")
        self.closing = asyncio.Event()
        self.waiting: set[str] = set()
        self.all_ended = asyncio.Event()

    async def connect(self, specs: list[PageSpec], *, attempts: int = 3, backoff: bool = False) -> None:
        """Open the pages' sockets; `backoff`: retry as the page's ws extension would (0.5 s doubling)."""
        gate = asyncio.Semaphore(24)

        async def one(spec):
            log = self.logs[spec.key]
            async with gate:
                for attempt in range(attempts):
                    log.connect_attempts = attempt + 1
                    try:
                        ws, first = await open_socket(spec, wait_first=True)
                        self.socks[spec.key] = ws
                        log.pre.append(first)
                        log.error = ""
                        return
                    except Exception as exc:  # noqa: BLE001
                        log.error = f"connect: {type(exc).__name__}: {exc}"
                        await asyncio.sleep(min(0.5 * 2**attempt, 10) if backoff else 0.5)

        await asyncio.gather(*(one(s) for s in specs))

    def ended(self, log: PageLog, status: str, now: float) -> None:
        if log.ended_at is None:
            log.ended_at, log.end_status = now, status
        self.waiting.discard(log.key)
        if not self.waiting:
            self.all_ended.set()

    async def page(self, spec: PageSpec, start_at: float) -> None:
        log = self.logs[spec.key]
        self.waiting.add(spec.key)
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        ws = self.socks.get(spec.key)
        if ws is None:
            self.ended(log, "no socket", time.monotonic())
            return
        log.sent = time.monotonic()
        retries = 0
        try:
            await ws.send(json.dumps({"message": spec.message}))
        except Exception as exc:  # noqa: BLE001
            log.error = f"send: {type(exc).__name__}"
        monotonic = time.monotonic
        frames = log.frames
        for _frame in range(1_000_000):
            try:
                frame = await ws.recv()
            except Exception as exc:  # noqa: BLE001 - closed: reconnect as the page would
                if self.closing.is_set():
                    return
                code = getattr(getattr(exc, "rcvd", None), "code", None) or 1006
                log.closes.append((monotonic(), code))
                if code in (4401, 4404) or log.reconnects >= MAX_RECONNECTS or monotonic() > self.deadline:
                    log.error = log.error or f"socket closed ({code})"
                    self.ended(log, "closed", monotonic())
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), min(0.5 * 2**retries, 10))
                if self.closing.is_set():
                    return
                retries += 1
                log.reconnects += 1
                try:
                    ws, _ = await open_socket(spec, wait_first=False)
                    self.socks[spec.key] = ws
                    await ws.send(json.dumps({"action": "sync"}))  # chat.js, on every open after the first
                    retries = 0
                except Exception:  # noqa: BLE001, S112 - try again after the next backoff
                    continue
                continue
            now = monotonic()
            frames.append((now, frame))
            if log.ended_at is not None:
                continue
            for match in ARTICLE.finditer(frame):
                attrs = match.group(2)
                if "msg-assistant" not in attrs:
                    continue
                status = STATUS.search(attrs)
                rid = int(match.group(1))
                if log.reply_id is None:
                    log.reply_id = rid
                if rid == log.reply_id and status and status.group(1) != "streaming":
                    self.ended(log, status.group(1), now)
            if log.reply_id is None and 'role="alert"' in frame:
                log.error = re.sub(r"<[^>]+>", " ", frame)[:200].strip()
                self.ended(log, "error notice", now)

    async def close_all(self) -> None:
        self.closing.set()

        async def one(ws):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)

        await asyncio.gather(*(one(ws) for ws in self.socks.values()))


async def client_main(conn, specs: list[PageSpec], deadline_after: float, expect_probe: bool) -> None:
    loop = asyncio.get_running_loop()
    stage = ClientStage(specs, deadline_after)
    main = [s for s in specs if s.offset >= 0]
    t = time.monotonic()
    await stage.connect(main)
    conn.send(("ready", {"connect_s": time.monotonic() - t, "connected": len(stage.socks)}))
    message = await loop.run_in_executor(None, conn.recv)
    if message[0] != "go":
        return
    start_at = message[1]
    stage.deadline = start_at + deadline_after
    cpu0, wall0 = time.process_time(), time.monotonic()
    tasks = [asyncio.create_task(stage.page(s, start_at + s.offset)) for s in main]

    async def probes():
        if not expect_probe:
            return
        message = await loop.run_in_executor(None, conn.recv)
        if message[0] != "probe":
            return
        late = [s for s in specs if s.offset < 0]
        for spec in late:
            stage.logs[spec.key].error = ""
            stage.waiting.add(spec.key)
        await stage.connect(late, attempts=MAX_RECONNECTS, backoff=True)
        tasks.extend(asyncio.create_task(stage.page(s, 0.0)) for s in late)

    probe_task = asyncio.create_task(probes())
    await asyncio.sleep(0.1)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stage.all_ended.wait(), max(1.0, stage.deadline - time.monotonic()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(probe_task, max(1.0, stage.deadline - time.monotonic()))
    if stage.waiting:
        stage.all_ended.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stage.all_ended.wait(), max(1.0, stage.deadline - time.monotonic()))
    await asyncio.sleep(GRACE_SECONDS)
    await stage.close_all()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    probe_task.cancel()
    cpu = {"cpu": time.process_time() - cpu0, "wall": time.monotonic() - wall0}
    conn.send(("done", list(stage.logs.values()), cpu))


def client_entry(conn, specs, deadline_after, expect_probe):
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        asyncio.run(client_main(conn, specs, deadline_after, expect_probe))
    finally:
        conn.close()


# --- direct baselines (no app in the path) --------------------------------------------------------


async def direct_baseline(fake: Fake, framing: str, trials: int, n: int, rate: float) -> dict:
    import httpx

    url = f"http://127.0.0.1:{fake.port}/v1/chat/completions"
    stamp = f"direct{os.getpid()}-"
    ttfts: list[float] = []
    async with httpx.AsyncClient(timeout=60) as client:
        for k in range(trials):
            body = {"model": "bench-model", "stream": True}
            body["messages"] = [{"role": "user", "content": shapes.tag(f"{stamp}t{k}", "para", 3, 50, framing)}]
            start = time.monotonic()
            async with client.stream("POST", url, json=body) as response:
                async for raw in response.aiter_bytes():
                    if b'"w0"' in raw:
                        ttfts.append(time.monotonic() - start)
                        break
            await asyncio.sleep(0.02)
        arrivals: dict[int, float] = {}
        body = {"model": "bench-model", "stream": True}
        body["messages"] = [{"role": "user", "content": shapes.tag(f"{stamp}d", "para", n, rate, framing)}]
        async with client.stream("POST", url, json=body) as response:
            async for raw in response.aiter_bytes():
                now = time.monotonic()
                for i in shapes.shown(raw.decode("utf-8", "replace")):
                    arrivals.setdefault(i, now)
    entry = fake.log(f"{stamp}d")[f"{stamp}d"]
    delays = [t - (entry["t0"] + i / rate) for i, t in arrivals.items()]
    return {
        "ttft_p50_ms": ms(pct(ttfts, 0.5)),
        "ttft_p99_ms": ms(pct(ttfts, 0.99)),
        "delay_p50_ms": ms(pct(delays, 0.5)),
        "delay_p99_ms": ms(pct(delays, 0.99)),
        "ttft_s": pct(ttfts, 0.5),
        "delay_s": pct(delays, 0.5),
    }


# --- judging one page ----------------------------------------------------------------------------


def judge_page(spec: PageSpec, log: PageLog, skeleton: str, entry: dict | None, row: dict | None) -> dict:
    page = Page(skeleton)
    for frame in log.pre:
        page.apply(frame)
    n = spec.n
    first_seen: dict[int, float] = {}
    live: set[int] = set()
    statuses: list[str] = []
    transient_holes = transient_dups = flicker = 0
    finished_at = None
    last_text = None
    last_set: set[int] = set()
    art_id = f"msg-{log.reply_id}" if log.reply_id is not None else None
    bytes_all = bytes_reply = 0
    for t, frame in log.frames:
        size = ws_frame_bytes(frame)
        bytes_all += size
        if art_id and art_id in frame:
            bytes_reply += size
        page.apply(frame)
        if art_id is None:
            continue
        article = page.element(art_id)
        if article is None:
            continue
        status = article.attrs.get("data-status") or ""
        if not statuses or statuses[-1] != status:
            statuses.append(status)
        if status != "streaming" and finished_at is None:
            finished_at = t
        text = article.text()
        if text is last_text:
            continue
        last_text = text
        indices = shapes.shown(text)
        verdict = shapes.judge(indices, n)
        transient_holes = max(transient_holes, verdict["holes"])
        transient_dups = max(transient_dups, verdict["duplicates"])
        now_set = set(indices)
        flicker += len(last_set - now_set)
        last_set = now_set
        for i in now_set:
            if i not in first_seen:
                first_seen[i] = t
                if finished_at is None:
                    live.add(i)
    article = page.element(art_id) if art_id else None
    final_text = article.text() if article is not None else ""
    final = shapes.judge(shapes.shown(final_text), n)
    final_status = (article.attrs.get("data-status") or "") if article is not None else ""
    final_html = len(article.html().encode()) if article is not None else 0
    first_text = min(first_seen.values()) if first_seen else None
    delays, delays_live = [], []
    if entry and entry.get("rate"):
        t0, rate = entry["t0"], entry["rate"]
        for i, t in first_seen.items():
            if 0 <= i < n:
                sent = t0 + i / rate
                delays.append(t - sent)
                if first_text is not None and sent >= first_text:
                    delays_live.append(t - sent)
    app_error = ""
    if article is not None:
        for element in article.walk():
            if "msg-error" in (element.attrs.get("class") or "").split():
                app_error = " ".join(element.text().split())[:160]
                break
    fake_done = bool(entry and entry["done"] and not entry["cancelled"])
    saved = (row or {}).get("status", "")
    saved_judge = shapes.judge(shapes.shown((row or {}).get("content") or ""), n) if row else None
    interrupted_seen = "interrupted" in statuses
    return {
        "key": spec.key,
        "error": log.error,
        "app_error": app_error,
        "reply_id": log.reply_id,
        "final_status": final_status,
        "saved_status": saved,
        "tokens": len([i for i in first_seen if 0 <= i < n]),
        "tokens_live": len(live),
        "holes": final["holes"],
        "duplicates": final["duplicates"],
        "missing": final["missing"],
        "foreign": final["foreign"],
        "transient_holes": transient_holes,
        "transient_duplicates": transient_dups,
        "flicker": flicker,
        "stuck": final_status in ("streaming", ""),
        "false_complete": final_status == "complete" and (final["missing"] or final["holes"] or final["duplicates"]),
        "saved_not_complete": saved != "complete",
        "saved_holes": bool(saved_judge and (saved_judge["missing"] or saved_judge["holes"])),
        "false_interruption": fake_done and (interrupted_seen or saved == "interrupted"),
        "ended_right": final_status == "complete" and not (final["missing"] or final["holes"] or final["duplicates"]),
        "ttft": (first_text - log.sent) if first_text is not None and log.sent else None,
        "to_upstream": (entry["arrived"] - log.sent) if entry and log.sent else None,
        "first_relay": (first_seen[0] - entry["t0"]) if entry and 0 in first_seen else None,
        # send -> the frame that first shows the last token (what a user waits for the whole reply)
        "to_last": (first_seen[n - 1] - log.sent) if (n - 1) in first_seen and log.sent else None,
        "delays": delays,
        "delays_live": delays_live,
        "end": max([t for t, _f in log.frames if log.ended_at is None or t <= log.ended_at] or [log.sent or 0]),
        "ended_at": log.ended_at,
        "bytes_all": bytes_all,
        "bytes_reply": bytes_reply,
        "final_html": final_html,
        "frames": len(log.frames),
        "reconnects": log.reconnects,
        "connect_attempts": log.connect_attempts,
        "no_target": page.no_target,
        "unsupported": page.unsupported,
        "dropped_tags": page.dropped_tags,
        "duplicate_ids": page.duplicate_ids(),
        "problems": page.problems,
        "fake_found": entry is not None,
        "fake_done": fake_done,
        "fake_cancelled": bool(entry and entry["cancelled"]),
        "fake_requests": entry["requests"] if entry else 0,
        "fake_late_max": entry["late_max"] if entry else None,
        "fake_late_over_5ms": entry["late_over_5ms"] if entry else 0,
        "statuses": statuses,
    }


# --- one stage -------------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    tmp: Path
    fake: Fake
    servers: Servers
    redis: Redis | None
    seats: list[Seat]
    skeleton: str
    direct: dict = field(default_factory=dict)
    cursor: int = 0
    stage_no: int = 0

    def take(self, count: int) -> list[Seat]:
        taken = self.seats[self.cursor : self.cursor + count]
        self.cursor += count
        if len(taken) < count:
            raise RuntimeError("not enough conversations prepared")
        return taken


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def stage_matches(spec: str | None, n: int, shape: str) -> bool:
    if not spec:
        return False
    want_n, _, want_shape = spec.partition(":")
    return want_n == str(n) and want_shape in ("", shape)


def sample_rss(servers: Servers, stop: threading.Event, out: list[int], single: list[int]) -> None:
    for _ in range(100_000):
        if stop.is_set():
            return
        values = servers.rss_kb()
        out.append(sum(values.values()))
        single.append(max(values.values() or [0]))
        stop.wait(0.25)


def recv(conn, timeout: float):
    if not conn.poll(timeout):
        raise TimeoutError("a client process did not answer in time")
    return conn.recv()


def run_stage(
    ctx: Context,
    name: str,
    n_pages: int,
    shape: str,
    tokens: int,
    rate: float,
    *,
    spacing: float | None = None,
    profile: bool = False,
    py_spy: bool = False,
    restart: float | None = None,
) -> dict:
    """N pages, one new conversation each, their messages sent within --spread seconds (or `spacing` apart)."""
    args = ctx.args
    ctx.stage_no += 1
    prefix = f"s{ctx.stage_no}-"
    ports = ctx.servers.ports
    framing = args.framing
    step = spacing if spacing is not None else args.spread / max(1, n_pages)

    def spec(k: int, seat, name: str, page_shape: str, page_tokens: int, send_at: float) -> PageSpec:
        bench_id = f"{prefix}{name}"
        tag = shapes.tag(bench_id, page_shape, page_tokens, rate, framing)
        return PageSpec(
            bench_id, ports[k % len(ports)], seat.code, seat.session_key, tag, bench_id, send_at, page_tokens, rate
        )

    specs = [spec(k, seat, str(k), shape, tokens, k * step) for k, seat in enumerate(ctx.take(n_pages))]
    probes = []
    if restart is not None:  # new chats on new pages, opened and sent once Redis is back (offset -1)
        probes = [spec(k, seat, f"probe{k}", "short", 40, -1.0) for k, seat in enumerate(ctx.take(len(ports)))]
    duration = (tokens / rate if rate else 5.0) + (spacing or 0) * n_pages
    deadline_after = duration + 120 + (restart or 0)
    clients = max(1, min(args.client_procs, n_pages))
    parts = [specs[k::clients] for k in range(clients)]
    parts[0] += probes
    mp = multiprocessing.get_context("fork")
    conns, children = [], []
    for k, part in enumerate(parts):
        parent_end, child_end = mp.Pipe()
        child = mp.Process(
            target=client_entry, args=(child_end, part, deadline_after, bool(probes) and k == 0), daemon=True
        )
        child.start()
        child_end.close()
        conns.append(parent_end)
        children.append(child)
    restarter = None
    sampler_stop = threading.Event()
    spy_procs: list[subprocess.Popen] = []
    try:
        ready = [recv(c, 300) for c in conns]
        connect_s = max(r[1]["connect_s"] for r in ready)
        stats_before = ctx.servers.stats()
        if profile and ctx.servers.instrumented:
            http_json(ports[0], "/__bench__/profile/start")
        if py_spy:
            spy_procs = start_py_spy(ctx, name)
        cpu_before = ctx.servers.cpu()
        redis_before = ctx.redis.cpu() if ctx.redis else 0.0
        rss: list[int] = []
        rss_single: list[int] = []
        sampler = threading.Thread(target=sample_rss, args=(ctx.servers, sampler_stop, rss, rss_single), daemon=True)
        sampler.start()
        start_at = time.monotonic() + 0.3
        for c in conns:
            c.send(("go", start_at))
        restart_log: dict = {}
        if probes:
            restarter = threading.Thread(target=restart_redis, args=(ctx, conns[0], start_at + restart, restart_log))
            restarter.start()
            restarter.join(restart + 60)
        done = [recv(c, deadline_after + 60) for c in conns]
        cpu_after = ctx.servers.cpu()
        redis_after = ctx.redis.cpu() if ctx.redis else 0.0
        sampler_stop.set()
        sampler.join(5)
        stats_after = ctx.servers.stats(since=start_at)
    finally:
        sampler_stop.set()
        for spy in spy_procs:
            spy.send_signal(signal.SIGINT)
        for spy in spy_procs:
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()
        for child in children:
            child.join(10)
            if child.is_alive():
                child.terminate()
                child.join(5)
    if profile and ctx.servers.instrumented:
        out = urllib.parse.quote(str(ctx.tmp / f"profile-{slug(name)}.prof"))
        http_json(ports[0], f"/__bench__/profile/stop?out={out}")
    logs = {log.key: log for _tag, stage_logs, _cpu in done for log in stage_logs}
    if specs:  # the first page's frames, for a look with --keep
        first = logs[specs[0].key]
        dump = {"pre": first.pre, "sent": first.sent, "frames": first.frames, "reply_id": first.reply_id}
        (ctx.tmp / f"frames-{slug(name)}.json").write_text(json.dumps(dump))
    client_cpu = [cpu["cpu"] / cpu["wall"] for _tag, _logs, cpu in done if cpu["wall"] > 0]
    fake_log = ctx.fake.log(prefix)
    rows = saved_replies([s.code for s in specs + probes])
    judge_started = time.monotonic()
    judged = [judge_page(s, logs[s.key], ctx.skeleton, fake_log.get(s.bench_id), rows.get(s.code)) for s in specs]
    probe_judged = [
        judge_page(s, logs[s.key], ctx.skeleton, fake_log.get(s.bench_id), rows.get(s.code)) for s in probes
    ]
    cpu = sum(v - cpu_before.get(pid, 0.0) for pid, v in cpu_after.items())
    summary = summarise(ctx, name, shape, n_pages, tokens, rate, judged, start_at)
    delivered = summary["tokens_delivered"]
    summary.update(
        {
            "connect_s": connect_s,
            "server_processes": len(cpu_after),
            "server_cpu_s": cpu,
            "cpu_s_per_1000_tokens": cpu / (delivered / 1000) if delivered else None,
            "redis_cpu_s": (redis_after - redis_before) if ctx.redis else None,
            "rss_peak_mb": max(rss or [0]) / 1024,
            "rss_peak_single_mb": max(rss_single or [0]) / 1024,
            "client_cpu_share": max(client_cpu or [0.0]),
            "client_procs": clients,
            "judge_s": time.monotonic() - judge_started,
        }
    )
    summary.update(instrumented_figures(stats_before, stats_after, n_pages))
    if probes:
        summary["redis_restart"] = {
            **restart_log,
            "probes": len(probe_judged),
            "probes_ended_right": sum(1 for p in probe_judged if p["ended_right"] and p["saved_status"] == "complete"),
            "probe_ttft_ms": [ms(p["ttft"]) for p in probe_judged],
            "probe_connect_attempts": [p["connect_attempts"] for p in probe_judged],
            "probe_errors": [p["error"] or p["final_status"] for p in probe_judged if not p["ended_right"]],
        }
    if profile and ctx.servers.instrumented:
        summary["profile"] = str(ctx.tmp / f"profile-{slug(name)}.prof")
    if py_spy:
        summary["py_spy"] = [str(ctx.tmp / f"py-spy-{slug(name)}-{pid}.txt") for pid in ctx.servers.pids()]
    return summary


def restart_redis(ctx: Context, conn, kill_at: float, out: dict) -> None:
    """Kill the bench's redis-server at kill_at, start it again on the same port 3 s later, then start the probes."""
    try:
        time.sleep(max(0.0, kill_at - time.monotonic()))
        out["killed_at_s"] = time.monotonic() - kill_at
        ctx.redis.kill()
        time.sleep(3.0)
        ctx.redis.start()
        out["restarted_after_s"] = time.monotonic() - kill_at
        conn.send(("probe",))
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):
            conn.send(("no-probe",))


def start_py_spy(ctx: Context, name: str) -> list[subprocess.Popen]:
    spy = Path(PYTHON).parent / "py-spy"
    if not spy.exists():
        print("py-spy is not installed in the venv (.venv/bin/pip install py-spy): no profile", flush=True)
        return []
    out = []
    for pid in ctx.servers.pids():
        if "python" not in Path(f"/proc/{pid}/exe").resolve().name:
            continue
        out.append(
            subprocess.Popen(
                [str(spy), "record", "-p", str(pid), "--threads", "--rate", "200", "--format", "raw"]
                + ["-o", str(ctx.tmp / f"py-spy-{slug(name)}-{pid}.txt")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(1.0)
    return out


def instrumented_figures(before: list[dict], after: list[dict], n_pages: int) -> dict:
    if not after:
        return {}
    queries = sum(sum(a["queries"].values()) - sum(b["queries"].values()) for a, b in zip(after, before, strict=True))
    conns = sum(a["connections_opened"] - b["connections_opened"] for a, b in zip(after, before, strict=True))
    writes = 0
    for a, b in zip(after, before, strict=True):
        for table, kinds in a["writes"].items():
            if table != "conversations_message":
                continue
            for kind, value in kinds.items():
                if kind in ("insert", "update"):
                    writes += value - b["writes"].get(table, {}).get(kind, 0)
    lags = [a["loop_lag_p99_ms"] for a in after if a["loop_lag_p99_ms"] is not None]
    windows = [a["window_p50_ms"] for a in after if a["window_p50_ms"] is not None]
    return {
        "sql_per_reply": queries / n_pages,
        "db_connections_per_reply": conns / n_pages,
        "message_writes_per_reply": writes / n_pages,
        "loop_lag_p99_ms": max(lags) if lags else None,
        "window_p50_ms": max(windows) if windows else None,
        "window_max_ms": max([a["window_max_ms"] or 0 for a in after]),
        "db_locked_errors": sum(a["locked_errors"] - b["locked_errors"] for a, b in zip(after, before, strict=True)),
    }


def summarise(ctx: Context, name, shape, n_pages, tokens, rate, judged: list[dict], start_at: float) -> dict:
    base_ttft = ctx.direct.get("ttft_s") or 0.0
    base_delay = ctx.direct.get("delay_s") or 0.0
    ttfts = [p["ttft"] - base_ttft for p in judged if p["ttft"] is not None]
    delays = [d - base_delay for p in judged for d in p["delays"]]
    live = [d - base_delay for p in judged for d in p["delays_live"]]
    wholes = [p["to_last"] - base_ttft - (tokens - 1) / rate for p in judged if p["to_last"] is not None]
    delivered = sum(p["tokens"] for p in judged)
    end = max([p["end"] for p in judged] or [start_at])
    wall = max(1e-6, end - start_at)
    # Bytes against the final HTML of replies that ended right (an error's article is not the reply).
    ratios = [p["bytes_all"] / p["final_html"] for p in judged if p["final_html"] and p["ended_right"]]
    reply_ratios = [p["bytes_reply"] / p["final_html"] for p in judged if p["final_html"] and p["ended_right"]]
    late = [p["fake_late_max"] for p in judged if p["fake_late_max"] is not None]
    count = lambda key: sum(1 for p in judged if p[key])  # noqa: E731
    problems = sorted({x for p in judged for x in p["problems"]})[:5]
    errors = sorted({p["error"] for p in judged if p["error"]})[:5]
    return {
        "stage": name,
        "shape": shape,
        "pages": n_pages,
        "tokens_each": tokens,
        "rate": rate,
        "chars_each": len(shapes.reply_text(shape, tokens)),
        "ttft_added_p50_ms": ms(pct(ttfts, 0.5)),
        "ttft_added_p99_ms": ms(pct(ttfts, 0.99)),
        "to_upstream_p50_ms": ms(pct([p["to_upstream"] for p in judged if p["to_upstream"] is not None], 0.5)),
        "to_upstream_p99_ms": ms(pct([p["to_upstream"] for p in judged if p["to_upstream"] is not None], 0.99)),
        "first_relay_p50_ms": ms(pct([p["first_relay"] for p in judged if p["first_relay"] is not None], 0.5)),
        "delay_added_p50_ms": ms(pct(delays, 0.5)),
        "delay_added_p99_ms": ms(pct(delays, 0.99)),
        "delay_added_max_ms": ms(max(delays)) if delays else None,
        "delay_live_p99_ms": ms(pct(live, 0.99)),
        # send -> last token shown, minus what it takes directly (first token + the reply's pace)
        "whole_added_p50_ms": ms(pct(wholes, 0.5)),
        "whole_added_p99_ms": ms(pct(wholes, 0.99)),
        "tokens_expected": n_pages * tokens,
        "tokens_delivered": delivered,
        "tokens_live_share": sum(p["tokens_live"] for p in judged) / delivered if delivered else None,
        "tokens_per_s": delivered / wall,
        "wall_s": wall,
        "bytes_ratio_p50": pct(ratios, 0.5),
        "bytes_ratio_max": max(ratios) if ratios else None,
        "bytes_reply_ratio_p50": pct(reply_ratios, 0.5),
        "bytes_per_reply_p50": pct([p["bytes_all"] for p in judged], 0.5),
        "final_html_p50": pct([p["final_html"] for p in judged], 0.5),
        "frames_per_reply_p50": pct([p["frames"] for p in judged], 0.5),
        "holes": count("holes"),
        "duplicates": count("duplicates"),
        "stuck": count("stuck"),
        "false_complete": count("false_complete"),
        "saved_not_complete": count("saved_not_complete"),
        "false_interruptions": count("false_interruption"),
        "ended_right": count("ended_right"),
        "missing_pages": count("missing"),
        "saved_with_holes": count("saved_holes"),
        "transient_holes": count("transient_holes"),
        "transient_duplicates": count("transient_duplicates"),
        "flicker_pages": count("flicker"),
        "errors": count("error"),
        "reconnects": sum(p["reconnects"] for p in judged),
        "no_target": sum(p["no_target"] for p in judged),
        "unsupported": sum(p["unsupported"] for p in judged),
        "dropped_tags": sum(p["dropped_tags"] for p in judged),
        "duplicate_ids": sum(p["duplicate_ids"] for p in judged),
        "fake_not_asked": sum(1 for p in judged if not p["fake_found"]),
        "fake_cancelled": count("fake_cancelled"),
        "fake_repeat_requests": sum(max(0, p["fake_requests"] - 1) for p in judged),
        "fake_late_max_ms": ms(max(late)) if late else None,
        "fake_late_over_5ms": sum(p["fake_late_over_5ms"] for p in judged),
        "final_statuses": dict(sorted(statistics_count(p["final_status"] or "(none)" for p in judged).items())),
        "saved_statuses": dict(sorted(statistics_count(p["saved_status"] or "(none)" for p in judged).items())),
        "error_samples": errors,
        "app_error_samples": sorted({p["app_error"] for p in judged if p["app_error"]})[:3],
        "model_problems": problems,
    }


def statistics_count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


# --- output -----------------------------------------------------------------------------------------


def fmt(value, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(int(value))
    return format(value, spec)


MAIN = [
    ("TTFT+50", "ms", "ttft_added_p50_ms", ".1f"),
    ("TTFT+99", "ms", "ttft_added_p99_ms", ".1f"),
    ("upstr50", "ms", "to_upstream_p50_ms", ".1f"),
    ("dly+50", "ms", "delay_added_p50_ms", ".1f"),
    ("dly+99", "ms", "delay_added_p99_ms", ".1f"),
    ("live99", "ms", "delay_live_p99_ms", ".1f"),
    ("whole99", "ms", "whole_added_p99_ms", ".1f"),
    ("tok/s", "", "tokens_per_s", ".0f"),
    ("CPU/1k", "s", "cpu_s_per_1000_tokens", ".3f"),
    ("RSS", "MB", "rss_peak_mb", ".0f"),
    ("bytes50", "x", "bytes_ratio_p50", ".2f"),
    ("bytesMax", "x", "bytes_ratio_max", ".2f"),
    ("replyB50", "x", "bytes_reply_ratio_p50", ".2f"),
    ("frames", "/reply", "frames_per_reply_p50", ".0f"),
    ("cliCPU", "", "client_cpu_share", ".0%"),
    ("lag99", "ms", "loop_lag_p99_ms", ".0f"),
    ("win50", "ms", "window_p50_ms", ".0f"),
]
CORRECT = [
    ("holes", "holes", "d"),
    ("dups", "duplicates", "d"),
    ("stuck", "stuck", "d"),
    ("falseOK", "false_complete", "d"),
    ("saved!ok", "saved_not_complete", "d"),
    ("falseInt", "false_interruptions", "d"),
    ("rightEnd", "ended_right", "d"),
    ("errors", "errors", "d"),
    ("reconn", "reconnects", "d"),
    ("tHoles", "transient_holes", "d"),
    ("tDups", "transient_duplicates", "d"),
    ("flicker", "flicker_pages", "d"),
    ("noTarget", "no_target", "d"),
    ("unsupp", "unsupported", "d"),
    ("dropTag", "dropped_tags", "d"),
    ("dbHoles", "saved_with_holes", "d"),
    ("fakeLate", "fake_late_max_ms", ".0f"),
]


def print_tables(results: dict) -> None:
    d = results["direct"]
    print()
    print("=" * 160)
    print(f"Setup: {results['setup']}")
    print(
        f"Direct to the fake (subtracted below): first token p50 {fmt(d['ttft_p50_ms'], '.2f')} ms; per-token delay "
        f"p50 {fmt(d['delay_p50_ms'], '.2f')} ms, p99 {fmt(d['delay_p99_ms'], '.2f')} ms"
    )
    t1 = results.get("ttft_single")
    if t1:
        print(
            f"Added TTFT, one reply at a time ({t1['pages']} trials): p50 {fmt(t1['ttft_added_p50_ms'], '.2f')} ms, "
            f"p99 {fmt(t1['ttft_added_p99_ms'], '.2f')} ms (of which websocket send -> request at the fake p50 "
            f"{fmt(t1['to_upstream_p50_ms'], '.2f')} ms)"
        )
    rows = results["stages"]
    label = lambda r: f"{r['pages']:>4} {r['shape']:<5} {r['tokens_each']:>5}"  # noqa: E731
    print(f"\n{'N':>4} {'shape':<5} {'tok':>5} " + " ".join(f"{h:>8}" for h, _u, _k, _f in MAIN))
    print(f"{'':>16} " + " ".join(f"{u:>8}" for _h, u, _k, _f in MAIN))
    for r in rows:
        print(f"{label(r)} " + " ".join(f"{fmt(r.get(k), f):>8}" for _h, _u, k, f in MAIN))
    print(
        "TTFT+ = websocket send -> first frame showing a token, minus direct; upstr = websocket send -> the request "
        "at the fake;\ndly+ = frame first showing token i - its send time at the fake, minus direct; live99 = dly+ "
        "p99 of tokens sent after the page first showed one;\nwhole99 = websocket send -> frame showing the last "
        "token, minus direct first token + (tokens - 1) / rate (the wait for the whole reply), p99;\n"
        "CPU/1k = server CPU-s per 1,000 tokens shown on pages; "
        "RSS = peak of the server processes' sum; bytes = every frame of the exchange / the reply's final <article>"
        " (pages that ended right; replyB: only frames that name the reply);"
        "\ncliCPU = busiest client process; lag99/win50 = Daphne loop lag p99 and the app's coalescing window "
        "(instrumented Daphne only)."
    )
    print(f"\n{'N':>4} {'shape':<5} {'tok':>5} " + " ".join(f"{h:>8}" for h, _k, _f in CORRECT))
    for r in rows:
        print(f"{label(r)} " + " ".join(f"{fmt(r.get(k), f):>8}" for _h, k, f in CORRECT))
    print(
        "Pages: holes/dups = pages ending with a token missing before a shown one / shown twice; stuck = final "
        "article still streaming; falseOK = 'complete' but text missing;\nsaved!ok = database row not complete; "
        "falseInt = marked interrupted though the fake wrote it all; rightEnd = complete with every token once;\n"
        "tHoles/tDups = pages that showed a hole/duplicate at some moment; flicker = pages where a shown token "
        "vanished; noTarget/unsupp/dropTag = swaps htmx would drop,\nframes the model cannot judge, table tags the "
        "HTML parser drops; dbHoles = saved text missing tokens; fakeLate = the fake's worst lateness (ms)."
    )
    for r in rows:
        if r.get("error_samples") or r.get("model_problems"):
            print(f"  {r['stage']}: errors {r.get('error_samples')} model {r.get('model_problems')}")
        if r.get("redis_restart"):
            print(f"  {r['stage']}: redis restart {json.dumps(r['redis_restart'])}")
        if r["final_statuses"] != {"complete": r["pages"]} or r["saved_statuses"] != {"complete": r["pages"]}:
            print(f"  {r['stage']}: page ends {r['final_statuses']}, saved {r['saved_statuses']}")
        if r.get("app_error_samples"):
            print(f"  {r['stage']}: the pages' error notes: {r['app_error_samples']}")
    if results.get("ceiling"):
        c = results["ceiling"]
        print(
            f"\nCeiling (unpaced, {c['pages']} replies x {c['tokens_each']} tokens): {fmt(c['tokens_per_s'], '.0f')} "
            f"tokens/s shown on pages, CPU/1k {fmt(c['cpu_s_per_1000_tokens'], '.3f')} s, ended right "
            f"{c['ended_right']}/{c['pages']}"
        )
    print("=" * 160)


def targets(results: dict) -> list[dict]:
    out = []
    single = results["setup_info"]["server_processes_configured"] == 1

    def add(name, stage, value, limit, unit=""):
        met = value is not None and value <= limit
        out.append({"target": name, "stage": stage, "value": value, "limit": limit, "met": met, "unit": unit})

    t1 = results.get("ttft_single")
    if t1:
        add("added TTFT p50, one reply", "ttft trials", t1["ttft_added_p50_ms"], 5, "ms")
    for r in results["stages"]:
        s = r["stage"]
        if r["pages"] >= 200:
            for key, title in (
                ("holes", "holes"),
                ("duplicates", "duplicates"),
                ("stuck", "stuck pages"),
                ("false_complete", "false complete"),
                ("saved_not_complete", "saved other than complete"),
                ("false_interruptions", "false interruptions"),
            ):
                add(title, s, r[key], 0, "pages")
        add("CPU-s per 1,000 tokens", s, r["cpu_s_per_1000_tokens"], 0.15, "s")
        if r["pages"] == 200 and single:
            add("200 live on one process: added per-token delay p99", s, r["delay_added_p99_ms"], 500, "ms")
        if r["pages"] == 200:
            add("added TTFT p99, 200 at once", s, r["ttft_added_p99_ms"], 1000, "ms")
        if r["pages"] == 1:
            add("added TTFT p50, one reply", s, r["ttft_added_p50_ms"], 5, "ms")
            add("added per-token delay p50, N=1", s, r["delay_added_p50_ms"], 60, "ms")
        add("bytes to the browser / final HTML (worst page)", s, r["bytes_ratio_max"], 3, "x")
        if r.get("redis_restart"):
            rr = r["redis_restart"]
            add("after the redis restart: new chats that failed", s, rr["probes"] - rr["probes_ended_right"], 0)
    return out


def print_targets(rows: list[dict]) -> None:
    print("\nTargets")
    for row in rows:
        value = row["value"]
        shown = "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))
        if value is None:
            verdict = "missed (no figure)"
        elif row["met"]:
            verdict = "target met"
        else:
            verdict = f"target MISSED by {value - row['limit']:.3g}{(' ' + row['unit']) if row['unit'] else ''}"
        print(f"  {row['target']:<52} {row['stage']:<22} {shown:>10} (limit {row['limit']} {row['unit']})  {verdict}")
    met = sum(1 for r in rows if r["met"])
    print(f"  {met} of {len(rows)} met")


# --- py-spy and cProfile summaries ---------------------------------------------------------------


# A sampled leaf frame whose source line is one of these is waiting, not working (py-spy's own idle
# detection misses time.sleep, queue waits and the selector in this VM).
WAITING = re.compile(r"(?:time\.sleep|\.wait|\.select|\.poll|work_queue\.get|\.acquire|\.recv)\(")
_FRAME = re.compile(r"^(.*) \((.*):(\d+)\)$")


def waiting_frame(frame: str) -> bool:
    import linecache

    match = _FRAME.match(frame)
    return bool(match) and bool(WAITING.search(linecache.getline(match.group(2), int(match.group(3)))))


def print_py_spy(path: str, limit: int = 25) -> None:
    """Summarise py-spy's raw (collapsed) stacks of one process: where its CPU went, by thread, self and inclusive.

    Samples whose innermost frame waits (WAITING) are left out, so the rest approximates CPU:
    samples / 200 = CPU-seconds.
    """
    from collections import Counter

    threads, leaf, inclusive, idle = Counter(), Counter(), Counter(), Counter()
    total = 0
    if not Path(path).exists():
        print(f"(no py-spy output at {path})")
        return
    waits: dict[str, bool] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        count = int(count)
        frames = stack.split(";")
        thread = re.sub(r"\(\d+\)", "", frames[0])
        if len(frames) > 1:
            if frames[-1] not in waits:
                waits[frames[-1]] = waiting_frame(frames[-1])
            if waits[frames[-1]]:
                idle[thread] += count
                continue
        threads[thread] += count
        total += count
        names = [
            re.sub(r" \((?:/work/main/)?(?:\.venv/lib/python3\.\d+/site-packages/)?(.*?)\)$", r" (\1)", f)
            for f in frames[1:]
        ]
        if names:
            leaf[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
    if not total:
        print(f"(py-spy recorded nothing busy in {path})")
        return
    print(
        f"\n--- py-spy {Path(path).name}: {total} busy samples at 200 Hz = {total / 200:.1f} CPU-s "
        f"({sum(idle.values())} waiting samples left out) ---"
    )
    for thread, count in threads.most_common(6):
        print(f"{count:>7} {count / total:6.1%}  {thread}")
    print("self time:")
    for name, count in leaf.most_common(limit):
        print(f"{count:>7} {count / total:6.1%}  {name}")
    print("inclusive time:")
    for name, count in inclusive.most_common(limit * 2):
        print(f"{count:>7} {count / total:6.1%}  {name}")


def print_profile(path: str, limit: int = 30) -> None:
    import io
    import pstats

    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(path, stream=out).sort_stats(key).print_stats(limit)
        text = out.getvalue()
        print(f"\n--- cProfile of Daphne's event-loop thread, by {key} ---")
        print(text[text.find("   ncalls") :])


# --- main ---------------------------------------------------------------------------------------------


def runchat_has_workers(env: dict) -> bool:
    out = subprocess.run(
        [PYTHON, "manage.py", "runchat", "--help"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    return "--workers" in out.stdout


def bench(ctx: Context) -> dict:
    args = ctx.args
    results: dict = {"stages": []}
    quick = args.quick
    shape_list = [s for s in args.shapes.split(",") if s]
    ns = [int(x) for x in args.ns.split(",") if x]
    rate = args.rate
    direct_n = args.tokens or (60 if quick else 300)
    ctx.direct = asyncio.run(direct_baseline(ctx.fake, args.framing, 5 if quick else 30, direct_n, rate))
    results["direct"] = {k: v for k, v in ctx.direct.items() if k.endswith("_ms")}
    print(
        f"direct to the fake ({args.framing}): first token p50 {fmt(results['direct']['ttft_p50_ms'], '.2f')} ms; "
        f"per-token delay p50 {fmt(results['direct']['delay_p50_ms'], '.2f')} ms",
        flush=True,
    )
    # Warm-up (templates, the httpx client, Pygments, markdown): not measured.
    for shape in shape_list if not quick else [s for s in shape_list if s == "code"][:1] or shape_list[:1]:
        run_stage(ctx, f"warm-up-{shape}", 2, shape, 40, rate)
    if args.ttft_trials:
        stage = run_stage(ctx, "ttft", args.ttft_trials, "para", 5, rate, spacing=0.5)
        results["ttft_single"] = stage
        print(
            f"added TTFT, one reply at a time x {stage['pages']}: p50 {fmt(stage['ttft_added_p50_ms'], '.2f')} ms, "
            f"p99 {fmt(stage['ttft_added_p99_ms'], '.2f')} ms; ended right {stage['ended_right']}/{stage['pages']}",
            flush=True,
        )
    for n in ns:
        for shape in shape_list:
            tokens = args.tokens or (60 if quick else shapes.default_tokens(shape))
            name = f"N={n} {shape}"
            stage = run_stage(
                ctx,
                name,
                n,
                shape,
                tokens,
                rate,
                profile=stage_matches(args.profile_stage, n, shape),
                py_spy=stage_matches(args.py_spy_stage, n, shape),
                restart=args.redis_restart,
            )
            results["stages"].append(stage)
            progress(stage)
            if stage.get("profile"):
                print_profile(stage["profile"])
            for path in stage.get("py_spy", []):
                print_py_spy(path)
            time.sleep(0.2 if quick else 1.0)
    if args.ceiling:
        stage = run_stage(ctx, "ceiling", 10 if quick else 50, "para", 500 if quick else 2000, 0.0)
        results["ceiling"] = stage
        progress(stage)
    return results


def progress(x: dict) -> None:
    print(
        f"{x['stage']:>14}: TTFT+ p50 {fmt(x['ttft_added_p50_ms'])} p99 {fmt(x['ttft_added_p99_ms'])} ms | dly+ p50 "
        f"{fmt(x['delay_added_p50_ms'])} p99 {fmt(x['delay_added_p99_ms'])} ms | {fmt(x['tokens_per_s'], '.0f')} tok/s"
        f" | CPU/1k {fmt(x['cpu_s_per_1000_tokens'], '.3f')} s | bytes x{fmt(x['bytes_ratio_max'], '.2f')} | right "
        f"{x['ended_right']}/{x['pages']} holes {x['holes']} dups {x['duplicates']} stuck {x['stuck']} falseOK "
        f"{x['false_complete']} saved!ok {x['saved_not_complete']} falseInt {x['false_interruptions']} | client CPU "
        f"{fmt(x['client_cpu_share'], '.0%')}",
        flush=True,
    )
    if x["client_cpu_share"] and x["client_cpu_share"] > 0.7:
        print("  the client process was busy >70% of the stage: its figures may be its own; try --client-procs 2")
    if x.get("fake_late_max_ms") and x["fake_late_max_ms"] > 20:
        late = x["fake_late_max_ms"]
        print(f"  the fake wrote up to {late:.0f} ms behind its schedule (that lateness counts as the app's)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ns", default="")
    parser.add_argument("--shapes", default=",".join(shapes.SHAPES))
    parser.add_argument("--tokens", type=int, default=0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--framing", choices=("chunked", "close"), default="chunked")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--spread", type=float, default=0.02)
    parser.add_argument("--ttft-trials", type=int, default=None)
    parser.add_argument("--ceiling", action="store_true")
    parser.add_argument("--redis", action="store_true")
    parser.add_argument("--redis-restart", type=float, default=None)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--ports-per-worker", action="store_true")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--profile-stage", default=None)
    parser.add_argument("--py-spy-stage", default=None)
    parser.add_argument("--experiment", default="")
    parser.add_argument("--json", default="")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    args.ns = args.ns or ("1,10" if args.quick else "1,10,50,200,500")
    if args.ttft_trials is None:
        args.ttft_trials = 5 if args.quick else 20
    for shape in args.shapes.split(","):
        if shape not in shapes.SHAPES:
            parser.error(f"unknown shape {shape!r} (known: {', '.join(shapes.SHAPES)})")
    if args.redis_restart is not None and not args.redis:
        parser.error("--redis-restart needs --redis")
    if args.ports_per_worker and args.workers < 1:
        parser.error("--ports-per-worker needs --workers N")
    if args.workers > 1 and not args.redis:
        parser.error("several server processes share streams only through Redis: add --redis")
    if max(int(x) for x in args.ns.split(",")) > 2000 or args.client_procs > 8 or args.workers > 16:
        parser.error("bounded: N <= 2000, --client-procs <= 8, --workers <= 16")

    def interrupted(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="streambench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "CSRF_TRUSTED_ORIGINS")}
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
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
    fake = redis = servers = database = None
    try:
        database = Database(tmp, args.database_url)
        env["DATABASE_URL"] = database.url
        mode = "daphne"
        if args.workers:
            if args.ports_per_worker:
                mode = "ports"
            elif runchat_has_workers(env):
                mode = "runchat"
            elif args.workers == 1:
                print("manage.py runchat has no --workers yet: running Daphne directly (one process)", flush=True)
            else:
                parser.error("manage.py runchat has no --workers yet: use --ports-per-worker for N Daphne processes")
        for item in filter(None, args.experiment.split(",")):
            name, _, value = item.partition("=")
            if name == "switch" and mode != "runchat":
                env["BENCH_SWITCH_INTERVAL"] = value
            elif name == "conn_max_age" and not database.pg:
                env["BENCH_CONN_MAX_AGE"] = value
                env["DJANGO_SETTINGS_MODULE"] = "bench.settings_experiment"
            else:
                parser.error(f"experiment {item!r} is unknown or does not apply to this setup")
        if args.experiment:
            print(f"WHAT-IF EXPERIMENT (not the app's configuration): {args.experiment}", flush=True)
        fake = Fake(tmp, args.framing)
        env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{fake.port}/v1"
        if args.redis:
            redis = Redis(tmp)
            env["REDIS_URL"] = redis.url
        subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, env=env, check=True)
        setup_django(env)
        ns = [int(x) for x in args.ns.split(",")]
        shape_count = len(args.shapes.split(","))
        workers = args.workers or 1
        needed = 2 * shape_count + args.ttft_trials + sum(ns) * shape_count + (50 if args.ceiling else 0) + 5
        if args.redis_restart is not None:
            needed += len(ns) * shape_count * workers
        seats = create_seats(users=args.users, conversations=needed)
        skeleton, skeleton_from = page_skeleton(seats[-1])
        servers = Servers(tmp, env, mode, workers)
        setup = (
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start; server: "
            + {"daphne": "one instrumented Daphne", "ports": f"{workers} instrumented Daphne on {workers} ports"}.get(
                mode, f"manage.py runchat --workers {workers}"
            )
            + f"; channel layer: {'Redis (private redis-server)' if redis else 'in-memory'}; database: "
            + ("PostgreSQL" if database.pg else "SQLite")
            + f"; fake framing: {args.framing}; {args.rate:g} tokens/s; pages start from {skeleton_from}"
        )
        print(f"setup: {setup}; temporary directory {tmp}", flush=True)
        ctx = Context(args, tmp, fake, servers, redis, seats, skeleton)
        results = bench(ctx)
        results["setup"] = setup
        results["setup_info"] = {
            "mode": mode,
            "server_processes_configured": workers,
            "redis": bool(redis),
            "database": "postgresql" if database.pg else "sqlite",
            "framing": args.framing,
            "load_at_end": os.getloadavg()[0],
            "argv": sys.argv[1:],
        }
        log_text = "".join(p.log.read_text(errors="replace") for p in servers.procs)
        results["server_log_tracebacks"] = log_text.count("Traceback")
        results["elapsed_s"] = time.monotonic() - started
        results["targets"] = targets(results)
        print_tables(results)
        print_targets(results["targets"])
        print(
            f"Server logs: {results['server_log_tracebacks']} tracebacks. Load average at the end "
            f"{os.getloadavg()[0]:.2f}. Total run {results['elapsed_s']:.0f} s."
        )
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything the bench started", flush=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if servers is not None:
            servers.stop()
        if redis is not None:
            redis.kill()
        if fake is not None:
            fake.proc.stop()
        if database is not None and not args.keep:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            database.drop()
        if args.keep:
            print(f"kept {tmp}" + (f" and database {database.name}" if database and database.pg else ""))
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    main()
