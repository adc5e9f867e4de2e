"""A conversation with all its branches: as a tree for reading, as JSON and as Markdown for export.

Used by the admin's review pages and exports (`review.py`) and by a user's own data export
(`accounts.py`). Nothing here checks access: callers pass conversations they may show.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from django.utils.translation import gettext as _

from conversations.models import Conversation, Message

MESSAGE_FIELDS = [
    "id",
    "parent_id",
    "role",
    "content",
    "reasoning",
    "reasoning_ms",
    "tool_calls",
    "tool_call_id",
    "choice_index",
    "status",
    "finish_reason",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "usage_estimated",
    "error",
    "ttft_ms",
    "duration_ms",
    "created_at",
]


@dataclass
class Node:
    """One message in reading order, with where it sits among the branches."""

    message: Message
    level: int  # how many branch points lie above it (0 on a conversation that never branched)
    version: int  # which of its siblings it is (1-based), 0 when it has none
    versions: int
    active: bool  # on the branch its owner sees

    @property
    def indent(self) -> int:
        return min(self.level, 8)

    @property
    def tool_calls_json(self) -> str:
        return to_json(self.message.tool_calls) if self.message.tool_calls else ""


def tree(messages: list[Message], active_leaf_id: int | None) -> list[Node]:
    """All messages in depth-first order, oldest sibling first.

    A linear exchange stays at one level; each alternative version (an edit or a regeneration)
    and everything under it is one level deeper than where the versions branch off.
    """
    if not messages:
        return []
    by_id: dict[int | None, Message] = {m.pk: m for m in messages}
    children: dict[int | None, list[Message]] = defaultdict(list)
    for m in sorted(messages, key=lambda m: m.pk):
        parent = m.parent_id if m.parent_id in by_id else None
        children[parent].append(m)
    leaf = by_id.get(active_leaf_id) or max(messages, key=lambda m: m.pk)
    active = set()
    node: Message | None = leaf
    while node is not None:
        active.add(node.pk)
        node = by_id.get(node.parent_id)

    nodes: list[Node] = []
    # Iterative, so a long conversation (a deep chain) cannot hit the recursion limit.
    stack: list[tuple[Message, int, int, int]] = []

    def push_children(parent_id, level):
        kids = children.get(parent_id, [])
        branched = len(kids) > 1
        for index in range(len(kids) - 1, -1, -1):
            stack.append((kids[index], level + 1 if branched else level, index + 1 if branched else 0, len(kids)))

    push_children(None, 0)
    while stack:
        message, level, version, versions = stack.pop()
        nodes.append(Node(message, level, version, versions if version else 0, message.pk in active))
        push_children(message.pk, level)
    return nodes


def message_dict(message: Message) -> dict:
    return {"parent" if name == "parent_id" else name: getattr(message, name) for name in MESSAGE_FIELDS}


def conversation_dict(conversation: Conversation, messages: list[Message], *, for_reviewer: bool) -> dict:
    """Everything stored about one conversation. Review fields only for reviewers, never for its owner."""
    data = {
        "code": str(conversation.code),
        "title": conversation.title,
        "owner": conversation.owner.username,
        "provider": conversation.provider.name if conversation.provider else None,
        "model": conversation.model,
        "mode": conversation.mode,
        "system_prompt": conversation.system_prompt,
        "params": conversation.params,
        "pinned": conversation.pinned,
        "archived": conversation.archived,
        "active_leaf": conversation.active_leaf_id,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "messages": [message_dict(m) for m in messages],
    }
    if for_reviewer:
        data["flagged"] = conversation.flagged
        data["review_note"] = conversation.review_note
    return data


def messages_by_conversation(conversations: list[Conversation]) -> dict[int, list[Message]]:
    """The messages of many conversations in one query, grouped, oldest first."""
    grouped: dict[int, list[Message]] = defaultdict(list)
    ids = [c.pk for c in conversations]
    for start in range(0, len(ids), 500):  # stay below SQLite's limit on query parameters
        for message in Message.objects.filter(conversation_id__in=ids[start : start + 500]).order_by("pk").iterator():
            grouped[message.conversation_id].append(message)
    return grouped


def to_json(data) -> str:
    return json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2)


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


def to_markdown(conversation: Conversation, messages: list[Message]) -> str:
    """A readable transcript with every branch; model text is kept as the model wrote it."""
    lines = [f"# {conversation.title or conversation.code}", ""]
    lines.append(f"- {_('Owner')}: {conversation.owner.username}")
    lines.append(f"- {_('Provider')}: {conversation.provider.name if conversation.provider else '—'}")
    lines.append(f"- {_('Model')}: {conversation.model or '—'}")
    lines.append(f"- {_('Created')}: {timezone.localtime(conversation.created_at):%Y-%m-%d %H:%M %Z}")
    if conversation.params:
        lines.append(f"- {_('Settings')}: `{json.dumps(conversation.params, ensure_ascii=False)}`")
    lines.append("")
    if conversation.system_prompt:
        lines += [f"## {_('System prompt')}", "", _quote(conversation.system_prompt), ""]
    for node in tree(messages, conversation.active_leaf_id):
        m = node.message
        heading = "#" * min(2 + node.level, 6) + " " + m.get_role_display()
        facts = []
        if node.version:
            facts.append(_("version %(v)s of %(n)s") % {"v": node.version, "n": node.versions})
        if m.role == Message.Role.ASSISTANT:
            if m.model:
                facts.append(m.model)
            if m.total_tokens is not None:
                facts.append(_("%(p)s + %(c)s tokens") % {"p": m.prompt_tokens or 0, "c": m.completion_tokens or 0})
            if m.status != Message.Status.COMPLETE:
                facts.append(m.status)
        if not node.active:
            facts.append(_("not on the shown branch"))
        lines.append(heading + (f" ({', '.join(facts)})" if facts else ""))
        lines.append("")
        if m.reasoning:
            lines += [_("Reasoning:"), "", _quote(m.reasoning), ""]
        lines.append(m.content or "*(" + _("empty") + ")*")  # no _() in f-strings: makemessages skips them
        if m.tool_calls:
            lines += ["", "```json", json.dumps(m.tool_calls, ensure_ascii=False, indent=2), "```"]
        if m.error:
            lines += ["", "**" + _("Error:") + "** " + m.error]
        lines.append("")
    return "\n".join(lines)
