"""The one URL of a conversation: the chat page or the text-completion playground, by its mode."""

from django.contrib.auth.decorators import login_required
from django.views.decorators.http import require_safe

from conversations.access import get_conversation
from conversations.chat import views as chat
from conversations.models import Conversation
from conversations.playground import views as playground


@require_safe
@login_required
def conversation(request, code):
    conversation = get_conversation(request, code)
    if conversation.mode == Conversation.Mode.COMPLETION:
        return playground.page(request, conversation)
    return chat.page(request, conversation)
