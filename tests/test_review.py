"""Conversation review in the admin: who may see what, the transcript with every branch, filters,
search, flagging, and exports."""

# The fixtures imported from .personas are (re)bound as test parameters, as pytest intends.
# ruff: noqa: F811

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from conversations.models import Conversation, Provider

from .personas import branched, clients, fast_passwords, reviewer, staff, superuser  # noqa: F401

pytestmark = pytest.mark.django_db

LIST = "/admin/conversations/conversation/"


def change_url(conversation):
    return f"{LIST}{conversation.pk}/change/"


def export_url(conversation, fmt):
    return f"{LIST}{conversation.pk}/export/{fmt}/"


def action(client, name, conversations):
    return client.post(LIST, {"action": name, "_selected_action": [c.pk for c in conversations]})


# -- the permission matrix ------------------------------------------------------------------------

PAGES = {
    # page: expected status for (user, staff, reviewer, superuser); 302 = sent to the admin login
    "conversation list": ("list", (302, 403, 200, 200)),
    "transcript": ("change", (302, 403, 200, 200)),
    "export json": ("json", (302, 403, 200, 200)),
    "export markdown": ("md", (302, 403, 200, 200)),
    "add conversation": ("add", (302, 403, 403, 403)),
    "delete confirmation": ("delete", (302, 403, 403, 200)),
    "audit list": ("audit", (302, 403, 403, 200)),
    "usage dashboard": ("usage", (302, 403, 403, 200)),
    "user list": ("users", (302, 403, 403, 200)),
}


def url_for(kind, conversation, alice):
    return {
        "list": LIST,
        "change": change_url(conversation),
        "json": export_url(conversation, "json"),
        "md": export_url(conversation, "md"),
        "add": f"{LIST}add/",
        "delete": f"{LIST}{conversation.pk}/delete/",
        "audit": "/admin/conversations/auditrecord/",
        "usage": "/admin/conversations/usage/",
        "users": "/admin/auth/user/",
    }[kind]


@pytest.mark.parametrize("page", PAGES)
def test_the_permission_matrix(page, clients, branched, alice):
    kind, expected = PAGES[page]
    url = url_for(kind, branched, alice)
    for persona, status in zip(["user", "staff", "reviewer", "superuser"], expected, strict=True):
        response = clients[persona].get(url)
        assert response.status_code == status, f"{page} as {persona}: {response.status_code}"
        if status == 302:
            assert "/admin/login/" in response["Location"]
        if status != 200:
            assert b"follow-up question" not in response.content, f"{page} leaked contents to {persona}"


@pytest.mark.parametrize("name", ["export_json", "export_markdown"])
def test_the_export_actions_need_the_review_permission(name, clients, branched):
    for persona, allowed in [("user", False), ("staff", False), ("reviewer", True), ("superuser", True)]:
        response = action(clients[persona], name, [branched])
        if allowed:
            assert response.status_code == 200
            assert response["Content-Disposition"].startswith("attachment;")
            assert b"follow-up question" in response.content
        else:
            assert response.status_code in (302, 403), persona
            assert b"follow-up question" not in response.content


def test_staff_without_the_permission_do_not_see_conversations_on_the_admin_index(clients, branched):
    html = clients["staff"].get("/admin/").content.decode()
    assert LIST not in html
    assert LIST in clients["reviewer"].get("/admin/").content.decode()


def test_staff_without_the_permission_cannot_flag(clients, branched):
    response = clients["staff"].post(change_url(branched), {"flagged": "on", "review_note": "sneaky"})
    assert response.status_code == 403
    branched.refresh_from_db()
    assert not branched.flagged and branched.review_note == ""


# -- the transcript ---------------------------------------------------------------------------------


