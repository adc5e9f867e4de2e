"""The one catalogue of channel-layer events: what each carries, who sends it and who listens.

Every event that crosses the channel layer is built here, so a sender and its listeners cannot
disagree about a name or a field. Three kinds of address:

- a conversation's group (`Conversation.group_name`): every open page of it listens;
- its control group (`Conversation.control_group_name`): every generation running for it listens;
- one channel: a page that asked for a snapshot, or a generation's own control channel.

Values must survive msgpack (the Redis layer): plain dicts, lists, strings, numbers, booleans.
"""

from __future__ import annotations

from typing import Any

Event = dict[str, Any]

# -- to a conversation's group (pages) -----------------------------------------------------------

ADDED = "chat.added"  # a sent message and its reply(-ies) were saved: their HTML, rendered once
TRANSCRIPT = "chat.transcript"  # the tree changed (regenerate, edit, switch, pick...): re-render the branch
TITLE = "chat.title"  # the model named the conversation: the new header and sidebar, rendered once
DELTA = "generation.delta"  # new text of a streaming reply (seq-numbered) and the frames that show it
CONTEXT = "generation.context"  # older messages were left out of the prompt to fit the context window
EXTRAS = "generation.extras"  # reasoning and tool calls so far, whole (a late viewer needs no history)
FINISHED = "generation.finished"  # a reply ended (any status); the page re-renders it from the database
CHOICES_NOTE = "choices.note"  # the n choices of a reply are asked for one request each
# -- to one page's channel -------------------------------------------------------------------------
SNAPSHOT = "generation.snapshot"  # where a streaming reply stands, for a page that just connected
# -- to a conversation's control group (generations) -----------------------------------------------
STOP = "generation.stop"  # stop every reply streaming in the conversation
SYNC = "generation.sync"  # a page asks every streaming reply for a snapshot
PROBE = "generation.probe"  # a feed checks that its channel hears the group (pub/sub subscribes late)
# -- to a generation's own control channel ---------------------------------------------------------
END = "generation.end"  # the generation is over: its command listener ends


def added(html: str, reply_ids: list[int]) -> Event:
    return {"type": ADDED, "html": html, "reply_ids": reply_ids}


def transcript() -> Event:
    return {"type": TRANSCRIPT}


def title(html: str) -> Event:
    return {"type": TITLE, "html": html}


def delta(message_id: int, seq: int, text: str, frames: list[str] | None = None) -> Event:
    """`frames` are the rendered updates (chat); a playground delta carries plain text only."""
    event: Event = {"type": DELTA, "message_id": message_id, "seq": seq, "text": text}
    if frames is not None:
        event["frames"] = frames
    return event


def context(message_id: int, context_start_id: int) -> Event:
    return {"type": CONTEXT, "message_id": message_id, "context_start_id": context_start_id}


def extras(message_id: int, reasoning: str, thinking: bool, tool_calls: list[dict]) -> Event:
    return {
        "type": EXTRAS,
        "message_id": message_id,
        "reasoning": reasoning,
        "thinking": thinking,
        "tool_calls": tool_calls,
    }


def finished(message_id: int, status: str = "", text_shown: bool = False, seq: int | None = None) -> Event:
    """A reply ended. `text_shown`: a page that got every delta up to `seq` (the last one) already
    shows the final text and keeps its copy; any other page is sent the text again."""
    return {"type": FINISHED, "message_id": message_id, "status": status, "text_shown": text_shown, "seq": seq}


def choices_note(parent_id: int | None, count: int, own_request: bool) -> Event:
    return {"type": CHOICES_NOTE, "parent_id": parent_id, "count": count, "own_request": own_request}


def snapshot(message_id: int, seq: int, content: str, html: str | None = None) -> Event:
    """`html`: the reply's HTML as a page has it after every delta so far (chat); None for plain text."""
    event: Event = {"type": SNAPSHOT, "message_id": message_id, "seq": seq, "content": content}
    if html is not None:
        event["html"] = html
    return event


def stop() -> Event:
    return {"type": STOP}


def sync(reply_to: str) -> Event:
    return {"type": SYNC, "reply_to": reply_to}


def probe(token: str) -> Event:
    return {"type": PROBE, "token": token}


def end() -> Event:
    return {"type": END}
