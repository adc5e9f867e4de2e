"""Rendering while a reply streams: CPU, frames and bytes (issue 5: bytes; issue 11: cost linear in length).

    .venv/bin/python bench/render_bench.py                          # everything, 50 tokens/s
    .venv/bin/python bench/render_bench.py --mode shapes --scales 1,2,4
    .venv/bin/python bench/render_bench.py --mode shapes --baseline /tmp/rendering_baseline.py
    .venv/bin/python bench/render_bench.py --mode frames --rate 20
    .venv/bin/python bench/render_bench.py --mode shapes --profile /tmp/render.prof

Replies are split into word-sized tokens, as a model streams them, and measured three ways:

- frames: four realistic replies (prose, code, lists, a table) through exactly the code the
  generation runs per delta (conversations/rendering.StreamRenderer: its throttle and its frames),
  on a simulated clock at --rate tokens per second, checked by replaying the frames as htmx swaps
  them (tests/frames.py). Prints the bytes of those frames against the reply's final HTML.
- shapes (issue 11): four shapes whose cost used to grow with their length: one long paragraph
  (5,000 characters at 1x), a long fenced Python block (300 lines), a table (200 rows) and many
  short paragraphs (20), at 1x, 2x and 4x their length. Paced (the simulated clock at --rate):
  CPU seconds of the renderer per 1,000 tokens, updates per second, frames and bytes against the
  final HTML, and the delay each token waits for its frame (p50/p90: arrival until the update that
  shows it, plus that update's CPU time: text held back, like a table row until its line is
  complete, waits longer). Unpaced (an update after every token, no throttle): CPU
  seconds per 1,000 tokens over the whole reply and over its last quarter (flat when the cost per
  update does not grow with the reply). --baseline PATH loads another rendering.py (a copy of an
  older version) instead of the project's, to compare.
- live: the real path in this process: the fake provider (tests/fake_provider.py, real HTTP on
  loopback) streams the tokens at --rate, a real Generation renders, the real ChatConsumer sends,
  read through a WebsocketCommunicator around the app's ASGI stack, on a temporary SQLite
  database. Prints every frame of the exchange, split into the reply's text frames, the finished
  reply's frame and the rest (the user's message, title, sidebar, composer), against the final
  <article> a reloaded page shows and against the text's HTML. (Always the project's renderer.)

Bytes are payload plus the websocket frame header (2-4 bytes), uncompressed. CPU is process CPU
time (time.process_time) spent in StreamRenderer.update.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
sys.path.insert(1, str(BASE_DIR / "bench"))

REPLIES = {
    "prose": """Good question. The short answer is that **caching helps most when reads dominate writes**, and \
when the data can be a little stale without anyone noticing.

A cache sits between your application and a slower store. The first request for an item misses \
and goes to the database; the result is kept, so the next request is served from memory. The \
hard part is not storing things, it is deciding when they stop being true. There are three common \
strategies:

Time-based expiry is the simplest. Every entry lives for a fixed time, say five minutes, and then \
it is fetched again. It is easy to reason about, but users may see old data for up to that long.

Explicit invalidation removes an entry whenever the underlying row changes. It keeps data fresh, \
but every code path that writes must remember to do it, and a missed path means a stale cache \
that never heals on its own.

Write-through caching updates the cache and the database together. Reads are always fresh, at \
the cost of slower writes and more moving parts.

For a typical web app I would start with time-based expiry on the few queries that show up in \
your profiler, measure again, and only then reach for something more clever. Caching the wrong \
thing adds complexity without making anything faster.
""",
    "code": """Here is a small function that reads a CSV file and returns the total per category, \
skipping rows it cannot parse:

```python
import csv
from collections import defaultdict
from decimal import Decimal, InvalidOperation


def totals_by_category(path: str) -> dict[str, Decimal]:
    \"\"\"Sum the `amount` column per `category`, ignoring malformed rows.\"\"\"
    totals: dict[str, Decimal] = defaultdict(Decimal)
    with open(path, newline="", encoding="utf-8") as handle:
        for line_number, row in enumerate(csv.DictReader(handle), start=2):
            try:
                amount = Decimal(row["amount"])
            except (KeyError, InvalidOperation):
                print(f"line {line_number}: skipped {row!r}")
                continue
            totals[row.get("category") or "uncategorised"] += amount
    return dict(totals)


if __name__ == "__main__":
    for category, total in sorted(totals_by_category("expenses.csv").items()):
        print(f"{category:<20} {total:>10.2f}")
```

