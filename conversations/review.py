"""Conversation review by staff: who may, the audit trail of every look, transcripts and exports.

A reviewer is active staff with the `conversations.review_conversation` permission (superusers
have every permission). Every time staff open another user's conversation — the transcript, an
export, the delete confirmation that lists its messages — an `AuditRecord` is written first.
"""

from __future__ import annotations

from django.db.models import Sum
from django.http import HttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from conversations.library import transcripts
from conversations.models import AuditRecord, Conversation, Message

PERMISSION = "conversations.review_conversation"


class Action:
    TRANSCRIPT = "transcript"
    EXPORT_JSON = "export-json"
    EXPORT_MARKDOWN = "export-markdown"
    REVIEW = "review"
    DELETE_VIEW = "delete-view"
    DELETE = "delete"

    choices = [
        (TRANSCRIPT, _("Opened the transcript")),
        (EXPORT_JSON, _("Exported as JSON")),
        (EXPORT_MARKDOWN, _("Exported as Markdown")),
        (REVIEW, _("Changed the review")),
        (DELETE_VIEW, _("Opened the delete confirmation")),
        (DELETE, _("Deleted")),
    ]


def can_review(user) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm(PERMISSION))


def audit(actor, conversations, action: str, detail: str = "") -> None:
    """Record that `actor` looked at `conversations` (their own ones excepted)."""
    records = [
        AuditRecord(
            actor=actor,
            actor_name=actor.get_username(),
            conversation=conversation,
            conversation_code=conversation.code,
            owner_name=conversation.owner.get_username(),
            action=action,
            detail=detail[:300],
        )
        for conversation in conversations
        if conversation.owner_id != actor.pk
    ]
    AuditRecord.objects.bulk_create(records)


def transcript_context(conversation: Conversation) -> dict:
    """What the review page shows: every message of every branch, with its settings and usage."""
    messages = list(conversation.messages.order_by("pk"))
    nodes = transcripts.tree(messages, conversation.active_leaf_id)
    replies = conversation.messages.filter(role=Message.Role.ASSISTANT)
    usage = replies.aggregate(prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
    return {
        "conversation": conversation,
        "nodes": nodes,
        "message_count": len(messages),
        "reply_count": sum(1 for m in messages if m.role == Message.Role.ASSISTANT),
        "branch_count": sum(1 for n in nodes if n.version == 1),
        "usage": {k: v or 0 for k, v in usage.items()},
        "params_json": transcripts.to_json(conversation.params) if conversation.params else "",
        "statuses": sorted({m.status for m in messages if m.role == Message.Role.ASSISTANT}),
    }


def export_response(conversations: list[Conversation], fmt: str) -> HttpResponse:
    """One file with the conversations, as JSON or Markdown (an attachment)."""
    grouped = transcripts.messages_by_conversation(conversations)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    if fmt == "json":
        data = {
            "exported_at": timezone.now(),
            "conversations": [
                transcripts.conversation_dict(c, grouped.get(c.pk, []), for_reviewer=True) for c in conversations
            ],
        }
        response = HttpResponse(transcripts.to_json(data), content_type="application/json; charset=utf-8")
        name = f"conversations-{stamp}.json"
    else:
        text = "\n\n---\n\n".join(transcripts.to_markdown(c, grouped.get(c.pk, [])) for c in conversations)
        response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
        name = f"conversations-{stamp}.md"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
