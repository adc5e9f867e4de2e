"""Accounts: sign-up, the language switcher, the login message, and each user's account page.

Sign-up follows its mode (open, approval, closed); the login page tells an account awaiting
approval so; the account page shows usage and the review notice, exports all the user's data and
deletes the account.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model, login, logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.exceptions import ValidationError
from django.db.models import F
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django.views.i18n import set_language as django_set_language

from conversations import events, i18n
from conversations.accounts import quotas, usage
from conversations.library import transcripts
from conversations.models import Conversation, Message, Profile

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def signup_open() -> bool:
    return settings.SIGNUP_MODE != "closed"


def signup_needs_approval() -> bool:
    return settings.SIGNUP_MODE == "approval"


@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect("home")
    if not signup_open():
        return render(request, "account/signup_closed.html", status=403)
    form: UserCreationForm[User] = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save(commit=False)
        user.is_active = not signup_needs_approval()  # an admin activates it (approval mode)
        user.save()
        if not user.is_active:
            return render(request, "account/pending.html", {"username": user.get_username()})
        login(request, user)
        return redirect("home")
    context = {"form": form, "needs_approval": signup_needs_approval()}
    return render(request, "registration/signup.html", context)


@require_POST
def set_language(request):
    """Django's set_language (cookie, redirect to `next`), and the choice saved for a signed-in user."""
    response = django_set_language(request)
    language = i18n.supported(request.POST.get("language"))
    if language and request.user.is_authenticated:
        profile, _created = Profile.objects.get_or_create(user=request.user)
        if profile.language != language:
            profile.language = language
            profile.save(update_fields=["language"])
    return response


class LoginForm(AuthenticationForm):
    """Tells the owner of an account that awaits approval (or was deactivated) why they cannot log in.

    Only someone who knows the password learns that; everyone else gets the usual message.
    """

    error_messages = {
        **AuthenticationForm.error_messages,
        "inactive": _(
            "This account is not active yet: an administrator has to approve it (or has deactivated it). "
            "Try again later."
        ),
    }

    def clean(self):
        try:
            return super().clean()
        except ValidationError:
            username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
            user = get_user_model()._default_manager.filter(username=username).first() if username else None
            if user is not None and not user.is_active and password and user.check_password(password):
                raise ValidationError(self.error_messages["inactive"], code="inactive") from None
            raise


class DeleteAccountForm(forms.Form):
    password = forms.CharField(
        label=_("Your password"), strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )
    confirm = forms.BooleanField(label=_("I understand that all my conversations will be deleted for good."))

    def __init__(self, user, *args, **kwargs):
        self.user = user
        super().__init__(*args, **kwargs)

    def clean_password(self):
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise ValidationError(_("That is not your password."), code="wrong_password")
        return password


def _account_context(user, delete_form=None) -> dict:
    today = timezone.localdate()
    rows = user.usage.all()
    start = today - timedelta(days=29)
    daily = usage.per_day(rows, start, today)
    limits = quotas.limits_for(user)
    used_today, used_month = quotas.tokens_used(user)
    return {
        "today_totals": daily[-1].totals,
        "month_totals": usage.totals(rows.filter(day__gte=today.replace(day=1), day__lte=today)),
        "all_totals": usage.totals(rows),
        "daily": [d for d in reversed(daily) if d.totals.messages or d.totals.tokens],
        "chart": usage.chart(daily),
        "models": usage.per_model(rows),
        "limits": limits,
        "left_today": max(0, limits.tokens_per_day - used_today) if limits.tokens_per_day else None,
        "left_month": max(0, limits.tokens_per_month - used_month) if limits.tokens_per_month else None,
        "delete_form": delete_form or DeleteAccountForm(user),
    }


@require_safe
@login_required
def account(request):
    return render(request, "account/account.html", _account_context(request.user))


def user_data(user) -> dict:
    """Everything stored about `user` that is theirs to take away (review fields excepted)."""
    conversations = list(Conversation.objects.for_user(user).select_related("owner", "provider").order_by("pk"))
    grouped = transcripts.messages_by_conversation(conversations)
    profile = Profile.objects.filter(user=user).first()
    return {
        "exported_at": timezone.now(),
        "account": {
            "username": user.get_username(),
            "email": user.email,
            "date_joined": user.date_joined,
            "last_login": user.last_login,
            "language": profile.language if profile else "",
        },
        "conversations": [
            transcripts.conversation_dict(c, grouped.get(c.pk, []), for_reviewer=False) for c in conversations
        ],
        "presets": list(
            user.presets.order_by("name").values(
                "name", "model", "system_prompt", "params", provider_name=F("provider__name")
            )
        ),
        "usage": list(
            user.usage.order_by("day", "model").values(
                "day", "model", "provider_name", "prompt_tokens", "completion_tokens", "messages"
            )
        ),
    }


@require_safe
@login_required
def export_data(request):
    user = request.user
    response = HttpResponse(transcripts.to_json(user_data(user)), content_type="application/json; charset=utf-8")
    name = f"chat-data-{user.get_username()}-{timezone.localdate():%Y%m%d}.json"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _stop_running_replies(user):
    """Stop the user's replies still being written (in whatever process), before their rows go."""
    streaming = Conversation.objects.for_user(user).filter(messages__status=Message.Status.STREAMING).distinct()
    layer = get_channel_layer()
    assert layer is not None, "settings.CHANNEL_LAYERS has a default layer"
    for conversation in streaming:
        async_to_sync(layer.group_send)(conversation.control_group_name, events.stop())


@require_POST
@login_required
def delete_account(request):
    user = request.user
    form = DeleteAccountForm(user, request.POST)
    if not form.is_valid():
        return render(request, "account/account.html", _account_context(user, form), status=400)
    username = user.get_username()
    _stop_running_replies(user)
    logout(request)
    user.delete()  # its conversations, messages, presets, usage and profile go with it
    return render(request, "account/deleted.html", {"username": username})


urlpatterns = [
    path("signup/", signup, name="signup"),
    path("i18n/setlang/", set_language, name="set_language"),
    path("account/", account, name="account"),
    path("account/export/", export_data, name="account_export"),
    path("account/delete/", delete_account, name="account_delete"),
]
