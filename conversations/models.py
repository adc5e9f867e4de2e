"""The data (providers, conversations as message trees, presets, profiles, usage, audit) and its verbs."""

import logging
import uuid
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop
from django.utils.translation import gettext_lazy as _

from conversations.providers import params as request_params

log = logging.getLogger(__name__)

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

    def defaults_for(self, model: str) -> dict:
        """The admin's settings for new conversations with this model: {"params": ..., "system_prompt": ...}."""
        entry = self.models.filter(name=model).first() if model else None
        if entry is None:
            return {"params": {}, "system_prompt": ""}
        checked = request_params.check_stored(entry.default_params or {})
        if checked.errors:
            log.warning("Ignoring invalid default settings of model %s: %s", model, checked.errors)
        return {"params": checked.params, "system_prompt": entry.default_system_prompt}


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

    def empty_for(self, user, mode: str = "chat") -> "Conversation":
        """The user's untouched conversation of this mode, or a new one: New chat never piles up empty ones.

        A new chat gets the admin's default settings for its model.
        """
        conversation = self.for_user(user).filter(title="", messages__isnull=True, mode=mode).first()
        if conversation is None:
            provider = Provider.objects.default()
            defaults = provider.defaults_for(provider.default_model) if mode == Conversation.Mode.CHAT else {}
            conversation = self.create(
                owner=user, provider=provider, model=provider.default_model, mode=mode, **defaults
            )
        return conversation

    def sidebar(self, *, after: str | None = None, archived: bool = False, size: int = 50) -> "SidebarPage":
        """One page of the sidebar: conversations that have been written in, pinned first, then newest first.

        Pages after the first are found by keyset (`after`, the cursor of the last row shown), so
        every page costs the same however long the list is. Archived conversations are listed
        only in their own view (`archived=True`), and there without a pinned group.
        """
        # `__in=[...]`, not `=`: SQLite gets `archived IN (0)`, which can use conv_sidebar_idx; Django
        # writes `archived=False` as `NOT archived`, which cannot (4 ms instead of 0.05 ms at 10,000 rows).
        shown = self.exclude(title="").filter(archived__in=[archived])
        shown = shown.only("code", "title", "pinned", "archived", "updated_at").order_by("-updated_at", "-pk")
        pinned = []
        if not archived:
            if after is None:
                pinned = list(shown.filter(pinned__in=[True]))
            shown = shown.filter(pinned__in=[False])
        if after is not None:
            updated_at, pk = SidebarPage.parse_cursor(after)
            shown = shown.filter(models.Q(updated_at__lt=updated_at) | models.Q(updated_at=updated_at, pk__lt=pk))
        rows = list(shown[: size + 1])
        more = len(rows) > size
        rows = rows[:size]
        return SidebarPage(pinned, rows, SidebarPage.cursor_of(rows[-1]) if more else None, archived)


class SidebarPage:
    """Rows of the sidebar (pinned ones first), and the cursor of the next page, if there is one."""

    _EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

    def __init__(self, pinned: list, recent: list, next_cursor: str | None, archived: bool):
        self.pinned, self.recent, self.next_cursor, self.archived = pinned, recent, next_cursor, archived

    def __iter__(self):
        yield from self.pinned
        yield from self.recent

    def __len__(self):
        return len(self.pinned) + len(self.recent)

    @classmethod
    def cursor_of(cls, conversation) -> str:
        return f"{(conversation.updated_at - cls._EPOCH) // timedelta(microseconds=1)}.{conversation.pk}"

    @classmethod
    def parse_cursor(cls, cursor: str):
        """(updated_at, pk) of a cursor; ValueError if it is not one."""
        micros, _, pk = cursor.partition(".")
        if not (micros.isdigit() and pk.isdigit()) or len(micros) > 20:
            raise ValueError("Not a sidebar cursor")
        return cls._EPOCH + timedelta(microseconds=int(micros)), int(pk)