It uses `Decimal` rather than `float`, so totals like `0.10 + 0.20` come out exact. Run it with \
`python totals.py` next to your `expenses.csv`.
""",
    "lists": """To set up the project on a new machine:

1. **Install the tools.** You need Python 3.11 and Node 20:
   - on macOS: `brew install python@3.11 node@20`
   - on Debian or Ubuntu: `sudo apt install python3.11 python3.11-venv nodejs`
2. **Clone and create a virtual environment:**
   - `git clone https://example.com/team/app.git`
   - `cd app && python3.11 -m venv .venv`
3. **Install the dependencies** with `.venv/bin/pip install -r requirements.txt`, then \
`npm ci` for the front end.
4. **Configure it.** Copy `.env.example` to `.env` and fill in:
   - `DATABASE_URL`, for example `postgres://app@localhost/app`
   - `SECRET_KEY`, any long random string
   - `DEBUG=True` while you develop
5. **Run the migrations and start it:** `.venv/bin/python manage.py migrate`, then \
`.venv/bin/python manage.py runserver`.

Things that often go wrong:

- The database is not running, so `migrate` fails with *connection refused*.
- An old `.venv` from another Python version: delete it and create it again.
- A port is taken: pass another one, like `runserver 8001`.

Once the server is up, open http://127.0.0.1:8000 and sign in with the user you create with \
`createsuperuser`.
""",
    "table": """Here is how the three plans compare:

| Plan | Price per month | Users | Storage | Support | Single sign-on |
|:-----|----------------:|------:|--------:|:--------|:--------------:|
| Free | $0 | 1 | 2 GB | Community forum | No |
| Team | $12 per user | up to 50 | 100 GB | Email, next business day | No |
| Business | $25 per user | up to 500 | 1 TB | Email and chat, 4 hours | Yes |
| Enterprise | Custom | Unlimited | Custom | Dedicated manager, 1 hour | Yes |

A few notes:

- Prices are for yearly billing; monthly billing costs about 20% more.
- Storage is pooled across the whole organisation, not per user.
- **Single sign-on** needs the Business plan or higher.

For a team of eight people who mostly share documents, **Team** is the best fit: about $96 a \
month, with plenty of storage.
""",
}


def tokens(text: str) -> list[str]:
    """Word-sized pieces, like a BPE model's: a leading space stays with its word; long words split."""
    out = []
    for piece in re.findall(r"\n|[ \t]*[A-Za-z]+|[ \t]*\d+|[ \t]*[^\sA-Za-z\d]|[ \t]+", text):
        while len(piece) > 7:
            out.append(piece[:6])
            piece = piece[6:]
        out.append(piece)
    assert "".join(out) == text
    return out


def ws_bytes(payload: str) -> int:
    size = len(payload.encode())
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


