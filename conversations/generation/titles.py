"""Titles named by the model after the first exchange, with the first words as the fallback.

`after_reply()` is called at the end of every reply. For a conversation whose title is
still its first words (`title_source` AUTO) and whose reply is complete, it starts a background
task that asks the conversation's provider and model for a short title (one small, non-streamed
request), cleans the answer, saves it and pushes it to the open pages of the conversation.
It never delays or breaks the reply: the reply is saved and announced before, and any failure
leaves the first words in place. A title the user typed is never replaced: the final update only
applies while the title is still the automatic one.
"""

from __future__ import annotations

import asyncio
import logging
import re

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from conversations import events
from conversations.models import Conversation, Message, Provider
from conversations.providers import client as llm

log = logging.getLogger(__name__)

# Sent to the model as the system message; tests/fake_provider.py recognises title requests by it.
TITLE_INSTRUCTION = (
    "Reply with a title of at most 6 words for the conversation below, in the language of the "
    "conversation. Reply with the title only: no quotes, no explanation."
)
MAX_TITLE_CHARS = 80
MAX_TITLE_WORDS = 10
EXCERPT_CHARS = 1500  # of the question and of the answer: enough to name it, cheap to send
MAX_TOKENS = 24
TIMEOUT_SECONDS = 30.0

PAGE = "conversations/conversation.html"

_tasks: set[asyncio.Task] = set()


def after_reply(conversation: Conversation, reply_id: int, status: str) -> None:
    """Name the conversation in the background if this was its first complete exchange."""
    try:
        if status != Message.Status.COMPLETE or conversation.title_source != Conversation.TitleSource.AUTO:
            return
        task = asyncio.create_task(name_conversation(conversation.pk, reply_id))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
    except Exception:
        log.exception("Could not start naming conversation %s", getattr(conversation, "pk", None))


async def wait_idle() -> None:
    """Wait for the naming tasks of this process (for tests)."""
    while _tasks:
        await asyncio.gather(*list(_tasks), return_exceptions=True)


def cancel_all() -> None:
    """Give up the naming tasks of this process (for tests that cannot wait any longer)."""
    for task in list(_tasks):
        task.cancel()


async def name_conversation(conversation_id: int, reply_id: int) -> None:
    try:
        await _name(conversation_id, reply_id)
    except Exception:
        log.exception("Naming conversation %s failed", conversation_id)


async def _name(conversation_id: int, reply_id: int) -> None:
    # Claim it: from here on the first words are final unless the model names it.
    claimed = await Conversation.objects.filter(pk=conversation_id, title_source=Conversation.TitleSource.AUTO).aupdate(
        title_source=Conversation.TitleSource.WORDS
    )
    if not claimed:
        return
    conversation = await Conversation.objects.select_related("provider").aget(pk=conversation_id)
    reply = await Message.objects.select_related("parent").aget(pk=reply_id)
    question = reply.parent.content if reply.parent else ""
    title = ""
    provider = conversation.provider
    if provider is not None and provider.enabled and conversation.mode == Conversation.Mode.CHAT:
        title = await _ask(conversation, provider, reply.model or conversation.model, question, reply.content)
    if not title:
        if conversation.title:
            return  # the first words stay
        title, source = Conversation.title_from(question), Conversation.TitleSource.WORDS
    else:
        source = Conversation.TitleSource.MODEL
    updated = await Conversation.objects.filter(
        pk=conversation_id, title_source=Conversation.TitleSource.WORDS
    ).aupdate(title=title, title_source=source)
    if updated and title != conversation.title:
        conversation.title = title
        await _push(conversation)


async def _ask(conversation: Conversation, provider: Provider, model: str, question: str, answer: str) -> str:
    """The model's title, cleaned; empty if the provider fails or answers nothing usable."""
    model = model or provider.default_model
    if not model:
        return ""
    payload = {
        "model": model,
        "messages": [
            {"role": "system", "content": TITLE_INSTRUCTION},
            {
                "role": "user",
                "content": f"User: {question[:EXCERPT_CHARS]}\n\nAssistant: {answer[:EXCERPT_CHARS]}",
            },
        ],
        "max_tokens": MAX_TOKENS,
        "stream": False,
        "user": llm.user_id_for_provider(conversation.owner_id),
    }
    try:
        data = await asyncio.wait_for(llm.post_json(provider, "/chat/completions", payload), TIMEOUT_SECONDS)
    except (llm.ProviderError, TimeoutError) as exc:
        log.info("No title from the model for conversation %s: %s", conversation.pk, exc)
        return ""
    try:
        text = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    return clean_title(text) if isinstance(text, str) else ""


_THINKING = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_PREFIX = re.compile(r"^(title|titre|titel|标题)\s*[:：]\s*", re.IGNORECASE)
_WRAPPERS = "\"'`*_#“”‘’«»「」『』【】[]() \t"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_title(text: str) -> str:
    """A model's answer as a title: first line, no quotes or markup, at most 10 words and 80 characters."""
    text = _THINKING.sub("", text)
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = _CONTROL.sub("", line).strip()
    line = _PREFIX.sub("", line).strip(_WRAPPERS)
    line = line.rstrip(".。!！?？:;,，").strip(_WRAPPERS)
    words = line.split()[:MAX_TITLE_WORDS]
    title = " ".join(words)
    if len(title) > MAX_TITLE_CHARS:
        cut = title[:MAX_TITLE_CHARS]
        title = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return title


async def _push(conversation: Conversation) -> None:
    """Send the new title (header and sidebar) to every page open on the conversation."""
    html = await sync_to_async(_render)(conversation)
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS is configured"
    await layer.group_send(conversation.group_name, events.title(html))


def _render(conversation: Conversation) -> str:
    context = {
        "conversation": conversation,
        "sidebar": Conversation.objects.filter(owner_id=conversation.owner_id).sidebar(),
        "oob": True,
    }
    return render_to_string(f"{PAGE}#title", context) + render_to_string(f"{PAGE}#sidebar", context)
