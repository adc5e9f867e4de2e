"""Quotas and rate limits: a user over a limit is told which one and when it resets, before anything
is saved or sent to the provider (the fake provider receives nothing). Also: allowed models."""

from datetime import datetime, timedelta
from datetime import time as dtime

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.utils import timezone

from conversations.accounts import quotas
from conversations.models import Conversation, Message, Profile, Usage

from .conftest import login_client, open_socket
from .personas import fast_passwords  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

DONE = 'msg-assistant" data-status="complete"'
ALERT = 'role="alert"'


def stamp(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")


def midnight(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, dtime.min))


async def chat(socket, text):
    socket.frames.clear()
    await socket.send(message=text)
    return await socket.receive_until(DONE)


async def refused(socket, **frame):
    socket.frames.clear()
    await socket.send(**frame)
    html = await socket.receive_until(ALERT)
    assert 'id="composer-input"' not in html  # the box keeps the text
    return html


async def counts(conversation):
    return await Message.objects.filter(conversation=conversation).acount()


def set_limits(alice, **limits):
    Profile.objects.update_or_create(user=alice, defaults=limits)


# -- replies per minute ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["settings", "profile"])
async def test_replies_per_minute(where, alice, conversation, fake, settings):
    if where == "settings":
        settings.QUOTA_MESSAGES_PER_MINUTE = 2
    else:
        await sync_to_async(set_limits)(alice, messages_per_minute=2)
    socket, _, _ = await open_socket(alice, conversation.code)
    await chat(socket, "one")
    await chat(socket, "two")
    html = await refused(socket, message="three")
    first = await Message.objects.filter(role="assistant").order_by("created_at").afirst()
    assert "You have asked for 2 replies in the last minute; your limit is 2 a minute." in html
    assert f"It resets at {stamp(first.created_at + timedelta(minutes=1))}" in html
    assert "Nothing was sent, and your text is still in the box." in html
    assert await counts(conversation) == 4  # "three" was not saved
    assert len(fake.completions()) == 2  # and the provider never heard of it
    await socket.close()


async def test_regenerations_count_and_are_refused_too(alice, conversation, fake):
    await sync_to_async(set_limits)(alice, messages_per_minute=1)
    socket, _, _ = await open_socket(alice, conversation.code)
    await chat(socket, "only one")
    reply = await Message.objects.aget(role="assistant")
    html = await refused(socket, action="regenerate", message_id=reply.pk)
    assert "your limit is 1 a minute" in html and "It resets at" in html and "Nothing was sent." in html
    question = await Message.objects.aget(role="user")
    html = await refused(socket, action="edit", message_id=question.pk, message="edited")
    assert "your limit is 1 a minute" in html
    assert await counts(conversation) == 2 and len(fake.completions()) == 1
    await socket.close()


async def test_the_minute_window_slides(alice, conversation, fake):
    await sync_to_async(set_limits)(alice, messages_per_minute=1)
    socket, _, _ = await open_socket(alice, conversation.code)
    await chat(socket, "early")
    await Message.objects.aupdate(created_at=timezone.now() - timedelta(seconds=61))
    await chat(socket, "a minute later")
    assert len(fake.completions()) == 2
    await socket.close()


# -- tokens per day and per month -------------------------------------------------------------------------


def add_usage(user, day, prompt, completion, model="fake-model"):
    Usage.objects.create(user=user, day=day, model=model, prompt_tokens=prompt, completion_tokens=completion)


@pytest.mark.parametrize("where", ["settings", "profile"])
async def test_tokens_per_day(where, alice, conversation, fake, settings):
    if where == "settings":
        settings.QUOTA_TOKENS_PER_DAY = 1000
    else:
        settings.QUOTA_TOKENS_PER_DAY = 5  # the profile overrides the default
        await sync_to_async(set_limits)(alice, tokens_per_day=1000)
    today = timezone.localdate()
    await sync_to_async(add_usage)(alice, today, 600, 399)
    await sync_to_async(add_usage)(alice, today - timedelta(days=1), 5000, 5000)  # yesterday does not count
    socket, _, _ = await open_socket(alice, conversation.code)
    await chat(socket, "still allowed at 999")
    reply = await Message.objects.aget(role="assistant")
    used = reply.prompt_tokens + reply.completion_tokens
    await Usage.objects.filter(day=today, provider_name="").aupdate(completion_tokens=400 - used)
    html = await refused(socket, message="over at 1000")
    assert "You have used 1,000 tokens today; your daily limit is 1,000." in html
    assert f"It resets at {stamp(midnight(today + timedelta(days=1)))}" in html
    assert await counts(conversation) == 2 and len(fake.completions()) == 1
    await socket.close()


async def test_tokens_per_month(alice, conversation, fake, settings):
    settings.QUOTA_TOKENS_PER_MONTH = 10_000
    today = timezone.localdate()
    first = today.replace(day=1)
    await sync_to_async(add_usage)(alice, first - timedelta(days=1), 90_000, 0)  # last month does not count
    await sync_to_async(add_usage)(alice, first, 6_000, 4_000)
    socket, _, _ = await open_socket(alice, conversation.code)
    html = await refused(socket, message="hello")
    next_month = (first + timedelta(days=32)).replace(day=1)
    assert "You have used 10,000 tokens this month; your monthly limit is 10,000." in html
    assert f"It resets at {stamp(midnight(next_month))}" in html
    assert await counts(conversation) == 0 and fake.completions() == []
    await socket.close()


