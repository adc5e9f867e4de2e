"""The chat page's socket frames: HTML fragments from conversation.html and its partials, swapped in by id.

Plain functions of what they show, so the chat socket (conversations/chat/consumer.py) only says
when to send them.
"""

from __future__ import annotations

from django.template.loader import render_to_string
from django.utils.safestring import mark_safe

from conversations import events
from conversations.generation.parts import tool_call_view
from conversations.models import Conversation, Message

PAGE = "conversations/conversation.html"
MESSAGE_TEXT = "conversations/_message_text.html"
EXTRAS = "conversations/_message_extras.html"


def composer_actions(busy: bool) -> str:
    """Stop while a reply streams, and Send (disabled meanwhile)."""
    return render_to_string(f"{PAGE}#composer_actions", {"busy": busy, "oob": True})


def emptied_composer_input() -> str:
    """The message box, empty again: for the tab that sent the message, once it is saved."""
    return render_to_string(f"{PAGE}#composer_input", {"oob": True})


def added(user_message: Message, reply: Message) -> str:
    """A sent message and its reply (n replies: its open choices, side by side), at the end of the transcript."""
    return render_to_string(f"{PAGE}#added", {"messages": [user_message, reply]})


def transcript(context: dict) -> str:
    """The whole shown branch (library.transcript_context), replacing the page's."""
    return render_to_string(f"{PAGE}#transcript", {**context, "oob": True})


def message(message: Message, *, preserve_text: int | None = None) -> str:
    """One message, replacing its copy; `preserve_text`: its id when the page keeps the text it streamed."""
    return render_to_string(f"{PAGE}#message", {"message": message, "oob": True, "preserve_text": preserve_text})


def delta(event: events.Event) -> list[str]:
    """The frames of one delta: HTML the generation rendered once for every viewer."""
    return event["frames"]


def snapshot(event: events.Event) -> str:
    """A streaming reply's text as a page has it after every delta so far (its HTML, from rendering.py)."""
    html = event.get("html")
    context = {"message": {"pk": event["message_id"], "content": event["content"]}, "text_oob": True}
    context["text_html"] = mark_safe(html) if html is not None else None  # noqa: S308 - rendering.py made it
    return render_to_string(MESSAGE_TEXT, context)


def context_marker(event: events.Event) -> str:
    """The line above which the model no longer sees the conversation (its context window)."""
    return render_to_string(f"{PAGE}#context_marker", {"start_id": event["context_start_id"], "oob": True})


def live_extras(event: events.Event) -> str:
    """The reasoning and tool calls of a streaming reply so far, replacing what the page shows."""
    context = {
        "message_id": int(event["message_id"]),
        "reasoning": event.get("reasoning"),
        "thinking": event.get("thinking"),
        "calls": [tool_call_view(call) for call in event.get("tool_calls") or []],
    }
    return render_to_string(f"{EXTRAS}#live", context)


def choices_note(event: events.Event) -> str:
    """What the note above n choices says (e.g. that the app asked for them one request each)."""
    context = {"parent_id": event["parent_id"], "count": event["count"], "own_request": event["own_request"]}
    return render_to_string("conversations/_choices.html#note", {**context, "oob": True})


def usage_totals(conversation: Conversation) -> str:
    """The conversation's token totals (header), to swap in when a reply ends (reads the database)."""
    return render_to_string("conversations/_usage_totals.html", {"conversation": conversation, "oob": True})