def load_renderer(path: str | None) -> ModuleType:
    """The project's conversations.rendering, or another copy of it (--baseline)."""
    if not path:
        from conversations import rendering

        return rendering
    spec = importlib.util.spec_from_file_location("baseline_rendering", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# -- shapes whose cost used to grow with their length (issue 11) ---------------------------------

_VOCABULARY = (
    "the a of to and in that is for it as with was on be at by this had not are but from or have an they which "
    "one you were her all she there would their we him been has when who will more no if out so said what up its "
    "about into than them can only other new some could time these two may then do first any my now such like our "
    "over man me even most made after also did many before must through back years where much your way well down "
    "should because each just those people how too little state good very make world still own see men work long "
    "get here between both life being under never day same another know while last might us great old year off "
    "come since against go came right used take three cache request server latency thread buffer parser renderer "
    "stream token browser response memory process window update paragraph highlight"
)
WORDS = _VOCABULARY.split()


def prose(rnd: random.Random, chars: int, markup: bool = True) -> str:
    """Realistic words in sentences, now and then some inline markup, about `chars` long, one line."""
    out: list[str] = []
    size, sentence = 0, 0
    while size < chars:
        word = rnd.choice(WORDS)
        if sentence == 0:
            word = word.capitalize()
        if markup and rnd.random() < 0.03:
            word = rnd.choice(
                [
                    f"**{word} {rnd.choice(WORDS)}**",
                    f"`{word}_{rnd.randint(1, 99)}()`",
                    f"[{word}](https://example.com/{word}/{rnd.randint(1, 999)})",
                    f"*{word}*",
                ]
            )
        sentence += 1
        if sentence > rnd.randint(8, 20):
            word += rnd.choice([".", ".", ".", "?", "!"])
            sentence = 0
        elif rnd.random() < 0.08:
            word += ","
        out.append(word)
        size += len(word) + 1
    text = " ".join(out)
    return text if text.endswith((".", "?", "!")) else text + "."


def shape_paragraph(scale: int) -> str:
    rnd = random.Random(11)
    return prose(rnd, 5000 * scale) + "\n"


def shape_code(scale: int) -> str:
    rnd = random.Random(12)
    lines = ["Here is the module:", "", "```python"]
    index = 0
    while len(lines) - 3 < 300 * scale:
        index += 1
        name, factor = rnd.choice(WORDS), rnd.randint(2, 9)
        lines += [
            f"def {name}_{index}(values: list[int], factor: float = {factor}.5) -> float:",
            f'    """Sum the values, scaled by {factor} for the multiples of {factor}."""',
            "    total = 0.0",
            "    for index, value in enumerate(values):",
            f"        if value % {factor} == 0:",
            f"            total += value * factor  # the {rnd.choice(WORDS)} ones count more",
            "        else:",
            f"            total -= index / {factor}",
            f'    return round(total, 2) if total else float("{rnd.choice(["nan", "inf"])}")',
            "",
        ]
    lines = lines[: 3 + 300 * scale]
    return "\n".join(lines) + "\n```\n\nThat is all.\n"


def shape_table(scale: int) -> str:
    rnd = random.Random(13)
    rows = [
        "Here are the figures:",
        "",
        "| Name | Count | Price | Notes | Status |",
        "|:-----|------:|------:|:------|:------:|",
    ]
    for index in range(200 * scale):
        note = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(2, 6)))
        status = rnd.choice(["ok", "late", "**open**", "`n/a`"])
        price = f"${rnd.randint(1, 999)}.{rnd.randint(0, 99):02d}"
        rows.append(f"| item {index} | {rnd.randint(1, 9999)} | {price} | {note} | {status} |")
    return "\n".join(rows) + "\n\nThat is the table.\n"


def shape_paragraphs(scale: int) -> str:
    rnd = random.Random(14)
    return "".join(prose(rnd, rnd.randint(150, 350)) + "\n\n" for _ in range(20 * scale))


SHAPES = {
    "paragraph": shape_paragraph,
    "code": shape_code,
    "table": shape_table,
    "paragraphs": shape_paragraphs,
}


# -- frames: the generation's own frame-building code, on a simulated clock ---------------------


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))] if values else math.nan