async def test_replies_fill_the_daily_quota(alice, conversation, fake):
    """The quota counts what real replies used: here 7 prompt + 4 completion tokens each."""
    await sync_to_async(set_limits)(alice, tokens_per_day=20)
    socket, _, _ = await open_socket(alice, conversation.code)
    await chat(socket, "first try")  # "You said: first try": 4 words
    await chat(socket, "second try")  # 22 tokens used now
    html = await refused(socket, message="third try")
    assert "You have used 22 tokens today; your daily limit is 20." in html
    assert len(fake.completions()) == 2
    await socket.close()


async def test_zero_in_a_profile_means_no_limit(alice, conversation, fake, settings):
    settings.QUOTA_MESSAGES_PER_MINUTE = 1
    settings.QUOTA_TOKENS_PER_DAY = 1
    await sync_to_async(set_limits)(alice, messages_per_minute=0, tokens_per_day=0)
    socket, _, _ = await open_socket(alice, conversation.code)
    await chat(socket, "one")
    await chat(socket, "two")
    assert len(fake.completions()) == 2
    await socket.close()


async def test_limits_are_per_user(alice, bob, conversation, provider, fake):
    await sync_to_async(set_limits)(alice, messages_per_minute=1)
    bobs = await Conversation.objects.acreate(owner=bob, provider=provider, model="fake-model")
    socket, _, _ = await open_socket(alice, conversation.code)
    await chat(socket, "alice's one")
    await socket.close()
    socket, _, _ = await open_socket(bob, bobs.code)
    await chat(socket, "bob is not limited by alice's use")
    await socket.close()


# -- accounts and models ---------------------------------------------------------------------------------


async def test_a_deactivated_account_cannot_send_on_an_open_socket(alice, conversation, fake):
    socket, _, _ = await open_socket(alice, conversation.code)
    await get_user_model().objects.filter(pk=alice.pk).aupdate(is_active=False)
    html = await refused(socket, message="hello?")
    assert "Your account is not active" in html
    assert await counts(conversation) == 0 and fake.completions() == []
    await socket.close()


async def test_a_model_the_user_may_not_use_is_refused(alice, conversation, fake):
    await sync_to_async(set_limits)(alice, allowed_models="fake-model-2\ngpt-*")
    socket, _, _ = await open_socket(alice, conversation.code)
    html = await refused(socket, message="hello")
    assert "Your account may not use the model “fake-model”. Pick another model: fake-model-2, gpt-*." in html
    assert await counts(conversation) == 0 and fake.completions() == []
    # The picker (another request) changes the model; the open socket uses the new one.
    await Conversation.objects.filter(pk=conversation.pk).aupdate(model="fake-model-2")
    await chat(socket, "hello again")
    assert fake.completions()[0].body["model"] == "fake-model-2"
    await socket.close()


def test_allowed_models_take_names_and_patterns():
    limits = quotas.Limits(allowed_models=["fake-model", "gpt-4o*"])
    assert quotas.model_allowed(limits, "fake-model")
    assert quotas.model_allowed(limits, "gpt-4o-mini")
    assert not quotas.model_allowed(limits, "fake-model-2")
    assert not quotas.model_allowed(limits, "gpt-3.5")
    assert quotas.model_allowed(quotas.Limits(), "anything")


def test_the_picker_offers_only_allowed_models(alice, conversation, fake):
    set_limits(alice, allowed_models="fake-model-2")
    client = login_client(alice)
    html = client.get(f"/c/{conversation.code}/models/").content.decode()
    assert '<option value="fake-model-2"' in html and '<option value="fake-model"' not in html
    conversation.refresh_from_db()
    assert conversation.model == "fake-model-2"  # moved off the model it may not use


def test_the_picker_refuses_a_model_that_is_not_allowed(alice, conversation, fake):
    set_limits(alice, allowed_models="fake-model")
    client = login_client(alice)
    html = client.post(f"/c/{conversation.code}/model/", {"model": "fake-model-2"}).content.decode()
    assert "Your account may not use the model “fake-model-2”." in html
    conversation.refresh_from_db()
    assert conversation.model == "fake-model"


def test_the_picker_says_so_when_no_model_is_allowed(alice, conversation, fake):
    set_limits(alice, allowed_models="something-else")
    html = login_client(alice).get(f"/c/{conversation.code}/models/").content.decode()
    assert "may not use any model of this provider" in html


def test_reset_times_are_where_the_limits_say(alice, settings):
    settings.QUOTA_TOKENS_PER_DAY = 10
    now = timezone.make_aware(datetime(2027, 3, 31, 22, 30))
    add_usage(alice, now.date(), 10, 0)
    refusal = quotas.check(alice, "fake-model", now=now)
    assert refusal.limit == "tokens_per_day"
    assert refusal.resets_at == timezone.make_aware(datetime(2027, 4, 1))
    assert "(in 1 hour, 30 minutes)" in refusal.message
    settings.QUOTA_TOKENS_PER_DAY = 0
    settings.QUOTA_TOKENS_PER_MONTH = 10
    refusal = quotas.check(alice, "fake-model", now=now)
    assert refusal.limit == "tokens_per_month" and refusal.resets_at == timezone.make_aware(datetime(2027, 4, 1))
    december = timezone.make_aware(datetime(2027, 12, 15, 12))
    add_usage(alice, december.date(), 10, 0)
    assert quotas.check(alice, "fake-model", now=december).resets_at == timezone.make_aware(datetime(2028, 1, 1))
