"""The text-completion playground's page and the saving of its settings (its socket: consumer.py).

A conversation in mode "completion" shows templates/conversations/playground.html instead of the
chat transcript. The page's form carries the prompt, the suffix and every completion parameter:
a change saves them (htmx POST, all or nothing, checked by providers/params.py), and Run
sends them over the playground's websocket (playground/consumer.py), which checks
them again, saves the run and starts a `CompletionGeneration`.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_POST

from conversations.access import get_conversation, sidebar_for
from conversations.forms import build_fields
from conversations.models import Conversation
from conversations.playground import runs as run_views
from conversations.providers import params as P

PAGE = "conversations/playground.html"


def field_values(conversation: Conversation, values=None) -> dict:
    """The strings the form shows: what was posted, else the saved settings."""
    return values if values is not None else P.form_values(conversation.params, P.COMPLETION)


def form_context(conversation: Conversation, values=None, errors=None) -> dict:
    values = field_values(conversation, values)
    fields = {f.name: f for f in build_fields(P.COMPLETION, values, errors or {})}
    return {
        "conversation": conversation,
        "suffix_field": fields.pop("suffix"),
        "fields": list(fields.values()),
        "errors": errors or {},
        "logprobs_choices": [str(i) for i in range(6)],
    }


def page(request, conversation: Conversation):
    """The playground page of a completion conversation (conversations/pages.py hands it over)."""
    conversation.messages.stale().mark_interrupted()
    runs = run_views.runs_of(conversation)
    context = {
        **form_context(conversation),
        "runs": runs,
        "prompt": run_views.last_prompt(conversation),
        "sidebar": sidebar_for(request.user),
        "busy": any(run.is_streaming for run in runs),
    }
    return render(request, PAGE, context)


@require_POST
@login_required
def new_completion(request):
    return redirect("conversation", Conversation.objects.empty_for(request.user, Conversation.Mode.COMPLETION).code)


@require_POST
@login_required
def save_settings(request, code):
    """Save the completion parameters (all or nothing); only the status and error slots are swapped in."""
    conversation = get_conversation(request, code)
    result = P.validate(request.POST, P.COMPLETION)
    if result.ok and conversation.mode == Conversation.Mode.COMPLETION:
        conversation.params = result.params
        conversation.save(update_fields=["params"])
    context = {
        **form_context(conversation, request.POST, result.errors),
        "status": "error" if result.errors else "saved",
    }
    return render(request, f"{PAGE}#form_feedback", context)


urlpatterns = [
    path("c/new/completion/", new_completion, name="new_completion"),
    path("c/<uuid:code>/playground/settings/", save_settings, name="playground_settings"),
]
