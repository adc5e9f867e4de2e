"""Accounts: sign-up modes, approval and deactivation by admins, per-user limits in the admin,
a user's export of all their data, and deleting an account with its conversations."""

# ruff: noqa: F811

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from conversations.models import AuditRecord, Conversation, Message, Preset, Profile, Usage

from .conftest import login_client
from .personas import branched, clients, fast_passwords, reviewer, staff, superuser  # noqa: F401

pytestmark = pytest.mark.django_db

User = get_user_model()
PASSWORD = "a-long-pass-phrase-9"
USERS = "/admin/auth/user/"


def sign_up(client, username="carol"):
    return client.post("/signup/", {"username": username, "password1": PASSWORD, "password2": PASSWORD})


def log_in(client, username="carol", password=PASSWORD):
    return client.post("/accounts/login/", {"username": username, "password": password})


# -- sign-up modes ------------------------------------------------------------------------------------


def test_open_sign_up_creates_an_active_account_and_logs_in(client, settings, provider):
    settings.SIGNUP_MODE = "open"
    response = sign_up(client)
    assert response.status_code == 302
    assert User.objects.get(username="carol").is_active
    assert client.get("/", follow=True).status_code == 200


def test_closed_sign_up_creates_nobody(client, settings):
    settings.SIGNUP_MODE = "closed"
    page = client.get("/signup/")
    assert page.status_code == 403 and "Sign-up is closed" in page.content.decode()
    response = sign_up(client)
    assert response.status_code == 403
    assert not User.objects.filter(username="carol").exists()


def test_approval_sign_up_waits_for_an_admin(client, settings, clients, provider):
    settings.SIGNUP_MODE = "approval"
    assert "activated by an administrator" in client.get("/signup/").content.decode()
    response = sign_up(client)
    assert response.status_code == 200
    assert "awaits approval" in response.content.decode()
    carol = User.objects.get(username="carol")
    assert not carol.is_active
    assert client.get("/").status_code == 302  # not logged in

    refused = log_in(client)
    assert refused.status_code == 200
    assert "not active yet: an administrator has to approve it" in refused.content.decode()
    wrong = log_in(client, password="not-the-password")
    assert "not active" not in wrong.content.decode()  # only the password's owner learns why

    clients["superuser"].post(USERS, {"action": "activate", "_selected_action": [carol.pk]})
    carol.refresh_from_db()
    assert carol.is_active
    assert log_in(client).status_code == 302


