from asgiref.sync import sync_to_async
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST, require_safe
from django_htmx.http import HttpResponseClientRedirect, HttpResponseClientRefresh

from . import accounts, chat_settings, library, llm, playground, quotas
from .models import Conversation, Provider


def _get_conversation(request, code) -> Conversation:
    """The one place that decides who may see a conversation: its owner, or nobody (404)."""
    try:
        return request.user.conversations.select_related("provider").get(code=code)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation") from None


async def _aget_conversation(request, code) -> Conversation:
    user = await request.auser()
    try:
        return await Conversation.objects.for_user(user).select_related("provider").aget(code=code)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation") from None


def sidebar_for(user):
    return Conversation.objects.for_user(user).sidebar()


@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect("home")
    if not accounts.signup_open():
        return render(request, "account/signup_closed.html", status=403)
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save(commit=False)
        user.is_active = not accounts.signup_needs_approval()  # an admin activates it (approval mode)
        user.save()
        if not user.is_active:
            return render(request, "account/pending.html", {"username": user.get_username()})
        login(request, user)
        return redirect("home")
    context = {"form": form, "needs_approval": accounts.signup_needs_approval()}
    return render(request, "registration/signup.html", context)


def _empty_conversation(user) -> Conversation:
    """Reuse the user's untouched conversation, so New chat never piles up empty ones."""
    conversation = (
        Conversation.objects.for_user(user).filter(title="", messages__isnull=True, mode=Conversation.Mode.CHAT).first()
    )
    if conversation is None:
        provider = Provider.objects.default()
        conversation = Conversation.objects.create(
            owner=user,
            provider=provider,
            model=provider.default_model,
            **chat_settings.model_defaults(provider, provider.default_model),  # the admin's settings for it
        )
    return conversation


@require_safe
@login_required
def home(request):
    return redirect("conversation", _empty_conversation(request.user).code)


@require_POST
@login_required
def new_conversation(request):
    conversation = _empty_conversation(request.user)
    chat_settings.start_new_chat(request, conversation)  # with the preset chosen next to the button
    return redirect("conversation", conversation.code)


@require_safe
@login_required
def conversation(request, code):
    conversation = _get_conversation(request, code)
    if conversation.mode == Conversation.Mode.COMPLETION:
        return playground.page(request, conversation)  # the text-completion playground
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
    conversation = _get_conversation(request, code)
    title = " ".join(request.POST.get("title", "").split())[:200]
    context = {"conversation": conversation}
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
    _get_conversation(request, code).delete()
    if request.htmx:
        return HttpResponseClientRedirect("/")
    return redirect("home")


@require_GET
@login_required
async def model_options(request, code):
    """The provider's models as a picker, or a clear message when it cannot be reached."""
    conversation = await _aget_conversation(request, code)
    context = {"conversation": conversation, "models": [], "models_error": ""}
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
    conversation = await _aget_conversation(request, code)
    model = request.POST.get("model", "").strip()
    context = {"conversation": conversation, "models": [], "models_error": ""}
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