def test_the_transcript_shows_every_branch_with_its_details(clients, branched):
    html = clients["reviewer"].get(change_url(branched)).content.decode()
    for text in ["reply A", "follow-up question", "reply C", "edited question", "reply D"]:
        assert text in html
    assert "reply <strong>B</strong>" in html  # replies rendered through the markdown renderer
    assert "<script>alert(1)</script>" not in html
    assert "first &lt;b&gt;question&lt;/b&gt;" in html  # the user's text escaped
    assert "HTTP 500 from the provider" in html  # errors
    assert "You are a careful reviewer&#x27;s test subject." in html  # the system prompt
    assert "&quot;temperature&quot;: 0.3" in html  # the settings used
    assert "11 + 5 tokens" in html and "first token 120 ms" in html and "duration 900 ms" in html
    assert "version 1 of 2" in html and "version 2 of 2" in html
    assert "not on the shown branch" in html
    assert "alice" in html and "Fake" in html and "fake-model" in html


def test_the_transcript_indents_branches_and_marks_the_shown_one(clients, branched):
    html = clients["reviewer"].get(change_url(branched)).content.decode()
    by_text = {}
    for text in ["first &lt;b&gt;question", "reply A", "reply <strong>B", "follow-up question", "edited question"]:
        start = html.rindex("<article", 0, html.index(text))
        by_text[text] = html[start : html.index(">", start)]
    # Two versions of the first message (the original and the edit): both one level in.
    assert 'data-level="1"' in by_text["first &lt;b&gt;question"]
    assert 'data-level="1"' in by_text["edited question"] and "off-branch" in by_text["edited question"]
    # Two replies to it: one level deeper; the follow-up continues reply B's branch at its level.
    assert 'data-level="2"' in by_text["reply A"] and "off-branch" in by_text["reply A"]
    assert 'data-level="2"' in by_text["reply <strong>B"] and "off-branch" not in by_text["reply <strong>B"]
    assert 'data-level="2"' in by_text["follow-up question"]
    # Reading order: depth first, so reply B's continuation comes before the edited question.
    assert html.index("reply C") < html.index("edited question")


def test_the_transcript_of_a_conversation_without_messages(clients, conversation):
    response = clients["reviewer"].get(change_url(conversation))
    assert response.status_code == 200 and "No messages." in response.content.decode()


def test_a_reviewer_flags_and_notes_a_conversation(clients, branched):
    response = clients["reviewer"].post(change_url(branched), {"flagged": "on", "review_note": "Check the tone."})
    assert response.status_code == 302
    branched.refresh_from_db()
    assert branched.flagged and branched.review_note == "Check the tone."
    assert branched.title == "Branches to review" and branched.model == "fake-model"  # nothing else editable


# -- the list: filters and search ---------------------------------------------------------------------


@pytest.fixture
def listed(alice, bob, provider, branched):
    other = Provider.objects.create(name="Other", base_url="http://127.0.0.1:9/v1")
    bobs = Conversation.objects.create(owner=bob, provider=other, model="big-model", title="Bob's chat", flagged=True)
    bobs.messages.create(role="user", content="a needle in bob's haystack")
    old = Conversation.objects.create(owner=alice, provider=provider, model="fake-model", title="Old one")
    Conversation.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=40))
    return {"branched": branched, "bobs": bobs, "old": old}


def titles_in(response):
    html = response.content.decode()
    return {t for t in ["Branches to review", "Bob&#x27;s chat", "Old one"] if t in html}


