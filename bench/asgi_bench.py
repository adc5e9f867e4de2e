"""The app's ASGI application, plus benchmark-only instrumentation (nothing here is in the app).

    python -m daphne -b 127.0.0.1 -p PORT bench.asgi_bench:application

- Counts every INSERT/UPDATE/DELETE statement per table (a `connection.execute_wrapper` installed
  on each new database connection through the `connection_created` signal), the rows they
  changed, and "database is locked" errors.
- Samples the event loop's lag (how late a 100 ms sleep wakes up).
- Answers GET /__bench__/stats with all of it as JSON, and GET /__bench__/profile/start and
  /__bench__/profile/stop?out=FILE to run cProfile over the event-loop thread.
Any other request goes to `chatsite.asgi.application` untouched.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import re
import threading
import time
from collections import defaultdict
from urllib.parse import parse_qs

if os.environ.get("BENCH_SWITCH_INTERVAL"):  # what-if experiment only (stream_bench.py --experiment)
    os.environ["GIL_SWITCH_INTERVAL"] = os.environ["BENCH_SWITCH_INTERVAL"]  # chatsite/asgi.py applies it

from django.db.backends.signals import connection_created  # noqa: E402

from chatsite.asgi import application as app  # noqa: E402  (sets up Django first)
from conversations.generation import pacer  # noqa: E402

WRITE = re.compile(r'^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?([A-Za-z0-9_]+)"?', re.I)
_lock = threading.Lock()
writes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
locked_errors = 0
lag_samples: list[tuple[float, float]] = []  # (time, lag seconds)
window_samples: list[tuple[float, float | None]] = []  # (time, coalescing window seconds)
_lag_task: asyncio.Task | None = None
_profiler: cProfile.Profile | None = None
LAG_INTERVAL = 0.1  # seconds; sparse so that the probe itself costs next to nothing


queries: dict[str, int] = defaultdict(int)  # every statement, by its first word
connections_opened = 0


def _count(execute, sql, params, many, context):
    global locked_errors
    match = WRITE.match(sql)
    queries[sql.lstrip().split(None, 1)[0].upper()] += 1
    try:
        result = execute(sql, params, many, context)
    except Exception as exc:
        if "database is locked" in str(exc):
            with _lock:
                locked_errors += 1
        raise
    if match:
        kind = match.group(1).split()[0].lower()
        table = match.group(2)
        rowcount = getattr(context.get("cursor"), "rowcount", -1)
        statements = len(params) if many and hasattr(params, "__len__") else 1  # executemany: one per parameter set
        with _lock:
            writes[table][kind] += statements
            if rowcount and rowcount > 0:
                writes[table][kind + "_rows"] += rowcount
                writes[table][kind + "_effective"] += statements
    return result


def _install(sender, connection, **kwargs):
    global connections_opened
    connections_opened += 1
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


connection_created.connect(_install)


def _window() -> float | None:
    """The current coalescing window on this loop."""
    current = getattr(pacer, "current_window", None)  # the app's pacer may drop it
    return current() if current else None


async def _watch_lag():
    while True:
        start = time.monotonic()
        await asyncio.sleep(LAG_INTERVAL)
        now = time.monotonic()
        lag_samples.append((now, now - start - LAG_INTERVAL))
        window_samples.append((now, _window()))
        if len(lag_samples) > 200_000:
            del lag_samples[:100_000]
            del window_samples[:100_000]


def _stats(since: float) -> dict:
    lags = sorted(lag for t, lag in lag_samples if t >= since)
    windows = sorted(w for t, w in window_samples if t >= since and w is not None)
    with _lock:
        data = {table: dict(kinds) for table, kinds in writes.items()}
        locked = locked_errors
    return {
        "pid": os.getpid(),
        "writes": data,
        "locked_errors": locked,
        "queries": dict(queries),
        "connections_opened": connections_opened,
        "loop_lag_max_ms": round(lags[-1] * 1000, 1) if lags else None,
        "loop_lag_p99_ms": round(lags[int(len(lags) * 0.99)] * 1000, 1) if lags else None,
        "window_p50_ms": round(windows[len(windows) // 2] * 1000, 1) if windows else None,
        "window_max_ms": round(windows[-1] * 1000, 1) if windows else None,
        "now": time.monotonic(),
    }


async def _bench_endpoint(scope, receive, send):
    global _profiler
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
    status, body = 200, {}
    if path == "/__bench__/stats":
        body = _stats(float(query.get("since", 0)))
    elif path == "/__bench__/profile/start":
        _profiler = cProfile.Profile()
        _profiler.enable()
        body = {"profiling": True}
    elif path == "/__bench__/profile/stop":
        if _profiler is not None:
            _profiler.disable()
            _profiler.dump_stats(query.get("out", "/tmp/daphne.prof"))
            _profiler = None
        body = {"profiling": False}
    else:
        status, body = 404, {"error": "unknown"}
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


async def application(scope, receive, send):
    global _lag_task
    if _lag_task is None:
        _lag_task = asyncio.get_running_loop().create_task(_watch_lag())
    if scope["type"] == "http" and scope["path"].startswith("/__bench__/"):
        await _bench_endpoint(scope, receive, send)
        return
    await app(scope, receive, send)
