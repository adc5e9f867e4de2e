"""Usage accounting: per message, and per user, model and day in `Usage`, filled by real replies
from the fake provider; the user's own usage page and the admin's dashboard."""

# ruff: noqa: F811

import asyncio
import re
from datetime import date, timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db.models import Count, Sum
from django.utils import timezone

from conversations.accounts import usage
from conversations.generation.reply import Reply as Generation
from conversations.models import Conversation, Message, Usage

from .conftest import login_client, open_socket
from .fake_provider import Reply, Stream, chunk, sse, text_stream
from .personas import clients, fast_passwords, reviewer, staff, superuser  # noqa: F401

DONE = 'msg-assistant" data-status="complete"'


async def chat(socket, text, done=DONE):
    socket.frames.clear()
    await socket.send(message=text)
    return await socket.receive_until(done)


def usage_rows():
    return sorted(
        Usage.objects.values_list(
            "user__username", "day", "model", "provider_name", "prompt_tokens", "completion_tokens", "messages"
        )
    )


def totals_from_messages(user):
    replies = Message.objects.filter(conversation__owner=user, role="assistant")
    sums = replies.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
    return sums["p"] or 0, sums["c"] or 0, replies.count()


def per_model_from_messages():
    replies = Message.objects.filter(role="assistant").values("conversation__owner__username", "model")
    sums = replies.annotate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"), m=Count("pk")).order_by()
    return sorted((r["conversation__owner__username"], r["model"], r["p"], r["c"], r["m"]) for r in sums)


def totals_from_usage(user):
    rows = Usage.objects.filter(user=user)
    sums = rows.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"), m=Sum("messages"))
    return sums["p"] or 0, sums["c"] or 0, sums["m"] or 0


@pytest.mark.django_db(transaction=True)
async def test_usage_totals_match_the_messages(alice, bob, conversation, provider, fake):
    """Replies with reported usage, estimated usage, an error and a regeneration, in two models."""
    other = await Conversation.objects.acreate(owner=alice, provider=provider, model="fake-model-2")
    bobs = await Conversation.objects.acreate(owner=bob, provider=provider, model="fake-model")
    socket, _, _ = await open_socket(alice, conversation.code)
    fake.push(Stream(text_stream(["a", "b"], usage={"prompt_tokens": 100, "completion_tokens": 20})))
    await chat(socket, "reported")
    fake.push(Stream(text_stream(["no usage reported here"])))
    await chat(socket, "estimated")
    fake.push(Reply(500, b'{"error": {"message": "boom"}}'))
    await chat(socket, "fails", done='data-status="error"')
    reply = await Message.objects.filter(conversation=conversation, role="assistant", status="complete").alast()
    socket.frames.clear()
    await socket.send(action="regenerate", message_id=reply.pk)
    await socket.receive_until(DONE)
    await socket.close()
    socket, _, _ = await open_socket(alice, other.code)
    objs = [
        chunk("from model two"),
        chunk(finish="stop"),
        chunk(usage={"prompt_tokens": 3, "completion_tokens": 3}, choices=False),
    ]
    for obj in objs:
        obj["model"] = "fake-model-2"
    fake.push(Stream(sse(objs)))
    await chat(socket, "in another model")
    await socket.close()
    socket, _, _ = await open_socket(bob, bobs.code)
    await chat(socket, "bob's")
    await socket.close()

    assert len(fake.completions()) == 6
    for user in (alice, bob):
        assert await sync_to_async(totals_from_usage)(user) == await sync_to_async(totals_from_messages)(user)
    rows = await sync_to_async(usage_rows)()
    today = timezone.localdate()
    # One row per user and model (the model the provider reported, as saved on the message).
    assert [(r[0], r[1], r[2], r[3], r[6]) for r in rows] == [
        ("alice", today, "fake-model", "Fake", 4),  # reported, estimated, failed, regenerated
        ("alice", today, "fake-model-2", "Fake", 1),
        ("bob", today, "fake-model", "Fake", 1),
    ]
    assert await sync_to_async(per_model_from_messages)() == [(r[0], r[2], r[4], r[5], r[6]) for r in rows]
    first = rows[0]
    assert first[4] >= 100 and first[5] >= 20  # the reported figures are in there


@pytest.mark.django_db(transaction=True)
async def test_concurrent_replies_lose_no_counts(alice, provider, fake):
    """Replies finishing at the same moment add to the same row without losing each other's counts."""
    conversations = [
        await Conversation.objects.acreate(owner=alice, provider=provider, model="fake-model") for _ in range(5)
    ]
    sockets = [(await open_socket(alice, c.code))[0] for c in conversations]
    for socket in sockets:
        await socket.send(message="same time")
    await asyncio.gather(*(socket.receive_until(DONE) for socket in sockets))
    for socket in sockets:
        await socket.close()
    row = await Usage.objects.aget()
    assert row.messages == 5
    assert (row.prompt_tokens, row.completion_tokens) == (35, 5 * 4)  # 7 + "You said: same time"


@pytest.mark.django_db(transaction=True)
async def test_a_reply_is_counted_once_even_if_its_end_is_written_twice(alice, conversation):
    _question, reply = await sync_to_async(conversation.add_exchange)("hi", "fake-model")
    generation = Generation(conversation, reply)
    await generation.finish(Message.Status.COMPLETE)
    await generation.finish(Message.Status.ERROR, "crashed after saving")  # the crash path of a feed
    assert (await Usage.objects.aget()).messages == 1


@pytest.mark.django_db
def test_nothing_is_recorded_for_a_deleted_account(alice, provider):
    user_id = alice.pk
    alice.delete()
    usage.record_reply(user_id=user_id, provider_id=provider.pk, model="m", prompt_tokens=1, completion_tokens=1)
    assert not Usage.objects.exists()