def measure_frames(text: str, rate: float, module: ModuleType | None = None, pieces: list[str] | None = None) -> dict:
    """Stream `text` at `rate` tokens/s on a simulated clock, as Reply's flusher does (renderer.delay)."""
    from tests.frames import Page

    rendering = module or load_renderer(None)
    renderer = rendering.StreamRenderer("msg-1-text")
    pieces = pieces or tokens(text)
    ends = [0]
    for piece in pieces:
        ends.append(ends[-1] + len(piece))
    arrivals = [(index + 1) / rate for index in range(len(pieces))]
    frames: list[str] = []
    delays: list[float] = []
    received, flushed, visible, now = 0, 0, 0, arrivals[0]
    cpu, updates = 0.0, 0
    while flushed < len(pieces):
        while received < len(pieces) and arrivals[received] <= now + 1e-9:
            received += 1
        pending = ends[received] - ends[flushed]
        wait = renderer.delay(pending, now) if pending else math.inf
        if pending and wait <= 0:
            started = time.process_time()
            frames += renderer.update(text[: ends[received]])
            spent = time.process_time() - started
            cpu += spent
            updates += 1
            renderer.sent_at = now
            flushed = received
            while visible < len(pieces) and ends[visible + 1] <= len(renderer.text):  # the page shows it
                delays.append(now + spent - arrivals[visible])
                visible += 1
            continue
        following = arrivals[received] if received < len(pieces) else math.inf
        now = min(now + max(wait, 1e-6), following)  # (not now + 1e-17 == now)
    started = time.process_time()
    frames += renderer.update(text, final=True)
    spent = time.process_time() - started
    cpu += spent
    updates += 1
    delays += [now + spent - arrivals[index] for index in range(visible, len(pieces))]
    page = Page()
    page.apply('<div id="msg-1-text" class="msg-text markdown"></div>')
    for frame in frames:
        page.apply(frame)
    final = rendering.render_html(text)
    assert page.text_html(1) == final, "the frames did not rebuild the final HTML"
    return {
        "tokens": len(pieces),
        "frames": len(frames),
        "sent": sum(ws_bytes(frame) for frame in frames),
        "final": len(final.encode()),
        "ms_per_update": cpu * 1000 / updates,
        "cpu_per_1k": cpu * 1000 / len(pieces),
        "updates": updates,
        "updates_per_s": updates / arrivals[-1],
        "delay_p50": pct(delays, 0.5) * 1000,
        "delay_p90": pct(delays, 0.9) * 1000,
    }


def measure_unpaced(text: str, module: ModuleType, budget: float, pieces: list[str] | None = None) -> dict:
    """An update after every token (no throttle): CPU per 1,000 tokens, whole and last quarter."""
    renderer = module.StreamRenderer("msg-1-text")
    pieces = pieces or tokens(text)
    quarter = len(pieces) * 3 // 4
    so_far, cpu, late, done = "", 0.0, 0.0, 0
    for index, piece in enumerate(pieces):
        so_far += piece
        started = time.process_time()
        renderer.update(so_far)
        spent = time.process_time() - started
        cpu += spent
        late += spent if index >= quarter else 0.0
        done += 1
        if cpu > budget:
            break
    if done == len(pieces):
        started = time.process_time()
        renderer.update(text, final=True)
        cpu += time.process_time() - started
    return {
        "tokens": len(pieces),
        "done": done,
        "cpu_per_1k": cpu * 1000 / done,
        "late_per_1k": late * 1000 / max(1, done - quarter) if done > quarter else math.nan,
    }


def run_shapes(module: ModuleType, names: list[str], scales: list[int], rate: float, budget: float) -> None:
    print(
        f"\nshapes at {rate:g} tokens/s (paced) and with an update per token (unpaced); CPU = renderer CPU s per "
        "1,000 tokens; sent/final = bytes of all frames / the final HTML; delay = token arrival until the page shows it"
    )
    print(
        f"{'shape':<11}{'x':>2}{'tokens':>7}{'final B':>9}{'frames':>7}{'sent B':>9}{'sent/fin':>9}{'upd/s':>7}"
        f"{'CPU':>7}{'dly p50':>8}{'dly p90':>8}{'| unpaced CPU':>13}{'last 1/4':>9}"
    )
    for name in names:
        for scale in scales:
            if name.startswith("w-"):  # bench/shapes.py: what bench/stream_bench.py streams (w0 w1 w2 ...)
                shapes = importlib.import_module("shapes")
                pieces = list(shapes.pieces(name[2:], shapes.default_tokens(name[2:]) * scale))
                text = "".join(pieces)
            else:
                text, pieces = SHAPES[name](scale), None
            paced = measure_frames(text, rate, module, pieces)
            free = measure_unpaced(text, module, budget, pieces)
            partial = "" if free["done"] == free["tokens"] else f"  (stopped after {free['done']} tokens)"
            print(
                f"{name:<11}{scale:>2}{paced['tokens']:>7}{paced['final']:>9}{paced['frames']:>7}{paced['sent']:>9}"
                f"{paced['sent'] / paced['final']:>9.2f}{paced['updates_per_s']:>7.1f}{paced['cpu_per_1k']:>7.3f}"
                f"{paced['delay_p50']:>8.0f}{paced['delay_p90']:>8.0f}{free['cpu_per_1k']:>13.3f}"
                f"{free['late_per_1k']:>9.3f}{partial}",
                flush=True,
            )


