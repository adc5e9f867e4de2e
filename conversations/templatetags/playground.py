"""The playground's template tag: a completion's tokens shaded by probability, with no whitespace around."""

from django import template
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe

register = template.Library()


@register.simple_tag
def token_text(tokens, prefix):
    """Tokens shaded by probability (the shared _logprobs.html), without the whitespace around it:
    the playground shows text where every character counts (white-space: pre-wrap)."""
    html = render_to_string("conversations/_logprobs.html", {"tokens": tokens, "prefix": prefix})
    return mark_safe(html.strip())  # noqa: S308 - rendered (autoescaped) by the template just above
