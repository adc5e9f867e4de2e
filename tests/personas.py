"""The four people of the admin's permission matrix, and a conversation with branches to review.

Import the fixtures into a test module: `from .personas import reviewer, staff, superuser, ...`.
"""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from conversations.models import Conversation, Message

from .conftest import login_client


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Hash test passwords cheaply: the real hasher costs a fraction of a second per user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _staff(username, *codenames):
    user = get_user_model().objects.create_user(username, password=f"{username}-password-123", is_staff=True)
    if codenames:
        user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return get_user_model().objects.get(pk=user.pk)  # no stale permission cache


@pytest.fixture
def staff(db):
    """Staff without the review permission (but able to see the admin)."""
    return _staff("staffer")


@pytest.fixture
def reviewer(db):
    return _staff("reviewer", "review_conversation")


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", password="root-password-123")


@pytest.fixture
def clients(alice, staff, reviewer, superuser):
    """A logged-in client per persona: the owner (a plain user), staff, reviewer, superuser."""
    return {
        "user": login_client(alice),
        "staff": login_client(staff),
        "reviewer": login_client(reviewer),
        "superuser": login_client(superuser),
    }


@pytest.fixture
def branched(conversation):
    """A conversation of alice's with an edited first message and a regenerated reply.

    first question -> reply A (error) / reply B (complete, the shown one) -> follow-up -> reply C
    edited question -> reply D
    """
    c = conversation
    c.system_prompt = "You are a careful reviewer's test subject."
    c.params = {"temperature": 0.3, "max_tokens": 200}
    c.title = "Branches to review"
    c.save()
    q1 = c.messages.create(role="user", content="first <b>question</b>")
    c.messages.create(
        role="assistant", parent=q1, content="reply A", status="error", error="HTTP 500 from the provider", model="m1"
    )
    b = c.messages.create(
        role="assistant",
        parent=q1,
        content="reply **B** <script>alert(1)</script>",
        model="fake-model",
        prompt_tokens=11,
        completion_tokens=5,
        ttft_ms=120,
        duration_ms=900,
        finish_reason="stop",
    )
    q2 = c.messages.create(role="user", content="follow-up question", parent=b)
    leaf = c.messages.create(role="assistant", parent=q2, content="reply C", prompt_tokens=30, completion_tokens=7)
    edited = c.messages.create(role="user", content="edited question")
    c.messages.create(role="assistant", parent=edited, content="reply D", status="stopped")
    Conversation.objects.filter(pk=c.pk).update(active_leaf=leaf)
    c.refresh_from_db()
    return c


def message_texts(conversation):
    return list(Message.objects.filter(conversation=conversation).values_list("content", flat=True))
