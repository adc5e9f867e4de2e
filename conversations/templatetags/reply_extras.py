"""Template helpers for what a reply carries besides its text: choices, reasoning, tool calls, JSON, logprobs."""

import math

from django import template
from django.db.models import Count, Q, Sum
from django.utils.translation import gettext as _

from conversations.generation.parts import json_view as _json_view
from conversations.generation.parts import tool_call_view

register = template.Library()

# Tokens are rendered with this many alternatives at most.
MAX_ALTERNATIVES = 20


@register.filter
def json_view(text: str) -> dict:
    """{"valid", "text" (pretty-printed when valid), "error"} for a reply meant to be JSON."""
    return _json_view(text or "")


@register.filter
def tool_call_views(calls) -> list[dict]:
    return [tool_call_view(call) for call in calls or [] if isinstance(call, dict)]


@register.filter
def seconds(ms) -> str:
    """A duration in milliseconds, in words a person reads at a glance."""
    if ms is None:
        return ""
    if ms < 1000:
        return _("%(ms)d ms") % {"ms": ms}
    return _("%(s).1f s") % {"s": ms / 1000}


def _probability(logprob) -> float | None:
    if logprob is None:
        return None
    try:
        return math.exp(max(float(logprob), -700.0))
    except (TypeError, ValueError):
        return None


def _percent(p: float | None) -> str:
    if p is None:
        return "–"
    if p >= 0.9995:
        return "100%"
    if p < 0.001:
        return "<0.1%"
    return f"{p * 100:.1f}%"


def visible_token(token: str) -> str:
    """A token as it reads in a list: spaces and line ends made visible."""
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


@register.filter
def logprob_tokens(tokens) -> list[dict]:
    """Per token: its text, probability (shade 0..1, low = strong), and top alternatives."""
    views = []
    for entry in tokens or []:
        if not isinstance(entry, dict):
            continue
        token = str(entry.get("token") or "")
        p = _probability(entry.get("logprob"))
        alternatives = []
        for alt in (entry.get("top") or [])[:MAX_ALTERNATIVES]:
            if not isinstance(alt, dict):
                continue
            alt_token = str(alt.get("token") or "")
            alt_p = _probability(alt.get("logprob"))
            alternatives.append(
                {"text": visible_token(alt_token), "percent": _percent(alt_p), "chosen": alt_token == token}
            )
        views.append(
            {
                "text": token,
                "visible": visible_token(token),
                "percent": _percent(p),
                # How strongly to mark it: 0 for a sure token, 1 for a very unlikely one.
                "shade": "0" if p is None else f"{1 - p:.2f}",
                "alternatives": alternatives,
                "offset": entry.get("offset"),
            }
        )
    return views


@register.simple_tag
def conversation_usage(conversation) -> dict:
    """Tokens of every reply in the conversation (all branches: each was a request)."""
    totals = conversation.messages.aggregate(
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        estimated=Count("pk", filter=Q(usage_estimated=True)),
    )
    prompt, completion = totals["prompt"] or 0, totals["completion"] or 0
    return {
        "prompt": prompt,
        "completion": completion,
        "total": prompt + completion,
        "estimated": bool(totals["estimated"]),
    }