@pytest.mark.django_db
def test_record_reply_adds_to_the_row_of_the_day(alice, provider):
    for prompt, completion in [(3, 4), (None, None), (10, 1)]:
        usage.record_reply(
            user_id=alice.pk, provider_id=provider.pk, model="m", prompt_tokens=prompt, completion_tokens=completion
        )
    usage.record_reply(user_id=alice.pk, provider_id=None, model="m", prompt_tokens=1, completion_tokens=1)
    assert usage_rows() == [
        ("alice", timezone.localdate(), "m", "", 1, 1, 1),
        ("alice", timezone.localdate(), "m", "Fake", 13, 5, 3),
    ]


# -- the user's usage page ----------------------------------------------------------------------------


@pytest.fixture
def history(alice, bob):
    today = timezone.localdate()
    rows = [
        (alice, today, "fake-model", 100, 50, 2),
        (alice, today, "fake-model-2", 10, 5, 1),
        (alice, today - timedelta(days=3), "fake-model", 1000, 500, 4),
        (alice, today - timedelta(days=400), "old-model", 7, 7, 1),
        (bob, today, "fake-model", 99999, 99999, 9),
    ]
    for user, day, model, p, c, m in rows:
        Usage.objects.create(user=user, day=day, model=model, prompt_tokens=p, completion_tokens=c, messages=m)
    return today


def row(html, row_id):
    match = re.search(rf'<tr id="{row_id}">(.*?)</tr>', html, re.S)
    return re.findall(r"<td>(\d+)</td>", match.group(1))


@pytest.mark.django_db
def test_the_account_page_shows_the_users_own_usage(alice_client, history):
    html = alice_client.get("/account/").content.decode()
    assert row(html, "usage-today") == ["3", "110", "55", "165"]
    assert row(html, "usage-all") == ["8", "1117", "562", "1679"]
    assert "99999" not in html  # bob's usage is bob's
    assert "old-model" in html  # per model, all time
    assert "<svg" in html and 'class="usage-bar"' in html
    assert html.count('class="usage-bar"') == 30
    three_days_ago = (history - timedelta(days=3)).isoformat()
    assert f"<th>{three_days_ago}</th><td>4</td><td>1000</td><td>500</td>" in html


@pytest.mark.django_db
def test_the_account_page_shows_the_limits_and_what_is_left(alice_client, alice, history, settings):
    settings.QUOTA_TOKENS_PER_DAY = 1000
    html = alice_client.get("/account/").content.decode()
    assert "1000 (835 left today)" in html


@pytest.mark.django_db
def test_the_account_page_needs_a_login(client):
    response = client.get("/account/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# -- the admin dashboard ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_dashboard_shows_totals_a_chart_and_the_top_users(clients, history):
    html = clients["superuser"].get("/admin/conversations/usage/").content.decode()
    assert re.search(r'id="total-tokens">(\d+)<', html).group(1) == str(165 + 1500 + 199998)
    assert re.search(r'id="total-replies">(\d+)<', html).group(1) == str(3 + 4 + 9)
    assert re.search(r'id="active-users">(\d+)<', html).group(1) == "2"
    assert html.count('class="usage-bar"') == 30
    assert "<script src=" not in html.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert html.index(">bob<") < html.index(">alice<")  # ordered by tokens
    assert "old-model" not in html  # outside the period
    year = clients["superuser"].get("/admin/conversations/usage/?days=365").content.decode()
    assert year.count('class="usage-bar"') == 365 and "old-model" not in year
    assert "http" not in "".join(re.findall(r'<script[^>]*src="([^"]*)"', year)).replace("/static/", "")


@pytest.mark.django_db
def test_the_dashboard_ignores_a_bad_period(clients, history):
    html = clients["superuser"].get("/admin/conversations/usage/?days=abc").content.decode()
    assert html.count('class="usage-bar"') == 30


@pytest.mark.django_db
def test_a_staff_member_with_the_view_usage_permission_sees_the_dashboard(staff, history):
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(Permission.objects.get(codename="view_usage"))
    assert login_client(staff).get("/admin/conversations/usage/").status_code == 200


def test_the_chart_scales_to_a_round_ceiling():
    days = [
        usage.Day(date(2027, 1, 1), usage.Totals(prompt_tokens=300, completion_tokens=100)),
        usage.Day(date(2027, 1, 2), usage.Totals()),
        usage.Day(date(2027, 1, 3), usage.Totals(prompt_tokens=700, completion_tokens=100)),
    ]
    chart = usage.chart(days, width=300, height=200)
    assert [t.label for t in chart.ticks] == ["0", "250", "500", "750", "1k"]
    first, empty, last = chart.bars
    assert empty.prompt_height == 0 and empty.completion_height == 0
    assert last.prompt_height + last.completion_height == pytest.approx(chart.plot_height * 0.8)
    assert first.prompt_height == pytest.approx(3 * first.completion_height)
    assert first.completion_y + first.completion_height == pytest.approx(first.prompt_y)  # stacked
    assert first.x < empty.x < last.x and last.x + last.width <= chart.right


def test_an_empty_chart_has_a_scale():
    chart = usage.chart([usage.Day(date(2027, 1, 1), usage.Totals())])
    assert chart.peak == 0 and chart.ticks[-1].label == "1"


def test_the_dashboard_model_is_registered_read_only():
    from django.contrib import admin

    model_admin = admin.site._registry[Usage]
    assert not model_admin.has_add_permission(None)
    assert not model_admin.has_change_permission(None)
    assert not model_admin.has_delete_permission(None)
