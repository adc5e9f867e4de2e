import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

BUNDLED_NAME = "Bundled SmolLM2"
ENV_NAME = "Environment (OPENAI_BASE_URL)"


class ProviderQuerySet(models.QuerySet):
    def enabled(self):
        return self.filter(enabled=True)

    def default(self) -> "Provider":
        """Return the provider new conversations use, creating it from the settings if needed."""
        Provider.sync_from_settings()
        enabled = self.enabled().order_by("-is_default", "pk")
        provider = enabled.first()
        if provider is None:
            raise Provider.DoesNotExist("No provider is enabled")
        return provider


class Provider(models.Model):
    """An OpenAI-compatible endpoint. The key never leaves the server."""

    name = models.CharField(max_length=100, unique=True)
    base_url = models.URLField(help_text=_("Including /v1, e.g. https://api.openai.com/v1"))
    api_key = models.CharField(max_length=500, blank=True)
    default_model = models.CharField(
        max_length=200, blank=True, help_text=_("Model for new conversations; empty: the first one listed.")
    )
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(_("default"), default=False)
    is_bundled = models.BooleanField(default=False, editable=False)
    context_length = models.PositiveIntegerField(
        default=8192, help_text=_("Context window (tokens) for models without their own entry below.")
    )
    # None: not known yet. False: the provider rejected stream_options, so it is not sent again.
    supports_stream_usage = models.BooleanField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ProviderQuerySet.as_manager()

    class Meta:
        ordering = ["-is_default", "name"]

    def __str__(self):
        return self.name

    @classmethod
    def sync_from_settings(cls):
        """Make the environment's provider (or else the bundled model) exist and be the default.

        Providers added in the admin are left alone; an admin-chosen default wins over the
        bundled model but not over OPENAI_BASE_URL, which the operator set on purpose.
        """
        if settings.OPENAI_BASE_URL:
            provider, _created = cls.objects.update_or_create(
                name=ENV_NAME,
                defaults={"base_url": settings.OPENAI_BASE_URL, "api_key": settings.OPENAI_API_KEY},
            )
            if not cls.objects.filter(is_default=True, enabled=True).exclude(is_bundled=True).exists():
                cls.objects.filter(pk=provider.pk).update(is_default=True, enabled=True)
            return
        if cls.objects.enabled().exclude(is_bundled=True).exclude(name=ENV_NAME).exists():
            return
        cls.objects.get_or_create(
            name=BUNDLED_NAME,
            defaults={
                "base_url": settings.BUNDLED_MODEL_URL,
                "is_bundled": True,
                "is_default": True,
                "default_model": settings.BUNDLED_MODEL_ALIAS,
                "context_length": settings.BUNDLED_MODEL_CONTEXT,
            },
        )

    @property
    def endpoint(self) -> str:
        if self.is_bundled:
            return settings.BUNDLED_MODEL_URL
        return self.base_url.rstrip("/")

    def context_length_for(self, model: str) -> int:
        entry = self.models.filter(name=model).first()
        return entry.context_length if entry else self.context_length


class ProviderModel(models.Model):
    """Per-model facts an admin can set, such as its context window."""

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="models")
    name = models.CharField(max_length=200)
    context_length = models.PositiveIntegerField()
    # Settings an admin chose for new conversations with this model (same keys as Conversation.params).
    default_params = models.JSONField(default=dict, blank=True)
    default_system_prompt = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "name"], name="unique_model_per_provider")]

    def __str__(self):
        return self.name


class ConversationQuerySet(models.QuerySet):
    def for_user(self, user):
        return self.filter(owner=user)

    def sidebar(self, size: int = 100):
        """Conversations shown in the sidebar, newest first: those that have been written in."""
        return self.exclude(title="").only("code", "title")[:size]


