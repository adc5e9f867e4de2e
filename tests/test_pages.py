"""Accounts, the conversation page, rename, delete, the model picker, and who may see what."""

import socket

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Conversation, Message, Provider

pytestmark = pytest.mark.django_db


def test_it_signs_up_and_logs_in(client, provider):
    response = client.post(
        "/signup/", {"username": "carol", "password1": "a-long-pass-phrase-9", "password2": "a-long-pass-phrase-9"}
    )
    assert response.status_code == 302
    assert get_user_model().objects.filter(username="carol").exists()
    page = client.get("/", follow=True)
    assert page.status_code == 200 and b'name="message"' in page.content


def test_signup_shows_errors_and_creates_nobody(client):
    response = client.post("/signup/", {"username": "dave", "password1": "short", "password2": "other"})
    assert response.status_code == 200
    assert b'role="alert"' in response.content
    assert not get_user_model().objects.filter(username="dave").exists()


def test_logout_requires_post(alice_client):
    assert alice_client.get("/accounts/logout/").status_code == 405
    assert alice_client.post("/accounts/logout/").status_code == 302


def test_pages_require_login(client, conversation):
    for url in ["/", f"/c/{conversation.code}/", f"/c/{conversation.code}/models/"]:
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_home_reuses_the_empty_conversation(alice_client, alice, provider):
    first = alice_client.get("/")
    second = alice_client.get("/")
    assert first["Location"] == second["Location"]
    assert Conversation.objects.filter(owner=alice).count() == 1


def test_the_page_shows_the_saved_conversation(alice_client, conversation):
    user = conversation.messages.create(role="user", content="<b>hi</b>")
    conversation.messages.create(role="assistant", content="**bold** <script>alert(1)</script>", parent=user)
    Conversation.objects.filter(pk=conversation.pk).update(title="Greeting")
    response = alice_client.get(f"/c/{conversation.code}/")
    html = response.content.decode()
    assert "&lt;b&gt;hi&lt;/b&gt;" in html  # the user's text is escaped
    assert "<strong>bold</strong>" in html  # the reply is rendered as markdown
    assert "<script>alert(1)</script>" not in html
    assert 'ws-connect="/ws/c/' in html
    assert "Greeting" in html


def test_the_sidebar_lists_only_my_titled_conversations_newest_first(alice_client, alice, bob, provider):
    Conversation.objects.create(owner=alice, provider=provider, title="Older")
    newest = Conversation.objects.create(owner=alice, provider=provider, title="Newer")
    Conversation.objects.create(owner=bob, provider=provider, title="Bob's secret")
    html = alice_client.get(f"/c/{newest.code}/").content.decode()
    assert html.index("Newer") < html.index("Older")
    assert "Bob&#x27;s secret" not in html and "Bob's secret" not in html


def test_a_stranger_gets_404_everywhere(bob_client, conversation):
    code = conversation.code
    assert bob_client.get(f"/c/{code}/").status_code == 404
    assert bob_client.get(f"/c/{code}/models/").status_code == 404
    assert bob_client.post(f"/c/{code}/rename/", {"title": "mine"}).status_code == 404
    assert bob_client.post(f"/c/{code}/model/", {"model": "fake-model"}).status_code == 404
    assert bob_client.post(f"/c/{code}/delete/").status_code == 404
    conversation.refresh_from_db()
    assert conversation.title == ""


def test_it_renames(alice_client, conversation):
    url = f"/c/{conversation.code}/rename/"
    response = alice_client.post(url, {"title": "  Trip   plans "}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.title == "Trip plans"
    assert 'id="sidebar-list" hx-swap-oob="true"' in response.content.decode()


def test_it_refuses_an_empty_title(alice_client, conversation):
    Conversation.objects.filter(pk=conversation.pk).update(title="Kept")
    response = alice_client.post(f"/c/{conversation.code}/rename/", {"title": "   "})
    assert b"cannot be empty" in response.content
    conversation.refresh_from_db()
    assert conversation.title == "Kept"


def test_it_deletes_with_its_messages(alice_client, conversation):
    conversation.messages.create(role="user", content="bye")
    response = alice_client.post(f"/c/{conversation.code}/delete/")
    assert response.status_code == 302
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert Message.objects.count() == 0


def test_delete_requires_csrf(alice, conversation):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(f"/c/{conversation.code}/delete/").status_code == 403
    assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_the_model_picker_lists_the_providers_models(alice_client, conversation, fake):
    html = alice_client.get(f"/c/{conversation.code}/models/").content.decode()
    assert '<option value="fake-model" selected>' in html
    assert '<option value="fake-model-2"' in html


def test_it_picks_a_model(alice_client, conversation, fake):
    response = alice_client.post(f"/c/{conversation.code}/model/", {"model": "fake-model-2"})
    assert b"Saved" in response.content
    conversation.refresh_from_db()
    assert conversation.model == "fake-model-2"


def test_it_refuses_a_model_the_provider_does_not_offer(alice_client, conversation, fake):
    response = alice_client.post(f"/c/{conversation.code}/model/", {"model": "gpt-9"})
    assert b"does not offer a model named" in response.content
    conversation.refresh_from_db()
    assert conversation.model == "fake-model"


def test_an_unreachable_provider_gives_a_clear_message(alice_client, conversation):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    Provider.objects.filter(pk=conversation.provider_id).update(base_url=f"http://127.0.0.1:{port}/v1")
    response = alice_client.get(f"/c/{conversation.code}/models/")
    assert response.status_code == 200
    assert b"Could not connect to the provider" in response.content


def test_the_page_marks_a_dead_generation_interrupted(alice_client, conversation, settings):
    from datetime import timedelta

    from django.utils import timezone

    user = conversation.messages.create(role="user", content="hi")
    reply = conversation.messages.create(role="assistant", parent=user, status="streaming", content="half a")
    Message.objects.filter(pk=reply.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    html = alice_client.get(f"/c/{conversation.code}/").content.decode()
    reply.refresh_from_db()
    assert reply.status == "interrupted" and reply.content == "half a"
    assert 'data-status="interrupted"' in html and "Retry" in html


def test_the_page_marks_where_the_model_stopped_seeing(alice_client, conversation):
    first = conversation.messages.create(role="user", content="old")
    second = conversation.messages.create(role="user", content="new", parent=first)
    conversation.messages.create(role="assistant", content="ok", parent=second, context_start=second)
    html = alice_client.get(f"/c/{conversation.code}/").content.decode()
    assert html.index("old") < html.index("context-marker") < html.index(">new<")
