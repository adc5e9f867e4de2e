"""Who may see what: the one owner-scoped getter of a conversation, for views (sync and async) and sockets."""

from __future__ import annotations

import uuid

from django.http import Http404

from conversations.models import Conversation, SidebarPage


def get_conversation(request, code) -> Conversation:
    """The signed-in user's conversation with this code, or 404: nobody else's exist for them."""
    try:
        return request.user.conversations.select_related("provider").get(code=code)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation") from None


async def aget_conversation(request, code) -> Conversation:
    user = await request.auser()
    try:
        return await Conversation.objects.for_user(user).select_related("provider").aget(code=code)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation") from None


async def aconversation_for_socket(user, code: str) -> Conversation | None:
    """The conversation a socket of `user` asks for by its URL's code, or None (not theirs, not a code)."""
    if user is None or not user.is_authenticated:
        return None
    try:
        return await Conversation.objects.for_user(user).aget(code=uuid.UUID(str(code)))
    except (ValueError, Conversation.DoesNotExist):
        return None


def sidebar_for(user) -> SidebarPage:
    """The first page of the user's conversation list."""
    return Conversation.objects.for_user(user).sidebar()
