"""The admin: providers and their models, conversation review (audited), the audit trail, usage and accounts."""

import uuid
from datetime import date, datetime, time, timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from conversations import review
from conversations.accounts import usage
from conversations.forms import ProviderModelForm
from conversations.models import AuditRecord, Conversation, Message, Profile, Provider, ProviderModel, Usage


def mask_key(key: str) -> str:
    if not key:
        return "—"
    return "•" * 8 + (key[-4:] if len(key) >= 12 else "")


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(assume_scheme="https", help_text=_("Including /v1, e.g. https://api.openai.com/v1"))
    # The key is write-only: never rendered back into the page; left empty, it stays as it was.
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("Write-only. Leave empty to keep the current key."),
    )
    clear_api_key = forms.BooleanField(required=False, help_text=_("Remove the stored key."))

    class Meta:
        model = Provider
        fields = ["name", "base_url", "api_key", "enabled", "is_default", "default_model", "context_length"]

    def save(self, commit=True):
        provider = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key"):
            provider.api_key = ""
        elif not self.cleaned_data.get("api_key") and provider.pk:
            provider.api_key = Provider.objects.get(pk=provider.pk).api_key
        if commit:
            provider.save()
        return provider


class ProviderModelInline(admin.TabularInline):
    model = ProviderModel
    form = ProviderModelForm  # default settings pass the same checks as the chat settings panel
    extra = 1


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "base_url", "masked_key", "enabled", "is_default", "is_bundled", "context_length"]
    list_filter = ["enabled", "is_default"]
    inlines = [ProviderModelInline]

    @admin.display(description=_("API key"))
    def masked_key(self, provider):
        return mask_key(provider.api_key)


class InputFilter(admin.ListFilter):
    """A filter typed into boxes: with thousands of users a list of links would not do."""

    template = "admin/conversations/input_filter.html"
    fields: list[tuple[str, str | Promise, str]] = []  # (query parameter, label, input type)

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        for name, _label, _type in self.fields:
            if name in params:
                value = params.pop(name)
                value = (value[-1] if isinstance(value, list) else value).strip()
                if value:
                    self.used_parameters[name] = value

    def has_output(self):
        return True

    def expected_parameters(self):
        return [name for name, _label, _type in self.fields]

    def choices(self, changelist):
        names = self.expected_parameters()
        yield {
            "fields": [
                {"name": name, "label": label, "type": type_, "value": self.used_parameters.get(name, "")}
                for name, label, type_ in self.fields
            ],
            "keep": [(k, v) for k, v in changelist.params.items() if k not in names],
            "clear_url": changelist.get_query_string(remove=names),
            "active": bool(self.used_parameters),
        }


class OwnerFilter(InputFilter):
    title = _("user")
    fields = [("owner", _("Username"), "text")]

    def queryset(self, request, queryset):
        if "owner" in self.used_parameters:
            return queryset.filter(owner__username=self.used_parameters["owner"])
        return queryset


class ActivityRangeFilter(InputFilter):
    title = _("last activity")
    fields = [("active_from", _("From"), "date"), ("active_to", _("To (inclusive)"), "date")]

    def queryset(self, request, queryset):
        try:
            dates = {k: date.fromisoformat(str(v)) for k, v in self.used_parameters.items()}
        except ValueError as exc:
            raise IncorrectLookupParameters(exc) from exc
        if "active_from" in dates:
            queryset = queryset.filter(
                updated_at__gte=timezone.make_aware(datetime.combine(dates["active_from"], time.min))
            )
        if "active_to" in dates:
            end = dates["active_to"] + timedelta(days=1)
            queryset = queryset.filter(updated_at__lt=timezone.make_aware(datetime.combine(end, time.min)))
        return queryset


