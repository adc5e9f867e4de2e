"""The settings panel and preset picker as inclusion tags, for any page that shows them."""

from django import template

from conversations.chat.settings_panel import TEMPLATE, panel_context

register = template.Library()


@register.inclusion_tag(TEMPLATE, takes_context=True)
def settings_panel(context, conversation):
    """The Settings button and its drawer, filled with the conversation's saved settings."""
    return {**panel_context(conversation, context["request"].user), "request": context["request"]}


@register.inclusion_tag("conversations/preset_picker.html", takes_context=True)
def preset_picker(context):
    """A choice of preset next to New chat (only for users who have saved one)."""
    return {"presets": context["request"].user.presets.only("pk", "name")}
