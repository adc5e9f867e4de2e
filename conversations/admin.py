from django import forms
from django.contrib import admin
from django.db.models import Count, Sum

from .models import Conversation, Message, Provider, ProviderModel


def mask_key(key: str) -> str:
    if not key:
        return "—"
    return "•" * 8 + (key[-4:] if len(key) >= 12 else "")


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(assume_scheme="https", help_text="Including /v1, e.g. https://api.openai.com/v1")
    # The key is write-only: never rendered back into the page; left empty, it stays as it was.
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave empty to keep the current key.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored key.")

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
    extra = 1


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "base_url", "masked_key", "enabled", "is_default", "is_bundled", "context_length"]
    list_filter = ["enabled", "is_default"]
    inlines = [ProviderModelInline]

    @admin.display(description="API key")
    def masked_key(self, provider):
        return mask_key(provider.api_key)


class MessageInline(admin.TabularInline):
    model = Message
    fk_name = "conversation"
    extra = 0
    can_delete = False
    show_change_link = False
    fields = [
        "role",
        "content",
        "status",
        "finish_reason",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "usage_estimated",
        "ttft_ms",
        "duration_ms",
        "error",
        "parent",
        "created_at",
    ]
    readonly_fields = fields
    ordering = ["pk"]

    def has_add_permission(self, request, obj=None):
        return False


class MessageStatusFilter(admin.SimpleListFilter):
    title = "message status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return Message.Status.choices

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(messages__status=self.value()).distinct()
        return queryset


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["__str__", "owner", "provider", "model", "message_count", "tokens", "updated_at"]
    list_filter = ["owner", "model", MessageStatusFilter, "provider", "created_at", "updated_at"]
    search_fields = ["title", "messages__content", "owner__username"]
    date_hierarchy = "updated_at"
    readonly_fields = ["code", "owner", "created_at", "updated_at"]
    list_select_related = ["owner", "provider"]
    inlines = [MessageInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_messages=Count("messages"), _tokens=Sum("messages__completion_tokens"))
        )

    @admin.display(description="messages", ordering="_messages")
    def message_count(self, conversation):
        return conversation._messages

    @admin.display(description="completion tokens", ordering="_tokens")
    def tokens(self, conversation):
        return conversation._tokens or 0