@pytest.mark.parametrize(
    "query,expected",
    [
        ("", {"Branches to review", "Bob&#x27;s chat", "Old one"}),
        ("?owner=bob", {"Bob&#x27;s chat"}),
        ("?owner=nobody", set()),
        ("?model=big-model", {"Bob&#x27;s chat"}),
        ("?provider__id__exact={other}", {"Bob&#x27;s chat"}),
        ("?status=error", {"Branches to review"}),
        ("?status=stopped&owner=alice", {"Branches to review"}),
        ("?flagged__exact=1", {"Bob&#x27;s chat"}),
        ("?active_from={recent}", {"Branches to review", "Bob&#x27;s chat"}),
        ("?active_to={recent}", {"Old one"}),
        ("?q=needle", {"Bob&#x27;s chat"}),
        ("?q=follow-up", {"Branches to review"}),
        ("?q=bob", {"Bob&#x27;s chat"}),
        ("?q=reply+D&owner=alice", {"Branches to review"}),
    ],
)
def test_filters_and_search(query, expected, clients, listed):
    recent = (timezone.localdate() - timedelta(days=10)).isoformat()
    query = query.format(other=listed["bobs"].provider_id, recent=recent)
    response = clients["reviewer"].get(LIST + query)
    assert response.status_code == 200
    assert titles_in(response) == expected


def test_a_bad_date_is_refused_not_ignored(clients, listed):
    response = clients["reviewer"].get(LIST + "?active_from=yesterday")
    assert response.status_code == 302 and "e=1" in response["Location"]


def test_the_user_filter_keeps_the_other_filters(clients, listed):
    html = clients["reviewer"].get(LIST + "?flagged__exact=1&q=needle").content.decode()
    assert '<input type="hidden" name="flagged__exact" value="1">' in html
    assert '<input type="hidden" name="q" value="needle">' in html


def test_the_list_counts_messages_and_tokens(clients, branched):
    html = clients["reviewer"].get(LIST).content.decode()
    assert '<td class="field-message_count">7</td>' in html
    assert '<td class="field-tokens">53</td>' in html  # 11 + 5 + 30 + 7


# -- exports -------------------------------------------------------------------------------------------


def test_the_json_export_holds_every_message_and_the_review(clients, branched):
    Conversation.objects.filter(pk=branched.pk).update(flagged=True, review_note="noted")
    response = action(clients["reviewer"], "export_json", [branched])
    assert response["Content-Type"].startswith("application/json")
    data = json.loads(response.content)
    [conversation] = data["conversations"]
    assert conversation["code"] == str(branched.code) and conversation["owner"] == "alice"
    assert conversation["flagged"] is True and conversation["review_note"] == "noted"
    assert conversation["system_prompt"] == branched.system_prompt and conversation["params"]["temperature"] == 0.3
    messages = conversation["messages"]
    assert len(messages) == 7
    by_content = {m["content"]: m for m in messages}
    assert by_content["reply A"]["parent"] == by_content["first <b>question</b>"]["id"]
    assert by_content["reply A"]["error"] == "HTTP 500 from the provider"
    assert by_content["edited question"]["parent"] is None
    assert conversation["active_leaf"] == by_content["reply C"]["id"]


def test_the_markdown_export_reads_as_a_transcript(clients, branched, conversation):
    response = clients["reviewer"].get(export_url(branched, "md"))
    assert response["Content-Type"].startswith("text/markdown")
    text = response.content.decode()
    assert text.startswith("# Branches to review")
    assert "## System prompt" in text and "> You are a careful reviewer's test subject." in text
    assert "first <b>question</b>" in text and "reply **B** <script>" in text  # as written
    assert "version 2 of 2" in text and "not on the shown branch" in text
    assert "**Error:** HTTP 500 from the provider" in text


def test_exporting_several_conversations_at_once(clients, branched, bob, provider):
    bobs = Conversation.objects.create(owner=bob, provider=provider, title="Second")
    bobs.messages.create(role="user", content="bob asks")
    data = json.loads(action(clients["superuser"], "export_json", [branched, bobs]).content)
    assert {c["title"] for c in data["conversations"]} == {"Branches to review", "Second"}
    markdown = action(clients["superuser"], "export_markdown", [branched, bobs]).content.decode()
    assert "bob asks" in markdown and "reply C" in markdown


def test_an_unknown_export_format_is_404(clients, branched):
    assert clients["reviewer"].get(export_url(branched, "pdf")).status_code == 404
    assert clients["reviewer"].get(f"{LIST}999999/export/json/").status_code == 404
