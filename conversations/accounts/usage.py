"""Usage accounting: each finished reply adds its tokens to one row per user, model and day.

Totals and quotas are then sums over a few `Usage` rows, never scans of messages. The per-day
chart is plain SVG computed here and drawn by a template (no chart library, no CDN).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Sum
from django.utils import timezone

from conversations.models import Provider, Usage

log = logging.getLogger(__name__)


def record_reply(*, user_id: int, provider_id: int | None, model: str, prompt_tokens, completion_tokens) -> None:
    """Add one reply to today's row for its user, model and provider (created if needed).

    The increment is a single UPDATE with F() expressions, so concurrent replies (in any number
    of processes) never lose each other's counts.
    """
    if not get_user_model().objects.filter(pk=user_id).exists():
        log.info("Usage not recorded: user %s no longer exists", user_id)
        return
    name = Provider.objects.filter(pk=provider_id).values_list("name", flat=True).first() if provider_id else None
    key: dict[str, Any] = {
        "user_id": user_id,
        "day": timezone.localdate(),
        "model": (model or "")[:200],
        "provider_name": name or "",
    }
    try:
        with transaction.atomic():
            Usage.objects.get_or_create(**key)
            Usage.objects.filter(**key).update(
                prompt_tokens=F("prompt_tokens") + (prompt_tokens or 0),
                completion_tokens=F("completion_tokens") + (completion_tokens or 0),
                messages=F("messages") + 1,
            )
    except IntegrityError:
        # The account was deleted meanwhile (the foreign key is checked at commit): nothing to count for.
        log.info("Usage not recorded: user %s no longer exists", user_id)


arecord_reply = sync_to_async(record_reply)


@dataclass
class Totals:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    messages: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


SUMS = {
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "messages": Sum("messages"),
}


def totals(rows) -> Totals:
    sums = rows.aggregate(**SUMS)
    return Totals(**{k: v or 0 for k, v in sums.items()})


@dataclass
class Day:
    day: date
    totals: Totals


def per_day(rows, start: date, end: date) -> list[Day]:
    """One entry for every day from `start` to `end`, zero where nothing was used."""
    found = {}
    for row in rows.filter(day__gte=start, day__lte=end).values("day").annotate(**SUMS).order_by():
        day = row.pop("day")
        found[day] = Totals(**{k: v or 0 for k, v in row.items()})
    return [
        Day(start + timedelta(days=i), found.get(start + timedelta(days=i), Totals()))
        for i in range((end - start).days + 1)
    ]


def sum_days(days: list[Day]) -> Totals:
    return Totals(
        prompt_tokens=sum(d.totals.prompt_tokens for d in days),
        completion_tokens=sum(d.totals.completion_tokens for d in days),
        messages=sum(d.totals.messages for d in days),
    )


def per_model(rows) -> list[dict]:
    return list(
        rows.values("model", "provider_name")
        .annotate(**SUMS)
        .annotate(tokens=F("prompt_tokens") + F("completion_tokens"))
        .order_by("-tokens", "model")
    )


def per_user(rows, limit: int = 20) -> list[dict]:
    return list(
        rows.values("user_id", "user__username")
        .annotate(**SUMS)
        .annotate(tokens=F("prompt_tokens") + F("completion_tokens"))
        .order_by("-tokens")[:limit]
    )


def active_users(rows) -> int:
    return rows.aggregate(n=Count("user_id", distinct=True))["n"]


# -- the per-day chart --------------------------------------------------------------------------


@dataclass
class Bar:
    x: float
    width: float
    prompt_y: float
    prompt_height: float
    completion_y: float
    completion_height: float
    day: Day


@dataclass
class Tick:
    y: float
    label: str


@dataclass
class Label:
    x: float
    text: str


@dataclass
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    bars: list[Bar]
    ticks: list[Tick]
    labels: list[Label]
    peak: int

    @property
    def bottom(self) -> int:
        return self.top + self.plot_height

    @property
    def right(self) -> int:
        return self.left + self.plot_width


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value`."""
    if value <= 0:
        return 1
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return int(step * magnitude)
    return 10 * magnitude


def _short(n: float) -> str:
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:.3g}" if n != int(n) else str(int(n))


def chart(days: list[Day], width: int = 720, height: int = 220) -> Chart:
    """Stacked bars (prompt below, completion above) per day, with a y axis of round numbers."""
    left, top, right_pad, bottom_pad = 48, 10, 8, 24
    plot_width, plot_height = width - left - right_pad, height - top - bottom_pad
    peak = max((d.totals.tokens for d in days), default=0)
    ceiling = _nice_ceiling(peak)
    scale = plot_height / ceiling
    slot = plot_width / max(len(days), 1)
    gap = min(2.0, slot * 0.2)
    bars = []
    for index, day in enumerate(days):
        prompt_h = day.totals.prompt_tokens * scale
        completion_h = day.totals.completion_tokens * scale
        base = top + plot_height
        bars.append(
            Bar(
                x=round(left + index * slot + gap / 2, 2),
                width=round(max(slot - gap, 0.5), 2),
                prompt_y=round(base - prompt_h, 2),
                prompt_height=round(prompt_h, 2),
                completion_y=round(base - prompt_h - completion_h, 2),
                completion_height=round(completion_h, 2),
                day=day,
            )
        )
    ticks = [Tick(round(top + plot_height - plot_height * i / 4, 2), _short(ceiling * i / 4)) for i in range(5)]
    every = max(1, round(len(days) / 8))
    labels = [Label(round(left + (i + 0.5) * slot, 2), f"{d.day:%m-%d}") for i, d in enumerate(days) if i % every == 0]
    return Chart(width, height, left, top, plot_width, plot_height, bars, ticks, labels, peak)
