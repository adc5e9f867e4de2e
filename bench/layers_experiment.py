"""Bench-only what-if: the in-memory channel layer with its expiry sweep rate-limited.

channels' InMemoryChannelLayer runs `_clean_expired()` (a walk over every channel and every
group) on each group_send() and each receive(): with 500 conversations streaming that is ~1,000
groups walked twice per delta. This subclass walks at most once a second; messages still expire
(after `expiry` seconds, to the nearest second). Used only by `stream_bench.py --experiment
layer=lazyclean` to measure what such a change would buy; the app does not use it.
"""

import time

from channels.layers import InMemoryChannelLayer


class LazyCleanInMemoryChannelLayer(InMemoryChannelLayer):
    _last_clean = 0.0

    def _clean_expired(self):
        now = time.monotonic()
        if now - self._last_clean >= 1.0:
            self._last_clean = now
            super()._clean_expired()
