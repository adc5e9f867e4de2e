"""Per-user limits, checked before anything is saved or sent to a provider.

Limits: tokens per day, tokens per month (both counted from `Usage`, that is from finished
replies), replies per minute (counted from saved assistant messages, so regenerations count),
and which models an account may use. Defaults come from the settings (0: no limit); a Profile
edited in the admin overrides them per account (empty: the default; 0: no limit).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import F, Q, Sum
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from conversations.models import Conversation, Message, Profile, Usage

WINDOW = timedelta(minutes=1)


@dataclass
class Limits:
    tokens_per_day: int = 0
    tokens_per_month: int = 0
    messages_per_minute: int = 0
    allowed_models: list[str] = field(default_factory=list)  # names or shell patterns; empty: all


@dataclass
class Refusal:
    """Why a message may not be sent now, and when that changes (None: not by waiting)."""

    limit: str  # tokens_per_day, tokens_per_month, messages_per_minute, model, inactive
    message: str
    resets_at: datetime | None = None

    def __str__(self):
        return self.message

    @property
    def on_send(self) -> str:
        # Not inside the f-string: xgettext (makemessages) does not look into f-strings.
        return self.message + " " + _("Nothing was sent, and your text is still in the box.")

    @property
    def on_regenerate(self) -> str:
        return self.message + " " + _("Nothing was sent.")


def parse_models(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def limits_for(user) -> Limits:
    profile = Profile.objects.filter(user=user).first()

    def pick(name: str, default: int) -> int:
        value = getattr(profile, name) if profile is not None else None
        return max(0, default if value is None else value)

    return Limits(
        tokens_per_day=pick("tokens_per_day", settings.QUOTA_TOKENS_PER_DAY),
        tokens_per_month=pick("tokens_per_month", settings.QUOTA_TOKENS_PER_MONTH),
        messages_per_minute=pick("messages_per_minute", settings.QUOTA_MESSAGES_PER_MINUTE),
        allowed_models=parse_models(profile.allowed_models) if profile is not None else [],
    )


def model_allowed(limits: Limits, model: str) -> bool:
    if not limits.allowed_models:
        return True
    return any(fnmatch.fnmatchcase(model, pattern) for pattern in limits.allowed_models)


def allowed_models(user, models: list[str]) -> list[str]:
    """The models of a provider's list that `user` may pick."""
    limits = limits_for(user)
    return [m for m in models if model_allowed(limits, m)]


def _start_of(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _next_month(day):
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def _in(delta: timedelta) -> str:
    """A short, rounded-up duration: "42 seconds", "3 hours, 12 minutes"."""
    seconds = max(1, int(delta.total_seconds() + 0.999))
    if seconds < 60:
        return ngettext("%(n)d second", "%(n)d seconds", seconds) % {"n": seconds}
    minutes = (seconds + 59) // 60
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = []
    if days:
        parts.append(ngettext("%(n)d day", "%(n)d days", days) % {"n": days})
    if hours:
        parts.append(ngettext("%(n)d hour", "%(n)d hours", hours) % {"n": hours})
    if minutes and not days:
        parts.append(ngettext("%(n)d minute", "%(n)d minutes", minutes) % {"n": minutes})
    return ", ".join(parts)


def describe_reset(resets_at: datetime, now: datetime) -> str:
    when = timezone.localtime(resets_at).strftime("%Y-%m-%d %H:%M:%S %Z")
    return _("It resets at %(when)s (in %(delta)s).") % {"when": when, "delta": _in(resets_at - now)}


def tokens_used(user, now: datetime | None = None) -> tuple[int, int]:
    """Tokens of finished replies today and this month (in the site's time zone)."""
    today = timezone.localdate(now or timezone.now())
    total = F("prompt_tokens") + F("completion_tokens")
    sums = Usage.objects.filter(user=user, day__gte=today.replace(day=1), day__lte=today).aggregate(
        month=Sum(total), day=Sum(total, filter=Q(day=today))
    )
    return sums["day"] or 0, sums["month"] or 0


def replies_in_window(user, now: datetime) -> list[datetime]:
    """When each reply of the last minute was asked for, oldest first."""
    return list(
        Message.objects.filter(conversation__owner=user, role=Message.Role.ASSISTANT, created_at__gt=now - WINDOW)
        .order_by("created_at")
        .values_list("created_at", flat=True)
    )


def check(user, model: str, now: datetime | None = None) -> Refusal | None:
    """The first limit `user` is over for a new reply from `model`, or None."""
    now = now or timezone.now()
    if not get_user_model().objects.filter(pk=user.pk, is_active=True).exists():
        return Refusal("inactive", _("Your account is not active, so nothing can be sent. Ask an administrator."))
    limits = limits_for(user)
    if not model_allowed(limits, model):
        return Refusal(
            "model",
            _("Your account may not use the model “%(model)s”. Pick another model: %(allowed)s.")
            % {"model": model or _("(none chosen)"), "allowed": ", ".join(limits.allowed_models)},
        )
    if limits.messages_per_minute:
        recent = replies_in_window(user, now)
        if len(recent) >= limits.messages_per_minute:
            resets_at = recent[len(recent) - limits.messages_per_minute] + WINDOW
            text = ngettext(
                "You have asked for %(count)s reply in the last minute; your limit is %(limit)s a minute.",
                "You have asked for %(count)s replies in the last minute; your limit is %(limit)s a minute.",
                len(recent),
            ) % {"count": number_format(len(recent)), "limit": number_format(limits.messages_per_minute)}
            return Refusal("messages_per_minute", f"{text} {describe_reset(resets_at, now)}", resets_at)
    if limits.tokens_per_day or limits.tokens_per_month:
        day, month = tokens_used(user, now)
        today = timezone.localdate(now)
        if limits.tokens_per_day and day >= limits.tokens_per_day:
            resets_at = _start_of(today + timedelta(days=1))
            text = _("You have used %(used)s tokens today; your daily limit is %(limit)s.") % {
                "used": number_format(day, force_grouping=True),
                "limit": number_format(limits.tokens_per_day, force_grouping=True),
            }
            return Refusal("tokens_per_day", f"{text} {describe_reset(resets_at, now)}", resets_at)
        if limits.tokens_per_month and month >= limits.tokens_per_month:
            resets_at = _start_of(_next_month(today))
            text = _("You have used %(used)s tokens this month; your monthly limit is %(limit)s.") % {
                "used": number_format(month, force_grouping=True),
                "limit": number_format(limits.tokens_per_month, force_grouping=True),
            }
            return Refusal("tokens_per_month", f"{text} {describe_reset(resets_at, now)}", resets_at)
    return None


def check_conversation(user, conversation: Conversation | int) -> Refusal | None:
    """`check` for the model a conversation's next reply will use.

    The model is read fresh (the picker may have changed it since the socket opened); given a
    Conversation, it is read into that object, so the reply then uses the very model checked.
    """
    if isinstance(conversation, Conversation):
        conversation.refresh_from_db(fields=["model", "provider"])
    else:
        conversation = Conversation.objects.select_related("provider").get(pk=conversation)
    provider = conversation.provider
    return check(user, conversation.model or (provider.default_model if provider else ""))


acheck_conversation = sync_to_async(check_conversation)
aallowed_models = sync_to_async(allowed_models)
