from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST, require_safe
from django_htmx.http import HttpResponseClientRedirect

from . import llm
from .models import Conversation, Provider, context_start_of


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
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})


def _empty_conversation(user) -> Conversation:
    """Reuse the user's untouched conversation, so New chat never piles up empty ones."""
    conversation = Conversation.objects.for_user(user).filter(title="", messages__isnull=True).first()
    if conversation is None:
        provider = Provider.objects.default()
        conversation = Conversation.objects.create(owner=user, provider=provider, model=provider.default_model)
    return conversation


@require_safe
@login_required
def home(request):
    return redirect("conversation", _empty_conversation(request.user).code)


@require_POST
@login_required
def new_conversation(request):
    return redirect("conversation", _empty_conversation(request.user).code)


@require_safe
@login_required
def conversation(request, code):
    conversation = _get_conversation(request, code)
    conversation.messages.stale().mark_interrupted()
    branch = conversation.branch()
    return render(
        request,
        "conversations/conversation.html",
        {
            "conversation": conversation,
            "branch": branch,
            "context_start_id": context_start_of(branch),
            "sidebar": sidebar_for(request.user),
            "busy": any(m.is_streaming for m in branch),
        },
    )


@require_POST
@login_required
def rename(request, code):
    conversation = _get_conversation(request, code)
    title = " ".join(request.POST.get("title", "").split())[:200]
    context = {"conversation": conversation}
    if not title:
        context["title_error"] = "A title cannot be empty."
        return render(request, "conversations/conversation.html#title", context)
    conversation.title = title
    conversation.save(update_fields=["title"])
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
        context["models_error"] = "This conversation has no provider any more."
    else:
        try:
            context["models"] = await llm.list_models(conversation.provider)
        except llm.ProviderError as exc:
            context["models_error"] = f"Could not list models: {exc.user_message}"
    if conversation.model and conversation.model not in context["models"] and not context["models_error"]:
        context["models"].insert(0, conversation.model)
    return render(request, "conversations/conversation.html#model_picker", context)


@require_POST
@login_required
async def set_model(request, code):
    conversation = await _aget_conversation(request, code)
    model = request.POST.get("model", "").strip()
    context = {"conversation": conversation, "models": [], "models_error": ""}
    try:
        context["models"] = await llm.list_models(conversation.provider)
    except llm.ProviderError as exc:
        context["models_error"] = f"Could not list models: {exc.user_message}"
    else:
        if model not in context["models"]:
            context["models_error"] = f"The provider does not offer a model named “{model[:100]}”."
        else:
            conversation.model = model
            await conversation.asave(update_fields=["model"])
            context["saved"] = True
    return render(request, "conversations/conversation.html#model_picker", context)
