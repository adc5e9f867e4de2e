"""Server time of the pages a long history makes slow: a 2,000-message conversation and a sidebar of
10,000 conversations.

    .venv/bin/python bench/library_bench.py                     # SQLite file in a temporary directory
    .venv/bin/python bench/library_bench.py --repeat 200
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/library_bench .venv/bin/python bench/library_bench.py

The database named by DATABASE_URL (default: a fresh SQLite file in a temporary directory) is
migrated, emptied of the bench's own users, filled with bulk_create, and timed. With PostgreSQL,
use a database of its own: the bench deletes and recreates the users "bench-long" and
"bench-many" and everything they own.

Each figure is the wall time of one request through Django's test client in this process: URL
routing, middleware (sessions, auth, CSRF), the view's queries and the template rendering, without
a network or a web server in front (that part does not depend on the data). Every view is called
a few times first (warm-up: template compilation, the first connection), then `--repeat` times;
the bench prints p50, p95 and max in milliseconds, and the p50 and p95 of the CPU time this
thread spent (cpu50, cpu95: the same work without the waits for a busy CPU; with SQLite it
includes the database, with PostgreSQL it does not).

Data:
- "bench-long" owns one conversation of 2,000 messages on one branch (user and assistant in
  turn; replies are markdown with a paragraph, a list and a code block, about 700 characters),
  plus 30 other conversations.
- "bench-many" owns 10,000 conversations (20 pinned, 500 archived), each titled, with two
  messages each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

REPLY = """Here is how to think about **item {i}**:

- first, measure what you have (`{i}` rows, not more);
- then change one thing at a time;
- finally, write down what you saw.

```python
def step_{i}(rows):
    return [row for row in rows if row.id % {m} == 0]
```