class Conversation(models.Model):
    class Mode(models.TextChoices):
        CHAT = "chat", _("Chat")
        COMPLETION = "completion", _("Text completion")

    class TitleSource(models.TextChoices):
        AUTO = "auto", _("First words (the model may still name it)")
        WORDS = "words", _("First words")
        MODEL = "model", _("Named by the model")
        USER = "user", _("Named by the user")

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    # Who chose the title: a model-generated title never replaces one the user typed.
    title_source = models.CharField(max_length=10, choices=TitleSource.choices, default=TitleSource.AUTO)
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
        indexes = [
            models.Index(fields=["owner", "-updated_at"]),
            models.Index(fields=["owner", "archived", "pinned", "-updated_at"], name="conv_sidebar_idx"),
            # The review list (admin): its model filter and the flagged ones (see docs/performance.md).
            models.Index(fields=["model", "-updated_at"], name="conv_review_model_idx"),
            models.Index(fields=["-updated_at"], condition=models.Q(flagged=True), name="conv_review_flagged_idx"),
        ]
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
        path, versions = self._path_to(leaf_id)
        return self._fetch(path, versions)

    def branch_page(self, leaf_id: int | None, *, before: int | None = None, size: int = 40):
        """The newest `size` messages of the branch to `leaf_id` (else the newest), oldest first.

        With `before`, the `size` ancestors of that message instead (the next older page).
        Returns (messages, has_older). Only the rows shown are read in full.
        """
        if before is not None:
            path, versions = self._path_to(before, exact=True)
            path = path[:-1]
        else:
            path, versions = self._path_to(leaf_id)
        return self._fetch(path[-size:], versions), len(path) > size

    def _path_to(self, leaf_id: int | None, *, exact: bool = False) -> tuple[list[int], dict]:
        """Ids of the branch to `leaf_id` (else the newest; with `exact`, no branch), oldest first.

        Reads only (id, parent) pairs. Also returns, for each id on it, its version numbers.
        """
        rows = list(self.messages.order_by("pk").values_list("pk", "parent_id"))
        if not rows:
            return [], {}
        parent_of = dict(rows)
        children: dict[int | None, list[int]] = {}
        for pk, parent_id in rows:
            children.setdefault(parent_id, []).append(pk)
        if leaf_id in parent_of:
            node = leaf_id
        elif exact:
            return [], {}
        else:
            node = rows[-1][0]
        path, versions = [], {}
        while node in parent_of:
            siblings = children[parent_of[node]]
            index = siblings.index(node)
            versions[node] = (
                index + 1,
                len(siblings),
                siblings[index - 1] if index else None,
                siblings[index + 1] if index + 1 < len(siblings) else None,
            )
            path.append(node)
            node = parent_of[node]
        return path[::-1], versions

    def _fetch(self, path: list[int], versions: dict) -> list["Message"]:
        by_id = self.messages.in_bulk(path)
        messages = [by_id[pk] for pk in path]
        for m in messages:
            m.version, m.versions, m.previous_version, m.next_version = versions[m.pk]
        return Message.annotate_for_display(messages)

    def shown_message(self, message_id: int) -> "Message | None":
        """That message with its version numbers, if it is on the branch shown; else None."""
        path, versions = self._path_to(self.active_leaf_id)
        return self._fetch([message_id], versions)[0] if message_id in versions else None

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

    def _fresh(self) -> tuple[dict, int | None]:
        """The settings and shown leaf as saved now (the settings panel may have changed them since)."""
        params, leaf, title = Conversation.objects.values_list("params", "active_leaf", "title").get(pk=self.pk)
        self.title = title
        return params or {}, leaf

    def _close_open_choices(self, parent_id: int | None) -> None:
        """The choices under `parent_id` become plain versions (the user went on with one of them)."""
        self.messages.filter(parent_id=parent_id, choices_open=True).update(choices_open=False)

    def _add_siblings(self, reply: "Message", n: int) -> list["Message"]:
        """Make `reply` choice 0 of n, creating the other n - 1 (streaming) next to it."""
        replies = [reply]
        if n > 1:
            Message.objects.filter(pk=reply.pk).update(choices_open=True)
            reply.choices_open = True
            for index in range(1, n):
                replies.append(
                    self.messages.create(
                        role=Message.Role.ASSISTANT,
                        parent_id=reply.parent_id,
                        status=Message.Status.STREAMING,
                        model=reply.model,
                        choice_index=index,
                        choices_open=True,
                    )
                )
        for message in replies:
            message.open_choices = replies if n > 1 else []
        return replies

    @transaction.atomic
    def add_exchange(self, text: str, model: str, *, replacing: "Message | None" = None) -> tuple["Message", "Message"]:
        """Save the user's message and an empty streaming reply at the end of the shown branch.

        With `replacing`, the message is a new version of that earlier user message instead.
        """
        return self._add_exchange(text, model, replacing=replacing, fresh=None)

    def _add_exchange(
        self, text: str, model: str, *, replacing: "Message | None", fresh: tuple[int | None, str] | None
    ) -> tuple["Message", "Message"]:
        """add_exchange(), given the shown leaf and the title as just read in this transaction (`fresh`)."""
        self._lock()
        if fresh is None:
            fresh = Conversation.objects.values_list("active_leaf", "title").get(pk=self.pk)
        leaf, title = fresh
        if replacing is not None:
            parent_id = replacing.parent_id
        else:
            path, _versions = self._path_to(leaf)
            parent_id = path[-1] if path else None
        user_message = self.messages.create(role=Message.Role.USER, content=text, parent_id=parent_id)
        reply = self.messages.create(
            role=Message.Role.ASSISTANT, parent=user_message, status=Message.Status.STREAMING, model=model
        )
        fields = {}
        if not title:
            fields["title"] = self.title_from(text)
        self._activate(reply, **fields)
        return user_message, reply

    @transaction.atomic
    def send(self, text: str, model: str, *, replacing: "Message | None" = None) -> tuple["Message", list["Message"]]:
        """The user's message and its n streaming replies. Sending after open choices picks the one shown."""
        params, leaf = self._fresh()
        if replacing is None and leaf is not None:
            shown = self.messages.filter(pk=leaf, choices_open=True).values_list("parent_id", flat=True)
            for parent_id in shown:
                self._close_open_choices(parent_id)
        user_message, reply = self._add_exchange(text, model, replacing=replacing, fresh=(leaf, self.title))
        return user_message, self._add_siblings(reply, choices_wanted(params))

    @transaction.atomic
    def regenerate(self, reply: "Message") -> list["Message"]:
        """n new versions of an assistant reply, from the same user message (its choices become versions)."""
        n = choices_wanted(self._fresh()[0])
        self._lock()
        new = self.messages.create(
            role=Message.Role.ASSISTANT, parent=reply.parent, status=Message.Status.STREAMING, model=self.model
        )
        self._activate(new)
        self._close_open_choices(reply.parent_id)
        return self._add_siblings(new, n)

    @transaction.atomic
    def pick(self, message: "Message") -> None:
        """Go on with this choice: the others stay as versions (‹ k/n ›)."""
        self._lock()  # not while any choice is still being written
        if not Message.objects.filter(pk=message.pk, choices_open=True).exists():
            raise NotAChoice
        self._close_open_choices(message.parent_id)
        self.switch_to(message.pk)

    @transaction.atomic
    def reopen_to_continue(self, message: "Message") -> "Message":
        """Mark a reply cut off by max_tokens as streaming again, to grow it where it stopped."""
        self._lock()
        message.refresh_from_db()
        if (
            message.role != Message.Role.ASSISTANT
            or message.finish_reason != "length"
            or message.status != Message.Status.COMPLETE
            or message.tool_calls
            or message.children.exists()
        ):
            raise CannotContinue
        if message.choices_open:
            self._close_open_choices(message.parent_id)  # going on with it picks it
        Message.objects.filter(pk=message.pk).update(
            status=Message.Status.STREAMING, finish_reason="", error="", choices_open=False, heartbeat_at=timezone.now()
        )
        self.switch_to(message.pk)
        message.refresh_from_db()
        return message

    @transaction.atomic
    def add_tool_results(self, message: "Message", results: dict[str, str]) -> list["Message"]:
        """One `tool` message per call of `message` (in its order), then n streaming replies after them."""
        self._lock()
        message.refresh_from_db()
        if message.role != Message.Role.ASSISTANT or not message.tool_calls or message.children.exists():
            raise CannotAnswer
        if message.choices_open:
            self._close_open_choices(message.parent_id)
        parent = message
        for call in message.tool_calls:
            parent = self.messages.create(
                role=Message.Role.TOOL, parent=parent, tool_call_id=call["id"], content=results[call["id"]]
            )
        reply = self.messages.create(
            role=Message.Role.ASSISTANT, parent=parent, status=Message.Status.STREAMING, model=self.model
        )
        self._activate(reply)
        return self._add_siblings(reply, choices_wanted(self._fresh()[0]))

    @transaction.atomic
    def start_run(self, prompt: str, run_params: dict) -> tuple["Message", list["Message"]]:
        """A text-completion run: the prompt and an empty streaming message per choice (Busy while one streams)."""
        self._lock()
        run = self.messages.create(role=Message.Role.USER, content=prompt, run={"params": run_params})
        choices = [
            self.messages.create(
                role=Message.Role.ASSISTANT,
                parent=run,
                status=Message.Status.STREAMING,
                model=self.model,
                choice_index=index,
            )
            for index in range(run_params.get("n") or 1)
        ]
        fields: dict[str, object] = {}
        if not Conversation.objects.values_list("title", flat=True).get(pk=self.pk):
            # The prompt's first words name it; a model is not asked to (it may not even chat).
            fields.update(title=Conversation.title_from(prompt), title_source=Conversation.TitleSource.WORDS)
        self._activate(choices[0], **fields)
        return run, choices

    def switch_to(self, message_id: int) -> None:
        """Show the branch through `message_id` (one of several versions)."""
        leaf = self.messages.get(pk=self.newest_leaf_under(message_id))
        self._activate(leaf)

    def shown_or_open_choice(self, message_id: int) -> "Message | None":
        """A message to re-render: on the shown branch, or one of the open choices shown there."""
        message = self.shown_message(message_id)
        if message is not None:
            return message
        candidate = self.messages.filter(pk=message_id, choices_open=True).first()
        if candidate is None:
            return None
        Message.annotate_for_display([candidate])
        path, _versions = self._path_to(self.active_leaf_id)
        return candidate if any(m.pk in path for m in candidate.open_choices) else None


