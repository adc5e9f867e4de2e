"""The `markdown` filter: model output as sanitized HTML in templates."""

from django import template

from conversations.rendering import render_markdown

register = template.Library()


@register.filter
def markdown(text: str):
    """Render model output as sanitized HTML."""
    return render_markdown(text or "")