# -- live: the real consumer and generation, through the ASGI stack ------------------------------


async def measure_live(replies: dict[str, str], rate: float) -> dict[str, dict]:
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.template.loader import render_to_string
    from django.test import Client

    from chatsite.asgi import application
    from conversations.models import Conversation, Message, Provider
    from conversations.rendering import render_html
    from tests.fake_provider import FakeProvider, Stream, text_stream
    from tests.frames import finished, replay

    fake = FakeProvider().start()
    results = {}
    try:

        def setup():
            user = get_user_model().objects.create_user("bench-render", password="bench-password-123")
            provider = Provider.objects.create(name="Fake", base_url=fake.base_url, is_default=True)
            client = Client()
            client.force_login(user)
            return user, provider, client.session.session_key

        user, provider, session_key = await sync_to_async(setup)()
        for name, text in replies.items():
            conversation = await Conversation.objects.acreate(owner=user, provider=provider, model="fake-model")
            fake.push(Stream(text_stream(tokens(text)), delay=1 / rate))
            headers = [
                (b"origin", b"http://testserver"),
                (b"host", b"testserver"),
                (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_key}".encode()),
            ]
            socket = WebsocketCommunicator(application, f"/ws/c/{conversation.code}/", headers=headers)
            connected, _ = await socket.connect(timeout=10)
            assert connected
            await socket.receive_from(timeout=10)  # the composer: the page is ready
            await socket.send_json_to({"message": f"Please answer: {name}"})
            frames: list[str] = []
            while not any('msg-assistant" data-status="complete"' in frame for frame in frames):
                frames.append(await socket.receive_from(timeout=60))
            await asyncio.sleep(0.3)  # what comes right after (a title, usage)
            while not await socket.receive_nothing(timeout=0.2):
                frames.append(await socket.receive_from(timeout=5))
            await socket.disconnect()
            reply = await Message.objects.aget(conversation=conversation, role="assistant")
            assert reply.content == text, "the reply was not saved whole"

            def final_article(reply=reply):
                branch = reply.conversation.branch()
                message = next(m for m in branch if m.pk == reply.pk)
                return render_to_string("conversations/conversation.html#message", {"message": message})

            article = await sync_to_async(final_article)()
            text_html = render_html(text)
            assert replay(frames, reply.pk) == text_html, f"{name}: the page did not end with the final HTML"
            marker = f"msg-{reply.pk}-text"
            text_frames = [f for f in frames if marker in f and "<article" not in f]
            done = [f for f in frames if finished(f, reply.pk)]
            if os.environ.get("RENDER_BENCH_DUMP"):
                print("\n---\n".join(frames))
            total = sum(ws_bytes(f) for f in frames)
            results[name] = {
                "frames": len(frames),
                "text_frames": len(text_frames),
                "total": total,
                "text_sent": sum(ws_bytes(f) for f in text_frames),
                "finished": sum(ws_bytes(f) for f in done),
                "other": total - sum(ws_bytes(f) for f in text_frames) - sum(ws_bytes(f) for f in done),
                "article": len(article.strip().encode()),
                "text_html": len(text_html.encode()),
            }
    finally:
        fake.stop()
    return results


