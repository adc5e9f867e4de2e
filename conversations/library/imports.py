"""Read a conversation's JSON export (library/views.py writes it) back into a new conversation.

Everything in the file is checked before anything is saved: a bad file gets one clear message
and changes nothing. The new conversation belongs to whoever imports it, uses their default
provider, and keeps the message tree (every branch, the branch shown). Imported text is model
output like any other: it reaches the page only through the renderer or autoescaping.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from conversations.models import Conversation, Message, Provider
from conversations.providers import params as request_params

FORMAT = "chat.conversation"
VERSION = 1
MAX_BYTES = 20 * 1024 * 1024
MAX_MESSAGES = 20_000
MAX_TEXT_CHARS = 1_000_000  # per message: generous, since replies can be long

_STATUSES = {s.value for s in Message.Status}
_ROLES = {r.value for r in Message.Role}
_MODES = {m.value for m in Conversation.Mode}
_TEXT_FIELDS = {"reasoning": MAX_TEXT_CHARS, "error": 10_000, "finish_reason": 40, "model": 200, "tool_call_id": 200}
_COUNT_FIELDS = ("reasoning_ms", "prompt_tokens", "completion_tokens", "ttft_ms", "duration_ms")


class ImportFailed(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def read(raw: bytes) -> dict:
    """The decoded export, or ImportFailed saying what is wrong with the file."""
    if len(raw) > MAX_BYTES:
        raise ImportFailed(_("The file is larger than %(mb)d MB.") % {"mb": MAX_BYTES // (1024 * 1024)})
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportFailed(_("The file is not UTF-8 text. Choose a JSON export of a conversation.")) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ImportFailed(
            _("The file is not valid JSON (line %(line)d: %(error)s).")
            % {"line": getattr(exc, "lineno", 0), "error": getattr(exc, "msg", str(exc))}
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise ImportFailed(_("This is not a conversation export: it has no list of messages."))
    if "format" in data and (data.get("format") != FORMAT or data.get("version") != VERSION):
        raise ImportFailed(
            _("This export is in a format this site does not read (%(format)s, version %(version)s).")
            % {"format": str(data.get("format"))[:40], "version": str(data.get("version"))[:10]}
        )
    return data


def _text(data: dict, name: str, limit: int, where: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ImportFailed(_("%(where)s: “%(name)s” must be text.") % {"where": where, "name": name})
    if len(value) > limit:
        raise ImportFailed(
            _("%(where)s: “%(name)s” is longer than %(limit)s characters.")
            % {"where": where, "name": name, "limit": f"{limit:,}"}
        )
    return value


def _count(data: dict, name: str, where: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise ImportFailed(
            _("%(where)s: “%(name)s” must be a whole number of at least 0.") % {"where": where, "name": name}
        )
    return value


def _time(data: dict, name: str) -> datetime | None:
    value = data.get(name)
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


def _message(item, index: int, known: dict) -> tuple[Message, object, datetime | None]:
    """An unsaved Message from one item of the file, the file's id of its parent, and when it was written."""
    where = _("Message %(number)d") % {"number": index + 1}
    if not isinstance(item, dict):
        raise ImportFailed(_("%(where)s is not an object.") % {"where": where})
    key = item.get("id")
    if not isinstance(key, (int, str)) or isinstance(key, bool) or key in known:
        raise ImportFailed(_("%(where)s needs an “id” of its own.") % {"where": where})
    parent = item.get("parent")
    if parent is not None and (not isinstance(parent, (int, str)) or isinstance(parent, bool) or parent not in known):
        raise ImportFailed(
            _("%(where)s answers a message that does not come before it in the file.") % {"where": where}
        )
    role = item.get("role")
    if role not in _ROLES:
        raise ImportFailed(
            _("%(where)s: the role must be one of %(roles)s.") % {"where": where, "roles": ", ".join(sorted(_ROLES))}
        )
    status = item.get("status") or Message.Status.COMPLETE
    if status not in _STATUSES:
        raise ImportFailed(_("%(where)s: unknown status “%(status)s”.") % {"where": where, "status": str(status)[:20]})
    if status == Message.Status.STREAMING:
        status = Message.Status.INTERRUPTED  # nothing is writing it any more
    tool_calls = item.get("tool_calls")
    if tool_calls is not None and not isinstance(tool_calls, list):
        raise ImportFailed(_("%(where)s: “tool_calls” must be a list.") % {"where": where})
    logprobs = item.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, list):
        raise ImportFailed(_("%(where)s: “logprobs” must be a list.") % {"where": where})
    choice_index = _count(item, "choice_index", where) or 0
    if choice_index > 127:
        raise ImportFailed(_("%(where)s: “choice_index” is too large.") % {"where": where})
    message = Message(
        role=role,
        content=_text(item, "content", MAX_TEXT_CHARS, where),
        status=status,
        tool_calls=tool_calls,
        logprobs=logprobs,
        choice_index=choice_index,
        usage_estimated=item.get("usage_estimated") is True,
        **{name: _text(item, name, limit, where) for name, limit in _TEXT_FIELDS.items()},
        **{name: _count(item, name, where) for name in _COUNT_FIELDS},
    )
    return message, parent, _time(item, "created_at")


