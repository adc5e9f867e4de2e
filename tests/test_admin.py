"""The admin: providers with write-only keys, conversations with their messages."""

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Provider

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    admin = get_user_model().objects.create_superuser("root", password="root-password-123")
    client.force_login(admin)
    return client


def test_the_provider_list_masks_the_key(admin_client, provider):
    Provider.objects.filter(pk=provider.pk).update(api_key="sk-secret-abcdefgh1234")
    html = admin_client.get("/admin/conversations/provider/").content.decode()
    assert "sk-secret-abcdefgh1234" not in html
    assert "1234" in html


def test_the_provider_form_never_shows_the_key_and_keeps_it_when_left_empty(admin_client, provider):
    Provider.objects.filter(pk=provider.pk).update(api_key="sk-secret-abcdefgh1234")
    url = f"/admin/conversations/provider/{provider.pk}/change/"
    assert "sk-secret" not in admin_client.get(url).content.decode()
    data = {
        "name": "Renamed",
        "base_url": provider.base_url,
        "api_key": "",
        "enabled": "on",
        "default_model": "fake-model",
        "context_length": "4096",
        "models-TOTAL_FORMS": "0",
        "models-INITIAL_FORMS": "0",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    provider.refresh_from_db()
    assert provider.name == "Renamed" and provider.api_key == "sk-secret-abcdefgh1234"
    admin_client.post(url, {**data, "api_key": "sk-new-key-000000000"})
    provider.refresh_from_db()
    assert provider.api_key == "sk-new-key-000000000"


def test_a_conversation_shows_its_messages(admin_client, conversation):
    conversation.messages.create(role="user", content="question for review")
    conversation.messages.create(role="assistant", content="answer", status="error", error="HTTP 500")
    html = admin_client.get(f"/admin/conversations/conversation/{conversation.pk}/change/").content.decode()
    assert "question for review" in html and "HTTP 500" in html


def test_conversations_can_be_filtered_and_searched(admin_client, conversation):
    conversation.messages.create(role="user", content="needle in a haystack")
    found = admin_client.get("/admin/conversations/conversation/?q=needle").content.decode()
    assert "1 conversation" in found or "1 result" in found
    none = admin_client.get("/admin/conversations/conversation/?status=error").content.decode()
    assert "0 conversations" in none or "0 results" in none


def test_the_admin_refuses_ordinary_users(alice_client):
    response = alice_client.get("/admin/conversations/conversation/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