def test_a_bad_sign_up_mode_stops_the_site():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={"DJANGO_SETTINGS_MODULE": "chatsite.settings", "SIGNUP_MODE": "approve", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and 'SIGNUP_MODE must be "open", "closed" or "approval"' in result.stderr


# -- admins activate and deactivate users -----------------------------------------------------------


def test_deactivating_a_user_ends_their_access(clients, alice, bob):
    response = clients["superuser"].post(USERS, {"action": "deactivate", "_selected_action": [alice.pk, bob.pk]})
    assert response.status_code == 302
    assert not User.objects.filter(pk__in=[alice.pk, bob.pk], is_active=True).exists()
    response = clients["user"].get("/account/")  # alice's session no longer logs her in
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_an_admin_cannot_deactivate_themselves(clients, superuser):
    clients["superuser"].post(USERS, {"action": "deactivate", "_selected_action": [superuser.pk]})
    superuser.refresh_from_db()
    assert superuser.is_active


def test_staff_without_the_user_permissions_cannot_activate(clients, alice):
    User.objects.filter(pk=alice.pk).update(is_active=False)
    response = clients["staff"].post(USERS, {"action": "activate", "_selected_action": [alice.pk]})
    assert response.status_code == 403
    alice.refresh_from_db()
    assert not alice.is_active


def test_limits_and_models_are_set_per_user_in_the_admin(clients, alice):
    url = f"{USERS}{alice.pk}/change/"
    page = clients["superuser"].get(url).content.decode()
    assert "Limits and models" in page and 'name="profile-0-tokens_per_day"' in page
    data = {
        "username": "alice",
        "password": alice.password,
        "is_active": "on",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "profile-TOTAL_FORMS": "1",
        "profile-INITIAL_FORMS": "0",
        "profile-MIN_NUM_FORMS": "0",
        "profile-MAX_NUM_FORMS": "1",
        "profile-0-tokens_per_day": "5000",
        "profile-0-tokens_per_month": "",
        "profile-0-messages_per_minute": "3",
        "profile-0-allowed_models": "fake-model\ngpt-4o*",
        "profile-0-language": "",
    }
    response = clients["superuser"].post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    profile = Profile.objects.get(user=alice)
    assert (profile.tokens_per_day, profile.tokens_per_month, profile.messages_per_minute) == (5000, None, 3)
    assert profile.allowed_models.splitlines() == ["fake-model", "gpt-4o*"]
    html = clients["user"].get("/account/").content.decode()
    assert "Tokens per day: 5000" in html and "fake-model, gpt-4o*" in html


# -- exporting one's own data -------------------------------------------------------------------------


def test_a_user_exports_all_their_data_as_one_json_file(clients, alice, bob, branched, provider):
    Conversation.objects.filter(pk=branched.pk).update(flagged=True, review_note="internal note")
    second = Conversation.objects.create(owner=alice, provider=provider, title="Second chat")
    second.messages.create(role="user", content="second chat message")
    bobs = Conversation.objects.create(owner=bob, provider=provider, title="Bob's secret")
    bobs.messages.create(role="user", content="bob's secret message")
    Preset.objects.create(owner=alice, name="Terse", system_prompt="Be terse.", params={"temperature": 0})
    Usage.objects.create(user=alice, day="2026-11-30", model="fake-model", prompt_tokens=5, completion_tokens=6)
    Usage.objects.create(user=bob, day="2026-11-30", model="fake-model", prompt_tokens=999, completion_tokens=999)

    response = clients["user"].get("/account/export/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"].startswith('attachment; filename="chat-data-alice-')
    data = json.loads(response.content)
    assert data["account"]["username"] == "alice"
    assert {c["title"] for c in data["conversations"]} == {"Branches to review", "Second chat"}
    exported = next(c for c in data["conversations"] if c["title"] == "Branches to review")
    assert len(exported["messages"]) == 7  # every branch
    assert {m["content"] for m in exported["messages"]} == set(
        Message.objects.filter(conversation=branched).values_list("content", flat=True)
    )
    assert exported["system_prompt"] and exported["params"] == {"temperature": 0.3, "max_tokens": 200}
    assert "flagged" not in exported and "review_note" not in exported  # reviewers' notes stay theirs
    assert "internal note" not in response.content.decode()
    assert "bob" not in response.content.decode().lower()  # nothing of anyone else
    [preset] = data["presets"]
    assert preset == {
        "name": "Terse",
        "provider_name": None,
        "model": "",
        "system_prompt": "Be terse.",
        "params": {"temperature": 0},
    }
    assert data["usage"] == [
        {
            "day": "2026-11-30",
            "model": "fake-model",
            "provider_name": "",
            "prompt_tokens": 5,
            "completion_tokens": 6,
            "messages": 0,
        }
    ]


def test_the_export_needs_a_login(client):
    response = client.get("/account/export/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# -- deleting an account --------------------------------------------------------------------------------


def test_deleting_an_account_deletes_its_conversations(clients, alice, bob, branched, provider):
    bobs = Conversation.objects.create(owner=bob, provider=provider)
    bobs.messages.create(role="user", content="bob stays")
    clients["reviewer"].get(f"/admin/conversations/conversation/{branched.pk}/change/")  # an audit record
    response = clients["user"].post("/account/delete/", {"password": "alice-password-123", "confirm": "on"})
    assert response.status_code == 200 and "have been deleted" in response.content.decode()
    assert not User.objects.filter(username="alice").exists()
    assert not Conversation.objects.filter(owner_id=alice.pk).exists()
    assert not Message.objects.filter(conversation_id=branched.pk).exists()
    assert list(Message.objects.values_list("content", flat=True)) == ["bob stays"]
    record = AuditRecord.objects.get()  # the audit trail keeps who looked at what
    assert record.owner_name == "alice" and record.conversation_id is None
    assert clients["user"].get("/account/").status_code == 302  # logged out


@pytest.mark.parametrize(
    "data,error",
    [
        ({"password": "wrong-password", "confirm": "on"}, "That is not your password."),
        ({"password": "alice-password-123"}, "Tick the box to confirm."),
        ({}, "This field is required."),
    ],
)
def test_deleting_needs_the_password_and_the_confirmation(data, error, clients, alice, branched):
    response = clients["user"].post("/account/delete/", data)
    assert response.status_code == 400 and error in response.content.decode()
    assert User.objects.filter(pk=alice.pk).exists() and Conversation.objects.filter(pk=branched.pk).exists()


def test_deleting_needs_a_post_with_a_csrf_token(alice, branched):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get("/account/delete/").status_code == 405
    response = client.post("/account/delete/", {"password": "alice-password-123", "confirm": "on"})
    assert response.status_code == 403
    assert User.objects.filter(pk=alice.pk).exists()


def test_the_account_page_offers_export_and_deletion(alice_client):
    html = alice_client.get("/account/").content.decode()
    assert 'href="/account/export/"' in html and 'action="/account/delete/"' in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_the_chat_page_links_to_the_account_page(alice, conversation):
    html = login_client(alice).get(f"/c/{conversation.code}/").content.decode()
    assert 'href="/account/"' in html