def context_start_of(branch: list["Message"]) -> int | None:
    """Where the model stopped seeing earlier messages, for the newest reply of a branch."""
    replies = [m for m in branch if m.role == Message.Role.ASSISTANT]
    return replies[-1].context_start_id if replies else None


class Busy(Exception):
    """A reply is already being generated in this conversation."""


class NotAChoice(Exception):
    """The message is not one of several open choices."""


class CannotContinue(Exception):
    """Only the last reply, cut off by max_tokens, can be continued."""


class CannotAnswer(Exception):
    """The reply called no tools, or their results were already sent."""


# The most choices (n) one message may ask for.
MAX_CHOICES = 8


def choices_wanted(params: dict) -> int:
    """How many choices the settings ask for (1 when n is unset or not a sensible number)."""
    n = params.get("n")
    if not isinstance(n, int) or isinstance(n, bool):
        return 1
    return max(1, min(n, MAX_CHOICES))


# Saved in the language of whoever finds the reply interrupted (English when runchat starts up).
INTERRUPTED_ERROR = gettext_noop(
    "The server stopped while this reply was being written; the text above is what was saved."
)


class MessageQuerySet(models.QuerySet):
    def stale(self):
        cutoff = timezone.now() - timedelta(seconds=settings.STALE_GENERATION_SECONDS)
        return self.filter(status=Message.Status.STREAMING, heartbeat_at__lt=cutoff)

    def mark_interrupted(self) -> int:
        """Mark replies whose process died as interrupted, keeping their checkpointed text."""
        return self.update(status=Message.Status.INTERRUPTED, error=gettext(INTERRUPTED_ERROR))

    async def amark_interrupted(self) -> int:
        return await self.aupdate(status=Message.Status.INTERRUPTED, error=gettext(INTERRUPTED_ERROR))


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
    # A text-completion run (its prompt message): the parameters it was sent with and how it went.
    run = models.JSONField(null=True, blank=True)
    tool_call_id = models.CharField(max_length=200, blank=True)
    choice_index = models.PositiveSmallIntegerField(default=0)
    # One of the n choices of a reply, shown side by side until the user picks one to go on with.
    choices_open = models.BooleanField(default=False)
    # Made by a request of its own: the provider answers n > 1 with one choice, so the app asked n times.
    own_request = models.BooleanField(default=False)
    # Asked for as JSON (response_format json_object or json_schema): shown pretty-printed.
    json_mode = models.BooleanField(default=False)
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

    # Not stored: what the page shows about a message beyond its fields, set where it is read for
    # display (Conversation.branch_to, annotate_for_display, playground.runs.runs_of).
    version: int
    versions: int
    previous_version: int | None
    next_version: int | None
    open_choices: list["Message"]
    can_continue: bool
    can_answer_tools: bool
    shown_tokens: list[dict] | None

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

    @staticmethod
    def annotate_for_display(messages: list["Message"]) -> list["Message"]:
        """Give messages what the page shows about them beyond their fields (generation/feeds.py).

        `open_choices`: the n choices a reply is one of, while the user has not picked one (else []).
        `can_continue`: cut off by max_tokens and nothing after it yet. `can_answer_tools`: it called
        tools and no results were entered yet.
        """
        for message in messages:
            message.open_choices = []
        shown = list(messages)
        open_ones = [m for m in messages if m.choices_open]
        if open_ones:
            rows = list(
                Message.objects.filter(
                    conversation_id=open_ones[0].conversation_id,
                    parent_id__in=[m.parent_id for m in open_ones],
                    choices_open=True,
                ).order_by("choice_index", "pk")
            )
            for message in open_ones:
                batch = [message if row.pk == message.pk else row for row in rows if row.parent_id == message.parent_id]
                for member in batch:
                    member.open_choices = batch
                shown += [m for m in batch if m is not message]
        done = [
            m
            for m in shown
            if m.role == Message.Role.ASSISTANT
            and m.status == Message.Status.COMPLETE
            and (m.finish_reason == "length" or m.tool_calls)
        ]
        answered = set()
        if done:
            children = Message.objects.filter(parent_id__in=[m.pk for m in done])
            answered = set(children.values_list("parent_id", flat=True))
        for m in shown:
            leaf = m in done and m.pk not in answered
            m.can_continue = leaf and m.finish_reason == "length" and not m.tool_calls
            m.can_answer_tools = leaf and bool(m.tool_calls)
        return messages

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
        return gettext("Profile of %(user)s") % {"user": self.user}


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
        indexes = [
            # Covering: the usage dashboard's sums over a range of days read only this index.
            models.Index(
                fields=["day", "user", "model", "provider_name", "prompt_tokens", "completion_tokens", "messages"],
                name="usage_dashboard_idx",
            ),
            models.Index(fields=["user", "day"]),
        ]
        verbose_name = verbose_name_plural = _("usage")

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