def setup_django(tmp: Path):
    os.environ.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}",
        DEBUG="False",
        SECRET_KEY="render-bench-" + "x" * 40,
        SECURE_SSL_REDIRECT="False",
        SESSION_COOKIE_SECURE="False",
        CSRF_COOKIE_SECURE="False",
        ALLOWED_HOSTS="testserver,127.0.0.1",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",  # never used: the bench makes its own provider
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="tokens per second (default 50)")
    parser.add_argument("--mode", choices=("frames", "shapes", "live", "all"), default="all")
    parser.add_argument("--baseline", metavar="PATH", help="load this rendering.py instead (frames and shapes)")
    parser.add_argument(
        "--shapes",
        default=",".join(SHAPES),
        help=f"shapes to measure (default: {','.join(SHAPES)}); also w-para, w-code, w-table, w-short: the "
        "index-coded replies of bench/shapes.py that bench/stream_bench.py streams, one chunk a token",
    )
    parser.add_argument("--scales", default="1,2,4", help="lengths, in multiples of the 1x shape (default 1,2,4)")
    parser.add_argument("--budget", type=float, default=60.0, help="CPU seconds at most per unpaced run (default 60)")
    parser.add_argument("--profile", metavar="FILE", help="profile the shapes with cProfile, write the stats there")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="render-bench-") as tmp:
        setup_django(Path(tmp))
        rendering = load_renderer(args.baseline)
        every, most = rendering.MIN_INTERVAL_SECONDS * 1000, rendering.MAX_INTERVAL_SECONDS * 1000
        print(
            f"{'Baseline ' + args.baseline if args.baseline else 'conversations/rendering.py'}: streaming at "
            f"{args.rate:g} tokens/s; frames at most every {every:.0f} ms, then once {rendering.MIN_CHARS} "
            f"characters or {most:.0f} ms have passed."
        )
        measure_frames("```python\nx = 1\n```\n", args.rate, rendering)  # load the lexer outside the timings
        if args.mode in ("frames", "all"):
            print("\nframes: the generation's frame-building code (bytes of the reply's text frames / its final HTML;")
            print("ms/update: CPU of one render and diff in the generation, the final one included)")
            print(f"{'reply':<8}{'tokens':>8}{'frames':>8}{'sent B':>9}{'final B':>9}{'ratio':>7}{'ms/update':>11}")
            for name, text in REPLIES.items():
                r = measure_frames(text, args.rate, rendering)
                ratio = r["sent"] / r["final"]
                print(
                    f"{name:<8}{r['tokens']:>8}{r['frames']:>8}{r['sent']:>9}{r['final']:>9}{ratio:>7.2f}"
                    f"{r['ms_per_update']:>11.2f}"
                )
        if args.mode in ("shapes", "all"):
            names = [name for name in args.shapes.split(",") if name]
            scales = [int(scale) for scale in args.scales.split(",") if scale]
            if args.profile:
                import cProfile
                import pstats

                profiler = cProfile.Profile()
                profiler.runcall(run_shapes, rendering, names, scales, args.rate, args.budget)
                profiler.dump_stats(args.profile)
                stats = pstats.Stats(args.profile)
                stats.sort_stats("tottime").print_stats(25)
                stats.sort_stats("cumulative").print_stats(25)
            else:
                run_shapes(rendering, names, scales, args.rate, args.budget)
        if args.mode in ("live", "all"):
            results = asyncio.run(measure_live(REPLIES, args.rate))
            print("\nlive: the real generation and consumer, every frame of the exchange")
            print(
                f"{'reply':<8}{'frames':>7}{'text B':>8}{'finish B':>9}{'other B':>8}{'total B':>8}"
                f"{'article B':>10}{'text HTML B':>12}{'text/HTML':>10}{'reply/article':>14}{'all/article':>12}"
            )
            for name, r in results.items():
                print(
                    f"{name:<8}{r['frames']:>7}{r['text_sent']:>8}{r['finished']:>9}{r['other']:>8}{r['total']:>8}"
                    f"{r['article']:>10}{r['text_html']:>12}{r['text_sent'] / r['text_html']:>10.2f}"
                    f"{(r['text_sent'] + r['finished']) / r['article']:>14.2f}{r['total'] / r['article']:>12.2f}"
                )
            print(
                "text/HTML: the reply's text frames / its text's final HTML. reply/article: text frames + the "
                "finished reply's frame / the final <article>. all/article: every frame of the exchange (also the "
                "user's message, title, sidebar, composer) / the final <article>."
            )


if __name__ == "__main__":
    main()
