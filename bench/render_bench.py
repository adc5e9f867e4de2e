"""Bytes sent to the browser while a reply streams, against the reply's final HTML (issue 5: <= 2x).

    .venv/bin/python bench/render_bench.py                  # both measures, 50 tokens/s
    .venv/bin/python bench/render_bench.py --rate 20 --mode frames

Four realistic replies (prose, code, lists, a table) are split into word-sized tokens, as a
model streams them, and measured two ways:

- frames: exactly the code the generation runs per delta (conversations/rendering.StreamRenderer:
  its throttle and its frames), on a simulated clock at --rate tokens per second, checked by
  replaying the frames as htmx swaps them (tests/frames.py). Prints the bytes of those frames
  against the reply's final HTML (the text element's content).
- live: the real path in this process: the fake provider (tests/fake_provider.py, real HTTP on
  loopback) streams the tokens at --rate, a real Generation renders, the real ChatConsumer sends,
  read through a WebsocketCommunicator around the app's ASGI stack, on a temporary SQLite
  database. Prints every frame of the exchange, split into the reply's text frames, the finished
  reply's frame and the rest (the user's message, title, sidebar, composer), against the final
  <article> a reloaded page shows and against the text's HTML.

Bytes are payload plus the websocket frame header (2-4 bytes), uncompressed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

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


# -- frames: the generation's own frame-building code, on a simulated clock ---------------------


def measure_frames(text: str, rate: float) -> dict:
    from conversations.rendering import StreamRenderer, render_html
    from tests.frames import Page

    renderer = StreamRenderer("msg-1-text")
    page = Page()
    page.apply('<div id="msg-1-text" class="msg-text markdown"></div>')
    frames: list[str] = []
    arrivals = [(index + 1) / rate for index in range(len(tokens(text)))]
    pieces = tokens(text)
    received, now, step = 0, 0.0, 0.001
    cpu, updates = 0.0, 0
    flushed_to = 0
    while flushed_to < len(pieces):
        while received < len(pieces) and arrivals[received] <= now:
            received += 1
        pending = sum(len(p) for p in pieces[flushed_to:received])
        if pending and renderer.delay(pending, now) <= 0:
            started = time.perf_counter()
            out = renderer.update("".join(pieces[:received]))
            cpu += time.perf_counter() - started
            updates += 1
            renderer.sent_at = now
            frames += out
            flushed_to = received
        now += step
    started = time.perf_counter()
    frames += renderer.update(text, final=True)
    cpu += time.perf_counter() - started
    updates += 1
    for frame in frames:
        page.apply(frame)
    final = render_html(text)
    assert page.text_html(1) == final, "the frames did not rebuild the final HTML"
    sent = sum(ws_bytes(frame) for frame in frames)
    return {
        "tokens": len(pieces),
        "frames": len(frames),
        "sent": sent,
        "final": len(final.encode()),
        "ms_per_update": cpu * 1000 / updates,
        "updates": updates,
    }


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
    parser.add_argument("--mode", choices=("frames", "live", "both"), default="both")
    args = parser.parse_args()
    from conversations import rendering

    with tempfile.TemporaryDirectory(prefix="render-bench-") as tmp:
        setup_django(Path(tmp))
        every, most = rendering.MIN_INTERVAL_SECONDS * 1000, rendering.MAX_INTERVAL_SECONDS * 1000
        print(
            f"Streaming at {args.rate:g} tokens/s; frames at most every {every:.0f} ms, "
            f"then once {rendering.MIN_CHARS} characters or {most:.0f} ms have passed."
        )
        if args.mode in ("frames", "both"):
            print("\nframes: the generation's frame-building code (bytes of the reply's text frames / its final HTML;")
            print("ms/update: CPU of one render and diff in the generation, the final one included)")
            measure_frames("```python\nx = 1\n```\n", args.rate)  # load the lexer outside the timings
            print(f"{'reply':<8}{'tokens':>8}{'frames':>8}{'sent B':>9}{'final B':>9}{'ratio':>7}{'ms/update':>11}")
            for name, text in REPLIES.items():
                r = measure_frames(text, args.rate)
                ratio = r["sent"] / r["final"]
                print(
                    f"{name:<8}{r['tokens']:>8}{r['frames']:>8}{r['sent']:>9}{r['final']:>9}{ratio:>7.2f}"
                    f"{r['ms_per_update']:>11.2f}"
                )
        if args.mode in ("live", "both"):
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
