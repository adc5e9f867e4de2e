"""The audit trail: every look by staff at another user's conversation is recorded, and the record
cannot be added, edited or deleted from the admin, not even by a superuser."""

# ruff: noqa: F811

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model

from conversations.models import AuditRecord, Conversation

from .personas import branched, clients, fast_passwords, reviewer, staff, superuser  # noqa: F401

pytestmark = pytest.mark.django_db

LIST = "/admin/conversations/conversation/"
AUDIT = "/admin/conversations/auditrecord/"


def records():
    return list(AuditRecord.objects.order_by("pk").values_list("actor_name", "owner_name", "action", "conversation_id"))


@pytest.mark.parametrize(
    "path,action",
    [
        ("{pk}/change/", "transcript"),
        ("{pk}/export/json/", "export-json"),
        ("{pk}/export/md/", "export-markdown"),
        ("{pk}/delete/", "delete-view"),
    ],
)
def test_each_page_that_shows_a_conversation_is_audited(path, action, clients, branched):
    response = clients["superuser"].get(LIST + path.format(pk=branched.pk))
    assert response.status_code == 200
    assert records() == [("root", "alice", action, branched.pk)]
    record = AuditRecord.objects.get()
    assert record.conversation_code == branched.code and record.actor.username == "root"


def test_every_visit_is_a_new_record(clients, branched):
    for _ in range(3):
        clients["reviewer"].get(f"{LIST}{branched.pk}/change/")
    assert [r[2] for r in records()] == ["transcript"] * 3


@pytest.mark.parametrize("name,action", [("export_json", "export-json"), ("export_markdown", "export-markdown")])
def test_an_export_action_records_each_conversation(name, action, clients, branched, bob, provider):
    bobs = Conversation.objects.create(owner=bob, provider=provider)
    response = clients["reviewer"].post(LIST, {"action": name, "_selected_action": [branched.pk, bobs.pk]})
    assert response.status_code == 200
    expected = [("reviewer", "alice", action, branched.pk), ("reviewer", "bob", action, bobs.pk)]
    assert sorted(records()) == sorted(expected)


def test_a_review_change_is_recorded(clients, branched):
    clients["reviewer"].post(f"{LIST}{branched.pk}/change/", {"flagged": "on", "review_note": "look again"})
    review = AuditRecord.objects.get(action="review")
    assert review.actor_name == "reviewer" and "flagged" in review.detail and "review_note" in review.detail


def test_deleting_from_the_admin_is_recorded_and_the_record_outlives_the_conversation(clients, branched):
    code = branched.code
    response = clients["superuser"].post(f"{LIST}{branched.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Conversation.objects.filter(code=code).exists()
    deleted = AuditRecord.objects.get(action="delete")
    assert deleted.conversation_id is None and deleted.conversation_code == code and deleted.owner_name == "alice"


def test_the_bulk_delete_confirmation_is_recorded(clients, branched):
    response = clients["superuser"].post(LIST, {"action": "delete_selected", "_selected_action": [branched.pk]})
    assert response.status_code == 200 and b"follow-up question" in response.content  # lists the messages
    assert [r[2] for r in records()] == ["delete-view"]


def test_refused_visits_and_lists_write_nothing(clients, branched):
    clients["staff"].get(f"{LIST}{branched.pk}/change/")
    clients["staff"].get(f"{LIST}{branched.pk}/export/json/")
    clients["user"].get(f"{LIST}{branched.pk}/change/")
    clients["reviewer"].get(LIST)  # the list shows no message text
    assert records() == []


def test_staff_opening_their_own_conversation_is_not_recorded(reviewer, provider, clients):
    own = Conversation.objects.create(owner=reviewer, provider=provider)
    assert clients["reviewer"].get(f"{LIST}{own.pk}/change/").status_code == 200
    assert records() == []


def test_records_outlive_the_staff_member(clients, branched, reviewer):
    clients["reviewer"].get(f"{LIST}{branched.pk}/change/")
    get_user_model().objects.filter(pk=reviewer.pk).delete()
    record = AuditRecord.objects.get()
    assert record.actor_id is None and record.actor_name == "reviewer"


# -- the audit list in the admin ----------------------------------------------------------------------


def test_the_audit_list_shows_who_looked_at_what(clients, branched):
    clients["reviewer"].get(f"{LIST}{branched.pk}/export/md/")
    html = clients["superuser"].get(AUDIT).content.decode()
    assert "reviewer" in html and "alice" in html and "Exported as Markdown" in html and str(branched.code) in html
    assert clients["superuser"].get(AUDIT + "?action=transcript").content.decode().count(str(branched.code)) == 0
    found = clients["superuser"].get(AUDIT + f"?q={branched.code}").content.decode()
    assert str(branched.code) in found


def test_audit_records_cannot_be_added_changed_or_deleted_even_by_a_superuser(clients, branched, superuser):
    clients["reviewer"].get(f"{LIST}{branched.pk}/change/")
    record = AuditRecord.objects.get()
    root = clients["superuser"]
    assert root.get(AUDIT + "add/").status_code == 403
    assert root.post(AUDIT + "add/", {"actor_name": "x", "action": "y"}).status_code == 403
    view = root.get(AUDIT + f"{record.pk}/change/")
    assert view.status_code == 200  # readable...
    assert b'name="_save"' not in view.content and b'name="actor_name"' not in view.content  # ...not editable
    assert root.post(AUDIT + f"{record.pk}/change/", {"actor_name": "forged", "action": "x"}).status_code == 403
    assert root.get(AUDIT + f"{record.pk}/delete/").status_code == 403
    assert root.post(AUDIT + f"{record.pk}/delete/", {"post": "yes"}).status_code == 403
    listing = root.get(AUDIT).content.decode()
    assert "delete_selected" not in listing
    root.post(AUDIT, {"action": "delete_selected", "_selected_action": [record.pk], "post": "yes"})
    record.refresh_from_db()
    assert record.actor_name == "reviewer" and AuditRecord.objects.count() == 1
    model_admin = admin.site._registry[AuditRecord]
    request = type("Request", (), {"user": superuser})()
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, record)
    assert not model_admin.has_delete_permission(request, record)


# -- the notice users see ---------------------------------------------------------------------------


def test_users_are_told_on_sign_up_and_on_their_account_page(client, alice_client):
    notice = "may be reviewed by its administrators"
    assert notice in client.get("/signup/").content.decode()
    assert notice in alice_client.get("/account/").content.decode()