def _settings(data: dict, mode: str) -> dict:
    """The file's request parameters, checked like the settings panel's."""
    settings = data.get("params") or {}
    if not isinstance(settings, dict):
        raise ImportFailed(_("“params” must be an object."))
    checked = request_params.check_stored(settings, mode)
    if checked.errors:
        raise ImportFailed(
            _("The settings in the file are not valid: %(errors)s.")
            % {"errors": "; ".join(f"{name}: {error}" for name, error in checked.errors.items())}
        )
    return checked.params


def _messages(items: list) -> tuple[list[Message], list, list[datetime | None], dict]:
    """Unsaved messages of the file's items, their parents' ids in the file, when each was written,
    and the position of each id in the file."""
    known: dict = {}  # the file's message id -> position
    messages: list[Message] = []
    parents: list = []
    created: list[datetime | None] = []
    for index, item in enumerate(items):
        message, parent, created_at = _message(item, index, known)
        known[item["id"]] = index
        messages.append(message)
        parents.append(parent)
        created.append(created_at)
    return messages, parents, created, known


def import_conversation(user, data: dict) -> Conversation:
    """Save the export `data` (from read()) as a new conversation of `user`; ImportFailed if it is not valid."""
    items = data["messages"]
    if not items:
        raise ImportFailed(_("The export has no messages."))
    if len(items) > MAX_MESSAGES:
        raise ImportFailed(_("The export has more than %(count)s messages.") % {"count": f"{MAX_MESSAGES:,}"})
    where = _("The conversation")
    title = " ".join(_text(data, "title", 10_000, where).split())[:200]
    mode = data.get("mode") or Conversation.Mode.CHAT
    if mode not in _MODES:
        raise ImportFailed(_("Unknown conversation mode “%(mode)s”.") % {"mode": str(mode)[:20]})
    params = _settings(data, mode)
    messages, parents, created, known = _messages(items)
    active = data.get("active_leaf")
    active_index = known.get(active) if isinstance(active, (int, str)) and not isinstance(active, bool) else None

    try:
        provider = Provider.objects.default()
    except Provider.DoesNotExist:
        provider = None  # the page says so; the admin can enable one later
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=user,
            provider=provider,
            model=_text(data, "model", 200, where) or (provider.default_model if provider else ""),
            mode=mode,
            system_prompt=_text(data, "system_prompt", MAX_TEXT_CHARS, where),
            params=params,
            title=title
            or Conversation.title_from(next((m.content for m in messages if m.role == "user"), ""))
            or _("Imported conversation"),
            title_source=Conversation.TitleSource.USER,
        )
        for message in messages:
            message.conversation = conversation
        # Saved in file order, so ids grow as they did (the newest message is still the newest).
        Message.objects.bulk_create(messages, batch_size=500)
        for message, parent, created_at in zip(messages, parents, created, strict=True):
            message.parent_id = messages[known[parent]].pk if parent is not None else None
            message.created_at = created_at or message.created_at
        Message.objects.bulk_update(messages, ["parent", "created_at"], batch_size=500)
        leaf = messages[active_index] if active_index is not None else messages[-1]
        Conversation.objects.filter(pk=conversation.pk).update(active_leaf=leaf)
        conversation.active_leaf = leaf
    return conversation
