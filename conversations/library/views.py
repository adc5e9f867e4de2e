"""A user's conversations as a library: the sidebar, pin, archive, export, import and older pages.

The sidebar has pages, search and an archived view; export is Markdown or JSON; a long
conversation is read upwards, an older page at a time.

Every view starts from the user (access.get_conversation, Conversation.objects.for_user): another
user's conversation is a 404, whatever the URL.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.db.models import Exists, OuterRef, Q, Subquery
from django.db.models.functions import Substr
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django_htmx.http import HttpResponseClientRedirect

from conversations.access import get_conversation
from conversations.library import imports, transcripts
from conversations.models import Conversation, Message, context_start_of

# Messages of a branch rendered at once: the newest page on opening, then older pages on scroll.
PAGE_SIZE = 30
SEARCH_LIMIT = 50
SNIPPET_CHARS = 120
PAGE = "conversations/conversation.html"


# -- the transcript, page by page ---------------------------------------------------------------


def transcript_context(conversation: Conversation) -> dict:
    """What the transcript partial needs: the newest page of the branch shown, and where older ones are."""
    branch, has_older = conversation.branch_page(conversation.active_leaf_id, size=PAGE_SIZE)
    context_start_id = context_start_of(branch)
    return {
        "branch": branch,
        "context_start_id": context_start_id,
        "older_url": _older_url(conversation, branch, context_start_id) if has_older else "",
    }


def _older_url(conversation: Conversation, page: list[Message], context_start_id: int | None) -> str:
    query = {"before": page[0].pk}
    if context_start_id and all(m.pk != context_start_id for m in page):
        query["mark"] = context_start_id  # the context marker belongs further up
    return f"{reverse('older_messages', args=[conversation.code])}?{urlencode(query)}"


def _int(value) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() and len(value) < 19 else None


@require_safe
@login_required
def older_messages(request, code):
    """The page of the branch just above message `before` (loaded when the reader scrolls up)."""
    conversation = get_conversation(request, code)
    before = _int(request.GET.get("before"))
    if before is None:
        return HttpResponseBadRequest(_("The “before” parameter must be the id of a message."))
    messages, has_older = conversation.branch_page(None, before=before, size=PAGE_SIZE)
    mark = _int(request.GET.get("mark"))
    context = {
        "conversation": conversation,
        "branch": messages,
        "context_start_id": mark,
        "older_url": _older_url(conversation, messages, mark) if has_older and messages else "",
    }
    return render(request, "conversations/_older.html#page", context)


# -- the sidebar --------------------------------------------------------------------------------


def _uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


@require_safe
@login_required
def sidebar(request):
    """The conversation list: a page of the main or archived view, or search results (`q`)."""
    mine = Conversation.objects.for_user(request.user)
    query = " ".join(request.GET.get("q", "").split())[:200]
    context: dict[str, object] = {"current_code": _uuid(request.GET.get("current"))}
    if query:
        context.update(query=query, results=search(mine, query))
        return render(request, "conversations/_sidebar_list.html", context)
    after = request.GET.get("after") or None
    try:
        page = mine.sidebar(after=after, archived=request.GET.get("view") == "archived")
    except ValueError:
        return HttpResponseBadRequest(_("That is not a page of the list."))
    context["sidebar"] = page
    if after:  # the next rows of a list already shown
        return render(request, "conversations/_sidebar_list.html#rows", context)
    return render(request, "conversations/_sidebar_list.html", context)


class Result:
    def __init__(self, conversation: Conversation, query: str, snippet: str | None):
        self.code, self.title, self.archived = conversation.code, conversation.title, conversation.archived
        self.before, self.match, self.after = _snippet(snippet or "", query)


def search(conversations, query: str) -> list[Result]:
    """Conversations whose title or any message (of any branch) contains `query`, newest first.

    Case-insensitive `icontains`, so it works the same on SQLite and PostgreSQL.
    """
    matching = Message.objects.filter(conversation=OuterRef("pk"), content__icontains=query)
    found = (
        conversations.exclude(title="")
        .filter(Q(title__icontains=query) | Exists(matching))
        .annotate(
            snippet=Subquery(matching.order_by("pk").annotate(head=Substr("content", 1, 20_000)).values("head")[:1])
        )
        .only("code", "title", "archived", "updated_at")
        .order_by("-updated_at", "-pk")[:SEARCH_LIMIT]
    )
    return [Result(c, query, c.snippet) for c in found]


def _snippet(text: str, query: str) -> tuple[str, str, str]:
    """The words around the first match in `text`: (before, match, after); all empty if none."""
    lowered = text.lower()
    at = lowered.find(query.lower()) if len(lowered) == len(text) else text.find(query)
    if at < 0:
        return "", "", ""
    end = at + len(query)
    start = max(0, at - SNIPPET_CHARS // 3)
    if start:  # begin at a word
        space = text.find(" ", start, at)
        start = space + 1 if space >= 0 else start
    stop = end + SNIPPET_CHARS - (at - start)
    before = ("…" if start else "") + _squash(text[start:at])
    after = _squash(text[end:stop]) + ("…" if stop < len(text) else "")
    return before, text[at:end], after


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def sidebar_html(request, conversation: Conversation) -> bytes:
    context = {
        "conversation": conversation,
        "sidebar": Conversation.objects.for_user(request.user).sidebar(),
        "oob": True,
    }
    return render(request, f"{PAGE}#sidebar", context).content


# -- pin, archive -------------------------------------------------------------------------------


def _flag(request, code, field: str):
    conversation = get_conversation(request, code)
    value = request.POST.get(field) in ("1", "true", "on")
    changes = {field: value}
    if field == "archived":
        changes["pinned"] = False  # an archived conversation leaves the pinned group too
    Conversation.objects.filter(pk=conversation.pk).update(**changes)
    for name, new in changes.items():
        setattr(conversation, name, new)
    if not request.htmx:
        return redirect("conversation", conversation.code)
    actions = render(request, "conversations/_actions.html", {"conversation": conversation}).content
    return HttpResponse(actions + sidebar_html(request, conversation))


@require_POST
@login_required
def pin(request, code):
    return _flag(request, code, "pinned")


@require_POST
@login_required
def archive(request, code):
    return _flag(request, code, "archived")


# -- export, import -----------------------------------------------------------------------------


def _download(body: str, conversation: Conversation, extension: str, content_type: str) -> HttpResponse:
    name = slugify(conversation.title, allow_unicode=True)[:60] or "conversation"
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, f"{name}.{extension}")
    return response


def _all_messages(conversation: Conversation) -> list[Message]:
    return list(conversation.messages.order_by("pk"))


@require_safe
@login_required
def export_markdown(request, code):
    """Every message, every branch, as readable Markdown (the model's text as it wrote it)."""
    conversation = get_conversation(request, code)
    body = transcripts.to_markdown(conversation, _all_messages(conversation))
    return _download(body, conversation, "md", "text/markdown; charset=utf-8")


@require_safe
@login_required
def export_json(request, code):
    """The whole conversation with its message tree, in the form import_conversation reads back."""
    conversation = get_conversation(request, code)
    data = transcripts.conversation_dict(conversation, _all_messages(conversation), for_reviewer=False)
    data = {"format": imports.FORMAT, "version": imports.VERSION, "exported_at": timezone.now(), **data}
    return _download(transcripts.to_json(data), conversation, "json", "application/json; charset=utf-8")


@require_http_methods(["GET", "POST"])
@login_required
def import_conversation(request):
    """Upload a JSON export: it becomes a new conversation of the uploader, or the form says what is wrong."""
    if request.method == "GET":
        return render(request, "conversations/import.html", {})
    upload = request.FILES.get("file")
    try:
        if upload is None:
            raise imports.ImportFailed(_("Choose a JSON file to import."))
        if upload.size > imports.MAX_BYTES:
            raise imports.ImportFailed(_("The file is larger than %(mb)d MB.") % {"mb": imports.MAX_BYTES // 2**20})
        conversation = imports.import_conversation(request.user, imports.read(upload.read()))
    except imports.ImportFailed as exc:
        context = {"import_error": exc.message, "file_name": upload.name if upload else ""}
        if request.htmx:
            return render(request, "conversations/_import.html", context)
        return render(request, "conversations/import.html", context, status=400)
    url = reverse("conversation", args=[conversation.code])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


urlpatterns = [
    path("c/sidebar/", sidebar, name="sidebar"),
    path("c/import/", import_conversation, name="import_conversation"),
    path("c/<uuid:code>/older/", older_messages, name="older_messages"),
    path("c/<uuid:code>/pin/", pin, name="pin"),
    path("c/<uuid:code>/archive/", archive, name="archive"),
    path("c/<uuid:code>/export.md", export_markdown, name="export_markdown"),
    path("c/<uuid:code>/export.json", export_json, name="export_json"),
]
