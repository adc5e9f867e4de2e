"""Bench-only: the app's settings with what-if changes, for `stream_bench.py --experiment ...`.

Nothing here is the app's configuration; it only measures what a change elsewhere would buy.
  BENCH_CONN_MAX_AGE=<seconds>   keep database connections open (the app uses 0: a new SQLite
                                 connection for nearly every database round trip). SQLite only:
                                 with PostgreSQL the app uses psycopg's pool, which Django refuses
                                 to combine with persistent connections.
"""

import os

from chatsite.settings import *  # noqa: F403
from chatsite.settings import DATABASES

if os.environ.get("BENCH_CONN_MAX_AGE"):
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ["BENCH_CONN_MAX_AGE"])
