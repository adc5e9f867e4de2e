"""Admin and usage pages at scale: 10,000 users, 100,000 conversations, 1,000,000 messages.

    .venv/bin/python bench/admin_bench.py                 # build var/admin_bench.sqlite3 once, then time
    .venv/bin/python bench/admin_bench.py --rebuild       # throw the database away and build it again
    DATABASE_URL=postgres://... .venv/bin/python bench/admin_bench.py   # on another database (emptied!)

Options: --users/--conversations/--messages (per conversation) shape the data, --repeat N
timings per page (default 15), --json FILE writes every figure, --analyze runs ANALYZE (SQLite's
planner statistics; off by default, since a deployment does not run it by itself).

It builds the data with bulk_create in batches (explicit primary keys, one password hash shared
by every user), then requests each page in this process through Django's test client with a
logged-in superuser: middleware, admin, ORM, templates, everything but the network. It prints,
per page, the median and 95th percentile of the server time and the number of SQL queries.
The SQLite file stays in var/ and is reused by the next run (the build takes minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

VOCABULARY = """the a model answer question python django server stream token window context reply user prompt
system latency cache query index table page review audit usage quota limit minute month day provider chat
completion branch version edit regenerate markdown code list example function value error retry network
socket browser admin export import setting temperature sample"""
WORDS = VOCABULARY.split()
MODELS = [("gpt-4o-mini", "OpenAI"), ("gpt-4o", "OpenAI"), ("llama-3.1-8b", "Local vLLM")]
RARE_WORD = "zebracorn"  # in about 1 message in 10,000: what the search has to find


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=10, help="per user")
    parser.add_argument("--messages", type=int, default=10, help="per conversation")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--analyze", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    return parser.parse_args()


def setup_django():
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'admin_bench.sqlite3'}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()
    from django.conf import settings

    settings.DEBUG = False  # no query log kept for a million inserts; templates as in production
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # the bench logins only


def sentence(rng: random.Random, low: int, high: int) -> str:
    text = " ".join(rng.choices(WORDS, k=rng.randint(low, high)))
    if rng.random() < 0.0001:
        text += f" {RARE_WORD}"
    return text.capitalize() + "."


def insert_messages(rows: list[dict]):
    """INSERT message rows with executemany: bulk_create's per-field preparation of a million rows
    took about 5 minutes here, this takes well under one. Columns not given get the field's
    default (prepared once), so fields added to Message later need no change here.
    """
    from django.db import connection

    from conversations.models import Message

    fields = Message._meta.concrete_fields
    given = (
        "id",
        "conversation_id",
        "parent_id",
        "role",
        "content",
        "status",
        "error",
        "finish_reason",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "duration_ms",
        "created_at",
        "heartbeat_at",
    )
    defaults = {f.attname: f.get_db_prep_save(f.get_default(), connection) for f in fields if f.attname not in given}
    adapt = connection.ops.adapt_datetimefield_value
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    sql = f"INSERT INTO {quote(Message._meta.db_table)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"

    base = {"status": Message.Status.COMPLETE.value, "error": "", "finish_reason": "", "model": ""}

    def values(row):
        row = {**base, **row}
        for f in fields:
            name = f.attname
            if name not in given:
                yield defaults[name]
            elif name in ("created_at", "heartbeat_at"):
                yield adapt(row[name])
            else:
                yield row.get(name)  # None for the token and timing columns of a user's message

    with connection.cursor() as cursor:
        cursor.executemany(sql, [tuple(values(row)) for row in rows])


def build(args):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Permission
    from django.db import connection, transaction
    from django.db.models import F

    from conversations.models import AuditRecord, Conversation, Profile, Provider, Usage

    User = get_user_model()
    rng = random.Random(42)
    now = datetime.now().astimezone()
    started = time.perf_counter()
    batch = 20_000

    def insert(model, rows):
        with transaction.atomic():
            for start in range(0, len(rows), batch):
                model.objects.bulk_create(rows[start : start + batch], batch_size=batch)

    providers = {
        name: Provider.objects.create(name=name, base_url=f"http://127.0.0.1:9/{i}/v1")
        for i, name in enumerate(sorted({p for _, p in MODELS}))
    }
    password = make_password("bench-password")
    users = [
        User(
            id=i,
            username=f"user{i:05d}",
            email=f"user{i:05d}@example.com",
            password=password,
            date_joined=now - timedelta(days=rng.randint(0, 400)),
            is_active=rng.random() > 0.02,
        )
        for i in range(1, args.users + 1)
    ]
    insert(User, users)
    admin = User.objects.create_superuser("bench-admin", password="bench-password")
    reviewer = User.objects.create_user("bench-reviewer", password="bench-password", is_staff=True)
    reviewer.user_permissions.add(Permission.objects.get(codename="review_conversation"))
    insert(
        Profile,
        [Profile(user_id=i, tokens_per_day=100_000, messages_per_minute=10) for i in range(1, args.users + 1, 10)],
    )
    print(f"  users: {args.users:,} in {time.perf_counter() - started:.1f} s", flush=True)

    usage: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    conversation_id = message_id = 0
    codes: list[str] = []
    total_conversations = args.users * args.conversations
    chunk_conversations: list = []
    chunk_messages: list = []

    def flush():
        with transaction.atomic():
            Conversation.objects.bulk_create(chunk_conversations, batch_size=batch)
            insert_messages(chunk_messages)
        chunk_conversations.clear()
        chunk_messages.clear()

    for user_id in range(1, args.users + 1):
        for _ in range(args.conversations):
            conversation_id += 1
            codes.append(f"{rng.getrandbits(128):032x}")
            model, provider_name = rng.choice(MODELS)
            created = now - timedelta(days=rng.random() * 90)
            first = sentence(rng, 4, 12)
            chunk_conversations.append(
                Conversation(
                    id=conversation_id,
                    code=codes[-1],
                    owner_id=user_id,
                    title=Conversation.title_from(first),
                    provider_id=providers[provider_name].pk,
                    model=model,
                    params={"temperature": 0.7} if rng.random() < 0.3 else {},
                    flagged=rng.random() < 0.01,
                    created_at=created,
                    updated_at=created + timedelta(minutes=args.messages),
                )
            )
            parent = None
            for index in range(args.messages):
                message_id += 1
                at = created + timedelta(minutes=index)
                if index % 2 == 0:
                    text = first if index == 0 else sentence(rng, 6, 30)
                    chunk_messages.append(
                        {
                            "id": message_id,
                            "conversation_id": conversation_id,
                            "parent_id": parent,
                            "role": "user",
                            "content": text,
                            "created_at": at,
                            "heartbeat_at": at,
                        }
                    )
                    parent = message_id
                    continue
                # One conversation in ten has its last reply regenerated: a second version, a branch.
                sibling_of = message_id - 2 if index == args.messages - 1 and conversation_id % 10 == 0 else None
                failed = rng.random() < 0.01
                prompt, completion = rng.randint(20, 2000), rng.randint(10, 800)
                chunk_messages.append(
                    {
                        "id": message_id,
                        "conversation_id": conversation_id,
                        "parent_id": (message_id - 3) if sibling_of else parent,
                        "role": "assistant",
                        "content": "" if failed else sentence(rng, 20, 60),
                        "status": "error" if failed else "complete",
                        "error": "The provider had an internal error (HTTP 500)." if failed else "",
                        "finish_reason": "" if failed else "stop",
                        "model": model,
                        "prompt_tokens": None if failed else prompt,
                        "completion_tokens": None if failed else completion,
                        "ttft_ms": rng.randint(80, 900),
                        "duration_ms": rng.randint(500, 9000),
                        "created_at": at,
                        "heartbeat_at": at,
                    }
                )
                row = usage[(user_id, at.date(), model, provider_name)]
                row[0] += 0 if failed else prompt
                row[1] += 0 if failed else completion
                row[2] += 1
                parent = message_id
            if len(chunk_messages) >= 100_000:
                flush()
                done = conversation_id / total_conversations
                print(
                    f"  conversations: {conversation_id:,} ({done:.0%}), messages: {message_id:,} "
                    f"in {time.perf_counter() - started:.1f} s",
                    flush=True,
                )
    flush()
    # auto_now_add replaced the creation times given above: put them back where the messages start.
    Conversation.objects.update(created_at=F("updated_at") - timedelta(minutes=args.messages))
    insert(
        Usage,
        [
            Usage(user_id=u, day=d, model=m, provider_name=p, prompt_tokens=v[0], completion_tokens=v[1], messages=v[2])
            for (u, d, m, p), v in usage.items()
        ],
    )
    records = []
    for _ in range(min(50_000, conversation_id // 2)):
        target = rng.randint(1, conversation_id)
        records.append(
            AuditRecord(
                actor_id=reviewer.pk,
                actor_name=reviewer.username,
                conversation_id=target,
                conversation_code=codes[target - 1],
                owner_name=f"user{(target - 1) // args.conversations + 1:05d}",
                action=rng.choice(["transcript", "export-json", "export-markdown"]),
            )
        )
    insert(AuditRecord, records)
    with connection.cursor() as cursor:  # auto_now_add ignored the times: spread them over 90 days
        table = AuditRecord._meta.db_table
        cursor.execute(
            f"UPDATE {table} SET at = datetime(at, '-' || (id % 90) || ' days')"
            if connection.vendor == "sqlite"
            else f"UPDATE {table} SET at = at - (id % 90) * interval '1 day'"
        )
    elapsed = time.perf_counter() - started
    print(
        f"  built: {args.users:,} users, {conversation_id:,} conversations, {message_id:,} messages, "
        f"{len(usage):,} usage rows, {len(records):,} audit records in {elapsed:.0f} s",
        flush=True,
    )
    return admin, elapsed


class QueryCounter(list):
    """An execute wrapper that remembers every statement run through it."""

    def __call__(self, execute, sql, params, many, context):
        self.append(sql)
        return execute(sql, params, many, context)


def time_pages(args):
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from conversations.accounts import quotas
    from conversations.models import AuditRecord, Conversation

    User = get_user_model()
    admin = User.objects.get(username="bench-admin")
    client = Client()
    client.force_login(admin)
    middle = Conversation.objects.order_by("pk")[Conversation.objects.count() // 2]
    middle_id = (User.objects.filter(username__startswith="user").count() // 20) * 10 + 1
    heavy_user = User.objects.get(username=f"user{middle_id:05d}")  # has a Profile with limits
    user_client = Client()
    user_client.force_login(heavy_user)
    code = AuditRecord.objects.values_list("conversation_code", flat=True).first()
    today = timezone.localdate()
    pages = [
        ("conversations: list", "/admin/conversations/conversation/"),
        ("conversations: page 500", "/admin/conversations/conversation/?p=500"),
        ("conversations: search message text", f"/admin/conversations/conversation/?q={RARE_WORD}"),
        ("conversations: status = error", "/admin/conversations/conversation/?status=error"),
        ("conversations: user filter", f"/admin/conversations/conversation/?owner={heavy_user.username}"),
        ("conversations: flagged", "/admin/conversations/conversation/?flagged__exact=1"),
        ("conversations: model", "/admin/conversations/conversation/?model=gpt-4o"),
        (
            "conversations: date range",
            f"/admin/conversations/conversation/?active_from={today - timedelta(days=14)}"
            f"&active_to={today - timedelta(days=7)}",
        ),
        ("review transcript", f"/admin/conversations/conversation/{middle.pk}/change/"),
        ("audit: list", "/admin/conversations/auditrecord/"),
        ("audit: search a conversation", f"/admin/conversations/auditrecord/?q={code}"),
        ("users: list", "/admin/auth/user/"),
        ("users: search", "/admin/auth/user/?q=user0500"),
        ("users: change (limits inline)", f"/admin/auth/user/{heavy_user.pk}/change/"),
        ("usage dashboard: 30 days", "/admin/conversations/usage/"),
        ("usage dashboard: 365 days", "/admin/conversations/usage/?days=365"),
        ("account page (a user's usage)", "/account/", user_client),
    ]
    results = []
    print(f"\n{'page':42} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8}  status")
    for name, url, *rest in pages:
        who = rest[0] if rest else client
        response = who.get(url)  # warm-up (and the status to report)
        queries = QueryCounter()
        with connection.execute_wrapper(queries):
            who.get(url)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            who.get(url)
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        p50 = statistics.median(times)
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        results.append(
            {
                "page": name,
                "url": url,
                "p50_ms": round(p50, 1),
                "p95_ms": round(p95, 1),
                "queries": len(queries),
                "status": response.status_code,
            }
        )
        print(f"{name:42} {p50:8.1f} {p95:8.1f} {len(queries):8}  {response.status_code}", flush=True)

    times = []
    for _ in range(args.repeat * 10):
        start = time.perf_counter()
        quotas.check(heavy_user, "gpt-4o")
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    p50, p95 = statistics.median(times), times[round(0.95 * (len(times) - 1))]
    results.append({"page": "quota check before a send", "p50_ms": round(p50, 2), "p95_ms": round(p95, 2)})
    print(f"{'quota check before a send (function)':42} {p50:8.2f} {p95:8.2f}")
    return results


def main():
    args = parse_args()
    setup_django()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    database = settings.DATABASES["default"]
    print(f"database: {database['ENGINE'].rsplit('.', 1)[-1]} {database['NAME']}")
    if args.rebuild and database["ENGINE"].endswith("sqlite3"):
        connection.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database['NAME']}{suffix}").unlink(missing_ok=True)
    call_command("migrate", verbosity=0)
    built = None
    if args.rebuild or not get_user_model().objects.filter(username="bench-admin").exists():
        if get_user_model().objects.exists():
            call_command("flush", interactive=False, verbosity=0)
        print("building the data:")
        _admin, built = build(args)
    if args.analyze:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    results = time_pages(args)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"build_seconds": built, "repeat": args.repeat, "pages": results}, indent=2)
        )


if __name__ == "__main__":
    main()