class Conversation(models.Model):
    class Mode(models.TextChoices):
        CHAT = "chat", _("Chat")
        COMPLETION = "completion", _("Text completion")

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    provider = models.ForeignKey(Provider, null=True, blank=True, on_delete=models.SET_NULL)
    model = models.CharField(max_length=200, blank=True)
    mode = models.CharField(max_length=20, choices=Mode.choices, default=Mode.CHAT)
    system_prompt = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True, help_text=_("Request parameters the user set"))
    # The last message of the branch shown on the page (None: the newest message).
    active_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    pinned = models.BooleanField(default=False)
    archived = models.BooleanField(default=False)
    # Set by reviewers (staff with the review permission), never shown to the owner.
    flagged = models.BooleanField(default=False)
    review_note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]
        permissions = [("review_conversation", _("Can review conversations"))]

    def __str__(self):
        return self.title or str(self.code)

    @property
    def group_name(self) -> str:
        return f"conv.{self.code.hex}"

    @property
    def control_group_name(self) -> str:
        return f"ctl.{self.code.hex}"

    def branch(self) -> list["Message"]:
        """The branch shown on the page, oldest first, each message knowing its siblings."""
        return self.branch_to(self.active_leaf_id)

    def branch_to(self, leaf_id: int | None) -> list["Message"]:
        """The message `leaf_id` (else the newest) and its ancestors, oldest first.

        Each message learns which version it is among its siblings (`version` of `versions`) and
        the ids of the `previous_version` and `next_version`.
        """
        messages = list(self.messages.all())
        if not messages:
            return []
        by_id = {m.pk: m for m in messages}
        children: dict[int | None, list[int]] = {}
        for m in messages:
            children.setdefault(m.parent_id, []).append(m.pk)
        node = by_id.get(leaf_id) if leaf_id else None
        node = node or messages[-1]
        path = []
        while node is not None:
            versions = children[node.parent_id]
            index = versions.index(node.pk)
            node.version, node.versions = index + 1, len(versions)
            node.previous_version = versions[index - 1] if index else None
            node.next_version = versions[index + 1] if index + 1 < len(versions) else None
            path.append(node)
            node = by_id.get(node.parent_id)
        return path[::-1]

    @staticmethod
    def title_from(text: str) -> str:
        words = text.split()
        title = " ".join(words[:8])
        return title[:80] + ("…" if len(words) > 8 or len(title) > 80 else "")

    def newest_leaf_under(self, message_id: int) -> int:
        """Follow the newest child from `message_id` down to a leaf (where a switched-to version ends)."""
        children: dict[int | None, int] = {}
        for pk, parent_id in self.messages.order_by("pk").values_list("pk", "parent_id"):
            children[parent_id] = pk  # ordered by pk: the last one seen is the newest
        node = message_id
        while node in children:
            node = children[node]
        return node

    def _lock(self):
        """Serialize changes to one conversation's tree and refuse them while a reply streams."""
        Conversation.objects.select_for_update().get(pk=self.pk)
        if self.messages.filter(status=Message.Status.STREAMING).exists():
            raise Busy

    def _activate(self, leaf: "Message", **fields):
        fields.update(active_leaf=leaf, updated_at=timezone.now())
        Conversation.objects.filter(pk=self.pk).update(**fields)
        for name, value in fields.items():
            setattr(self, name, value)

    @transaction.atomic
    def add_exchange(self, text: str, model: str, *, replacing: "Message | None" = None) -> tuple["Message", "Message"]:
        """Save the user's message and an empty streaming reply at the end of the shown branch.

        With `replacing`, the message is a new version of that earlier user message instead.
        """
        self._lock()
        if replacing is not None:
            parent = replacing.parent
        else:
            branch = self.branch_to(Conversation.objects.values_list("active_leaf", flat=True).get(pk=self.pk))
            parent = branch[-1] if branch else None
        user_message = self.messages.create(role=Message.Role.USER, content=text, parent=parent)
        reply = self.messages.create(
            role=Message.Role.ASSISTANT, parent=user_message, status=Message.Status.STREAMING, model=model
        )
        fields = {}
        if not Conversation.objects.values_list("title", flat=True).get(pk=self.pk):
            fields["title"] = self.title_from(text)
        self._activate(reply, **fields)
        return user_message, reply

    @transaction.atomic
    def regenerate(self, reply: "Message") -> "Message":
        """A new version of an assistant reply, from the same user message."""
        self._lock()
        new = self.messages.create(
            role=Message.Role.ASSISTANT, parent=reply.parent, status=Message.Status.STREAMING, model=self.model
        )
        self._activate(new)
        return new

    def switch_to(self, message_id: int) -> None:
        """Show the branch through `message_id` (one of several versions)."""
        leaf = self.messages.get(pk=self.newest_leaf_under(message_id))
        self._activate(leaf)


def context_start_of(branch: list["Message"]) -> int | None:
    """Where the model stopped seeing earlier messages, for the newest reply of a branch."""
    replies = [m for m in branch if m.role == Message.Role.ASSISTANT]
    return replies[-1].context_start_id if replies else None


