"""The chat page: a conversation's transcript, New chat, rename, delete and the model picker."""

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST, require_safe
from django_htmx.http import HttpResponseClientRedirect, HttpResponseClientRefresh

from conversations.access import aget_conversation, get_conversation, sidebar_for
from conversations.accounts import quotas
from conversations.chat import settings_panel as chat_settings
from conversations.library import views as library
from conversations.models import Conversation
from conversations.providers import client as llm


@require_safe
@login_required
def home(request):
    return redirect("conversation", Conversation.objects.empty_for(request.user).code)


@require_POST
@login_required
def new_conversation(request):
    conversation = Conversation.objects.empty_for(request.user)
    chat_settings.start_new_chat(request, conversation)  # with the preset chosen next to the button
    return redirect("conversation", conversation.code)


def page(request, conversation: Conversation):
    """The chat page of a conversation (conversations/pages.py hands it over)."""
    conversation.messages.stale().mark_interrupted()
    transcript = library.transcript_context(conversation)  # the newest page of the branch; older ones on scroll
    return render(
        request,
        "conversations/conversation.html",
        {
            "conversation": conversation,
            **transcript,
            "sidebar": sidebar_for(request.user),
            "busy": any(m.is_streaming for m in transcript["branch"]),
        },
    )


@require_POST
@login_required
def rename(request, code):
    conversation = get_conversation(request, code)
    title = " ".join(request.POST.get("title", "").split())[:200]
    context: dict[str, Any] = {"conversation": conversation}
    if not title:
        context["title_error"] = _("A title cannot be empty.")
        return render(request, "conversations/conversation.html#title", context)
    conversation.title = title
    conversation.title_source = Conversation.TitleSource.USER  # never replaced by a model-generated title
    conversation.save(update_fields=["title", "title_source"])
    title_html = render(request, "conversations/conversation.html#title", context).content
    sidebar_context = {**context, "sidebar": sidebar_for(request.user), "oob": True}
    sidebar_html = render(request, "conversations/conversation.html#sidebar", sidebar_context).content
    return HttpResponse(title_html + sidebar_html)


@require_POST
@login_required
def delete(request, code):
    get_conversation(request, code).delete()
    if request.htmx:
        return HttpResponseClientRedirect("/")
    return redirect("home")


@require_GET
@login_required
async def model_options(request, code):
    """The provider's models as a picker, or a clear message when it cannot be reached."""
    conversation = await aget_conversation(request, code)
    context: dict[str, Any] = {"conversation": conversation, "models": [], "models_error": ""}
    if conversation.provider is None:
        context["models_error"] = _("This conversation has no provider any more.")
    else:
        try:
            context["models"] = await llm.list_models(conversation.provider)
        except llm.ProviderError as exc:
            context["models_error"] = _("Could not list models: %(error)s") % {"error": exc.user_message}
    if conversation.model and conversation.model not in context["models"] and not context["models_error"]:
        context["models"].insert(0, conversation.model)
    if context["models"]:
        await _only_allowed_models(await request.auser(), conversation, context)
    return render(request, "conversations/conversation.html#model_picker", context)


async def _only_allowed_models(user, conversation, context):
    """Offer only the models the account may use; move the conversation off one it may not."""
    context["models"] = await quotas.aallowed_models(user, context["models"])
    if not context["models"]:
        context["models_error"] = _("Your account may not use any model of this provider. Ask an administrator.")
    elif conversation.model not in context["models"]:
        conversation.model = context["models"][0]
        await conversation.asave(update_fields=["model"])


@require_POST
@login_required
async def set_model(request, code):
    conversation = await aget_conversation(request, code)
    model = request.POST.get("model", "").strip()
    context: dict[str, Any] = {"conversation": conversation, "models": [], "models_error": ""}
    try:
        context["models"] = await llm.list_models(conversation.provider)
    except llm.ProviderError as exc:
        context["models_error"] = _("Could not list models: %(error)s") % {"error": exc.user_message}
    else:
        allowed = await quotas.aallowed_models(await request.auser(), context["models"])
        if model not in context["models"]:
            context["models_error"] = _("The provider does not offer a model named “%(model)s”.") % {
                "model": model[:100]
            }
        elif model not in allowed:
            context["models_error"] = _("Your account may not use the model “%(model)s”.") % {"model": model[:100]}
        else:
            old_model, conversation.model = conversation.model, model
            await conversation.asave(update_fields=["model"])
            context["saved"] = True
            # An untouched new chat takes the new model's admin defaults; the page reloads to show them.
            if await sync_to_async(chat_settings.apply_model_change)(conversation, old_model):
                return HttpResponseClientRefresh()
    return render(request, "conversations/conversation.html#model_picker", context)