class MessageStatusFilter(admin.SimpleListFilter):
    title = _("message status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return Message.Status.choices

    def queryset(self, request, queryset):
        if self.value():
            # A subquery (served by the status index), not a join: no duplicates, no DISTINCT.
            return queryset.filter(pk__in=Message.objects.filter(status=self.value()).values("conversation_id"))
        return queryset


class ReviewChangeList(ChangeList):
    """Counts messages and tokens for the shown page only, in one grouped query."""

    def get_results(self, request):
        super().get_results(request)
        rows = (
            Message.objects.filter(conversation__in=[c.pk for c in self.result_list])
            .values("conversation_id")
            .annotate(n=Count("pk"), tokens=Sum(Coalesce("prompt_tokens", 0) + Coalesce("completion_tokens", 0)))
            .order_by()
        )
        counts = {row["conversation_id"]: (row["n"], row["tokens"] or 0) for row in rows}
        for conversation in self.result_list:
            conversation._messages, conversation._tokens = counts.get(conversation.pk, (0, 0))


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    """Review: only reviewers see conversations; every look at one is audited (see review.py)."""

    list_display = ["__str__", "owner", "provider", "model", "message_count", "tokens", "flagged", "updated_at"]
    list_filter = [OwnerFilter, "model", "provider", MessageStatusFilter, "flagged", ActivityRangeFilter]
    search_fields = ["title"]  # and message text and usernames: see get_search_results
    search_help_text = _("Searches titles and message text; an exact username finds that user's conversations.")
    list_select_related = ["owner", "provider"]
    show_facets = admin.ShowFacets.NEVER
    show_full_result_count = False
    fields = ["flagged", "review_note"]
    actions = ["export_json", "export_markdown"]
    change_form_template = "admin/conversations/conversation/review.html"
    save_on_top = True

    # -- who may do what --------------------------------------------------------------------

    def has_review_permission(self, request):
        return review.can_review(request.user)

    def has_view_permission(self, request, obj=None):
        return review.can_review(request.user)

    def has_change_permission(self, request, obj=None):
        return review.can_review(request.user)  # flagging and the review note

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return review.can_review(request.user) and super().has_delete_permission(request, obj)

    # -- the list -----------------------------------------------------------------------------

    def get_changelist(self, request, **kwargs):
        return ReviewChangeList

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        in_messages = Message.objects.filter(content__icontains=term).values("conversation_id")
        found = Q(title__icontains=term) | Q(owner__username=term) | Q(pk__in=in_messages)
        return queryset.filter(found), False

    @admin.display(description=_("messages"))
    def message_count(self, conversation):
        return getattr(conversation, "_messages", None)

    @admin.display(description=_("tokens"))
    def tokens(self, conversation):
        return getattr(conversation, "_tokens", None)

    # -- the transcript, the review, exports: each audited ------------------------------------

    def get_urls(self):
        export = self.admin_site.admin_view(self.export_view)
        return [
            path("<path:object_id>/export/<str:fmt>/", export, name="conversations_conversation_export"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        conversation = self.get_object(request, unquote(object_id))
        if conversation is None or not self.has_view_or_change_permission(request, conversation):
            return super().change_view(request, object_id, form_url, extra_context)  # its 404 or 403
        if request.method == "GET":
            review.audit(request.user, [conversation], review.Action.TRANSCRIPT)
        context = {**review.transcript_context(conversation), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, context)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if form.changed_data:
            detail = ", ".join(form.changed_data) + (
                f" (flagged: {obj.flagged})" if "flagged" in form.changed_data else ""
            )
            review.audit(request.user, [obj], review.Action.REVIEW, detail)

    def get_deleted_objects(self, objs, request):
        # The confirmation page lists the messages, so showing it is a look at the conversation.
        confirmed = request.method == "POST" and request.POST.get("post")
        action = review.Action.DELETE if confirmed else review.Action.DELETE_VIEW
        review.audit(request.user, list(objs), action)
        return super().get_deleted_objects(objs, request)

    def export_view(self, request, object_id, fmt):
        if fmt not in ("json", "md"):
            raise Http404
        conversation = self.get_object(request, unquote(object_id))
        if conversation is None:
            raise Http404
        if not self.has_review_permission(request):
            raise PermissionDenied
        action = review.Action.EXPORT_JSON if fmt == "json" else review.Action.EXPORT_MARKDOWN
        review.audit(request.user, [conversation], action)
        return review.export_response([conversation], fmt)

    @admin.action(description=_("Export selected conversations as JSON"), permissions=["review"])
    def export_json(self, request, queryset):
        conversations = list(queryset.select_related("owner", "provider"))
        review.audit(request.user, conversations, review.Action.EXPORT_JSON)
        return review.export_response(conversations, "json")

    @admin.action(description=_("Export selected conversations as Markdown"), permissions=["review"])
    def export_markdown(self, request, queryset):
        conversations = list(queryset.select_related("owner", "provider"))
        review.audit(request.user, conversations, review.Action.EXPORT_MARKDOWN)
        return review.export_response(conversations, "md")


class AuditActionFilter(admin.SimpleListFilter):
    title = _("action")
    parameter_name = "action"

    def lookups(self, request, model_admin):
        return review.Action.choices

    def queryset(self, request, queryset):
        return queryset.filter(action=self.value()) if self.value() else queryset


@admin.register(AuditRecord)
class AuditRecordAdmin(admin.ModelAdmin):
    """The audit trail: listable, never added, edited or deleted here (not even by superusers)."""

    list_display = ["at", "actor_name", "action_label", "owner_name", "conversation_link", "detail"]
    list_filter = [AuditActionFilter, "at"]
    search_fields = ["actor_name", "owner_name"]  # and a conversation's code: see get_search_results
    search_help_text = _("Searches staff and owner names; a conversation's code finds its records.")
    show_facets = admin.ShowFacets.NEVER
    show_full_result_count = False
    list_per_page = 100

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_search_results(self, request, queryset, search_term):
        try:
            return queryset.filter(conversation_code=uuid.UUID(search_term.strip())), False
        except ValueError:
            return super().get_search_results(request, queryset, search_term)

    @admin.display(description=_("action"), ordering="action")
    def action_label(self, record):
        return dict(review.Action.choices).get(record.action, record.action)

    @admin.display(description=_("conversation"))
    def conversation_link(self, record):
        if record.conversation_id is None:
            return format_html("{} <span class='quiet'>({})</span>", record.conversation_code, _("deleted"))
        url = reverse("admin:conversations_conversation_change", args=[record.conversation_id])
        return format_html('<a href="{}">{}</a>', url, record.conversation_code)


@admin.register(Usage)
class UsageAdmin(admin.ModelAdmin):
    """The usage dashboard: totals and a per-day chart (server-rendered SVG) instead of a list."""

    PERIODS = [7, 30, 90, 365]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [path("", self.admin_site.admin_view(self.changelist_view), name="conversations_usage_changelist")]

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            days = int(request.GET.get("days", 30))
        except ValueError:
            days = 30
        days = days if days in self.PERIODS else 30
        today = timezone.localdate()
        start = today - timedelta(days=days - 1)
        rows = Usage.objects.filter(day__gte=start, day__lte=today)
        daily = usage.per_day(Usage.objects.all(), start, today)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Usage"),
            "days": days,
            "periods": self.PERIODS,
            "start": start,
            "today": today,
            "period_totals": usage.sum_days(daily),
            "today_totals": next((d.totals for d in daily if d.day == today), usage.Totals()),
            "active_users": usage.active_users(rows),
            "chart": usage.chart(daily),
            "models": usage.per_model(rows),
            "top_users": usage.per_user(rows),
        }
        return TemplateResponse(request, "admin/conversations/usage/dashboard.html", context)


class ProfileForm(forms.ModelForm):
    class Meta:
        model = Profile
        fields = ["tokens_per_day", "tokens_per_month", "messages_per_minute", "allowed_models", "language"]
        help_texts = {
            "tokens_per_day": _("Empty: the site default (QUOTA_TOKENS_PER_DAY). 0: no limit."),
            "tokens_per_month": _("Empty: the site default (QUOTA_TOKENS_PER_MONTH). 0: no limit."),
            "messages_per_minute": _(
                "Replies a minute (regenerations count). "
                "Empty: the site default (QUOTA_MESSAGES_PER_MINUTE). 0: no limit."
            ),
            "allowed_models": _(
                "One model name per line; shell patterns such as gpt-4o* work. Empty: every model of every provider."
            ),
        }


class ProfileInline(admin.StackedInline):
    model = Profile
    form = ProfileForm
    can_delete = False
    max_num = 1
    verbose_name = verbose_name_plural = _("Limits and models")


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class AccountAdmin(UserAdmin):
    """Users, with their limits inline and actions to approve (activate) or deactivate them."""

    inlines = [*UserAdmin.inlines, ProfileInline]
    list_display = ["username", "email", "is_active", "is_staff", "date_joined", "last_login"]
    list_filter = ["is_active", "is_staff", "is_superuser", "groups"]
    actions = ["activate", "deactivate"]
    show_facets = admin.ShowFacets.NEVER
    show_full_result_count = False

    @admin.action(description=_("Activate selected users (approve sign-ups)"), permissions=["change"])
    def activate(self, request, queryset):
        count = queryset.filter(is_active=False).update(is_active=True)
        self.message_user(request, ngettext("%d user activated.", "%d users activated.", count) % count)

    @admin.action(description=_("Deactivate selected users"), permissions=["change"])
    def deactivate(self, request, queryset):
        count = queryset.filter(is_active=True).exclude(pk=request.user.pk).update(is_active=False)
        self.message_user(request, ngettext("%d user deactivated.", "%d users deactivated.", count) % count)
        if queryset.filter(pk=request.user.pk).exists():
            self.message_user(request, _("You cannot deactivate yourself."), level=messages.WARNING)