class Busy(Exception):
    """A reply is already being generated in this conversation."""


INTERRUPTED_ERROR = "The server stopped while this reply was being written; the text above is what was saved."


class MessageQuerySet(models.QuerySet):
    def stale(self):
        cutoff = timezone.now() - timedelta(seconds=settings.STALE_GENERATION_SECONDS)
        return self.filter(status=Message.Status.STREAMING, heartbeat_at__lt=cutoff)

    def mark_interrupted(self) -> int:
        """Mark replies whose process died as interrupted, keeping their checkpointed text."""
        return self.update(status=Message.Status.INTERRUPTED, error=INTERRUPTED_ERROR)

    async def amark_interrupted(self) -> int:
        return await self.aupdate(status=Message.Status.INTERRUPTED, error=INTERRUPTED_ERROR)


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system", _("System")
        USER = "user", _("User")
        ASSISTANT = "assistant", _("Assistant")
        TOOL = "tool", _("Tool")

    class Status(models.TextChoices):
        STREAMING = "streaming", _("Streaming")
        COMPLETE = "complete", _("Complete")
        STOPPED = "stopped", _("Stopped")
        INTERRUPTED = "interrupted", _("Interrupted")
        ERROR = "error", _("Error")

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    role = models.CharField(max_length=20, choices=Role.choices)
    content = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)
    reasoning_ms = models.PositiveIntegerField(null=True, blank=True)
    tool_calls = models.JSONField(null=True, blank=True)
    # Per token: {"token", "logprob", "top": [{"token", "logprob"}...]} (and "offset" for completions).
    logprobs = models.JSONField(null=True, blank=True)
    tool_call_id = models.CharField(max_length=200, blank=True)
    choice_index = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.COMPLETE)
    finish_reason = models.CharField(max_length=40, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage_estimated = models.BooleanField(default=False)
    model = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    # Oldest message the model saw for this reply, when older ones were trimmed to fit its context.
    context_start = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(default=timezone.now)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self):
        return f"{self.role}: {self.content[:40]}"

    @property
    def dom_id(self) -> str:
        return f"msg-{self.pk}"

    @property
    def is_streaming(self) -> bool:
        return self.status == self.Status.STREAMING

    @property
    def can_retry(self) -> bool:
        return self.role == self.Role.ASSISTANT and self.status in (
            self.Status.ERROR,
            self.Status.INTERRUPTED,
            self.Status.STOPPED,
        )

    @property
    def total_tokens(self):
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)


class Preset(models.Model):
    """A named set of chat settings and a system prompt, saved by a user for new chats."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="presets")
    name = models.CharField(max_length=100)
    provider = models.ForeignKey(Provider, null=True, blank=True, on_delete=models.SET_NULL)
    model = models.CharField(max_length=200, blank=True)
    system_prompt = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="unique_preset_name_per_user")]

    def __str__(self):
        return self.name


class Profile(models.Model):
    """Per-account settings and limits. Empty limits fall back to the defaults in settings."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    language = models.CharField(max_length=10, blank=True)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    messages_per_minute = models.PositiveIntegerField(null=True, blank=True)
    # One model name per line; empty: every model of every enabled provider.
    allowed_models = models.TextField(blank=True)

    def __str__(self):
        return f"Profile of {self.user}"


class Usage(models.Model):
    """Tokens and messages per user, model and day: added to at the end of every reply."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage")
    day = models.DateField()
    model = models.CharField(max_length=200, blank=True)
    provider_name = models.CharField(max_length=100, blank=True)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    messages = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "day", "model", "provider_name"], name="unique_usage_row")
        ]
        indexes = [models.Index(fields=["day"]), models.Index(fields=["user", "day"])]

    def __str__(self):
        return f"{self.user} {self.day} {self.model}"


class AuditRecord(models.Model):
    """Staff opened another user's conversation. Written by the app; read-only in the admin."""

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    actor_name = models.CharField(max_length=150)
    conversation = models.ForeignKey(Conversation, null=True, on_delete=models.SET_NULL, related_name="+")
    conversation_code = models.UUIDField()
    owner_name = models.CharField(max_length=150)
    action = models.CharField(max_length=40)
    detail = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self):
        return f"{self.actor_name} {self.action} {self.conversation_code}"