That keeps each step small and easy to check."""


def setup(database_url: str | None):
    tmp = None
    if not database_url:
        tmp = tempfile.mkdtemp(prefix="library-bench-")
        database_url = f"sqlite:///{tmp}/bench.sqlite3"
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    os.environ.setdefault("DEBUG", "False")
    os.environ.setdefault("SECRET_KEY", "library-bench-not-secret")
    os.environ.setdefault("SECURE_SSL_REDIRECT", "False")  # the test client speaks plain http
    os.environ.setdefault("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # never called
    warnings.filterwarnings("ignore", message="No directory at")  # whitenoise: no collectstatic here
    import django

    django.setup()
    from django.conf import settings

    settings.ALLOWED_HOSTS = ["testserver"]
    # No collectstatic here: plain static URLs instead of the manifest (a dict lookup either way).
    settings.STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return database_url


def fill():
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from conversations.models import Conversation, Message, Provider

    User = get_user_model()
    User.objects.filter(username__in=["bench-long", "bench-many"]).delete()
    provider = Provider.objects.default()
    now = timezone.now()

    long_user = User.objects.create_user("bench-long", password="bench-password-123")
    others = Conversation.objects.bulk_create(
        [
            Conversation(owner=long_user, provider=provider, title=f"Other {i}", updated_at=now - timedelta(hours=i))
            for i in range(30)
        ]
    )
    long = Conversation.objects.create(owner=long_user, provider=provider, title="Two thousand messages")
    messages = Message.objects.bulk_create(
        [
            Message(
                conversation=long,
                role="user" if i % 2 == 0 else "assistant",
                content=f"Question {i}: how do I handle step {i}?" if i % 2 == 0 else REPLY.format(i=i, m=i % 7 + 2),
                model="" if i % 2 == 0 else "bench-model",
                prompt_tokens=None if i % 2 == 0 else 100 + i,
                completion_tokens=None if i % 2 == 0 else 180,
                duration_ms=None if i % 2 == 0 else 2400,
            )
            for i in range(2000)
        ],
        batch_size=500,
    )
    parent = None
    for message in messages:
        message.parent_id, parent = parent, message.pk
    Message.objects.bulk_update(messages, ["parent"], batch_size=500)
    Conversation.objects.filter(pk=long.pk).update(active_leaf=messages[-1])

    many_user = User.objects.create_user("bench-many", password="bench-password-123")
    many = Conversation.objects.bulk_create(
        [
            Conversation(
                owner=many_user,
                provider=provider,
                title=f"Conversation number {i} about topic {i % 97}",
                pinned=i % 500 == 0,
                archived=i % 20 == 1,
                updated_at=now - timedelta(minutes=i),
            )
            for i in range(10_000)
        ],
        batch_size=1000,
    )
    Message.objects.bulk_create(
        [
            Message(conversation=c, role=role, content=f"{role} text of {c.title}")
            for c in many
            for role in ("user", "assistant")
        ],
        batch_size=2000,
    )
    return long_user, long, others, many_user, many


def timed(client, url: str, repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    times, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.thread_time()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.thread_time() - start_cpu) * 1000)
        assert response.status_code == 200
    return times, cpu


def percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.95))]


def report(name: str, measured: tuple[list[float], list[float]], target: float | None, note: str = ""):
    times, cpu = measured
    p50, p95 = percentiles(times)
    cpu50, cpu95 = percentiles(cpu)
    verdict = "" if target is None else ("  ok" if p95 <= target else "  OVER")
    limit = f"<= {target:g} ms" if target is not None else "-"
    print(
        f"{name:<54} {p50:7.1f} {p95:7.1f} {max(times):7.1f} {cpu50:7.1f} {cpu95:7.1f}   {limit:<10}{verdict}  {note}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=100, help="timed requests per view (default 100)")
    args = parser.parse_args()
    url = setup(os.environ.get("DATABASE_URL"))
    from django.db import connection
    from django.test import Client

    from conversations.library import views as library

    started = time.perf_counter()
    long_user, long, others, many_user, many = fill()
    print(f"database: {connection.vendor} ({url.split('@')[-1]}); filled in {time.perf_counter() - started:.1f} s")
    print(f"page size: {library.PAGE_SIZE} messages; sidebar page: 50 conversations; {args.repeat} requests each\n")
    print(f"load average before: {os.getloadavg()[0]:.1f} (on {os.cpu_count()} CPUs)")
    print(f"{'view (server time, ms)':<54} {'p50':>7} {'p95':>7} {'max':>7} {'cpu50':>7} {'cpu95':>7}   target (p95)")

    client = Client()
    client.force_login(long_user)
    report("2,000-message conversation page", timed(client, f"/c/{long.code}/", args.repeat), 100)
    first_shown = long.branch_page(long.active_leaf_id, size=library.PAGE_SIZE)[0][0]
    report(
        f"  older page (the {library.PAGE_SIZE} messages above the newest page)",
        timed(client, f"/c/{long.code}/older/?before={first_shown.pk}", args.repeat),
        100,
    )
    oldest = long.messages.order_by("pk")[library.PAGE_SIZE]  # the page above it is the very first one
    report(
        "  older page (the top of the conversation)",
        timed(client, f"/c/{long.code}/older/?before={oldest.pk}", args.repeat),
        100,
    )

    client = Client()
    client.force_login(many_user)
    report("sidebar, 10,000 conversations: first page", timed(client, "/c/sidebar/", args.repeat), 30)
    deep = many_user.conversations.sidebar()
    for _ in range(100):  # follow the cursor 100 pages down (about 5,000 rows)
        deep = many_user.conversations.sidebar(after=deep.next_cursor)
    report(
        "sidebar, 10,000 conversations: page 101",
        timed(client, f"/c/sidebar/?after={deep.next_cursor}", args.repeat),
        30,
    )
    report("sidebar, 10,000 conversations: archived view", timed(client, "/c/sidebar/?view=archived", args.repeat), 30)
    small = many[5]
    report(
        "conversation page (2 messages) with that sidebar",
        timed(client, f"/c/{small.code}/", args.repeat),
        None,
        "(whole page)",
    )
    report(
        "search 10,000 conversations + 20,000 messages",
        timed(client, "/c/sidebar/?q=topic%2042", max(10, args.repeat // 5)),
        None,
        "(no target)",
    )


if __name__ == "__main__":
    main()
