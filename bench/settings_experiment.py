"""Bench-only: the app's settings with what-if changes, for `stream_bench.py --experiment ...`.

Nothing here is the app's configuration; it only measures what a change elsewhere would buy.
  BENCH_CONN_MAX_AGE=<seconds>   keep database connections open (the app uses 0: a new
                                 SQLite connection for nearly every database round trip)
  BENCH_LAYER=lazyclean          bench/layers_experiment.py's in-memory layer, whose expiry
                                 sweep runs at most once a second instead of on every operation
"""

import os

from chatsite.settings import *  # noqa: F403
from chatsite.settings import CHANNEL_LAYERS, DATABASES

if os.environ.get("BENCH_CONN_MAX_AGE"):
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ["BENCH_CONN_MAX_AGE"])

if os.environ.get("BENCH_LAYER") == "lazyclean":
    CHANNEL_LAYERS["default"]["BACKEND"] = "bench.layers_experiment.LazyCleanInMemoryChannelLayer"
