"""Blips at scale: Redis restarting mid-reply, a process killed under two tabs, PostgreSQL down across a reply's end.

Each runs real Daphne processes; a page is judged by what it ends up showing (every frame applied
as a browser would), and the database must hold the whole reply, saved complete.
"""

import os
import signal
import time

import pytest
from django.db import connection

from conversations.models import Message
from conversations.rendering import render_html

from .fake_provider import Stream, text_stream
from .frames import Page
from .processes import RedisServer, Tab, TcpProxy, redis_url, spawn_daphne, wait_for


def shown(tab: Tab, message_id: int) -> str:
    """The reply's HTML on the tab's page after every frame it got, the end included."""
    page = Page()
    for frame in tab.frames:
        page.apply(frame)
    return page.text_html(message_id)


def finished_on(tab: Tab, message_id: int, status: str, timeout: float = 15.0):
    tab.receive_until(f'<article id="msg-{message_id}" class="msg msg-assistant" data-status="{status}"', timeout)


def test_redis_restarting_mid_reply_loses_nothing(owner, fake):
    session_key, conversation = owner
    server = RedisServer().start()
    env = {"REDIS_URL": server.url, "OPENAI_BASE_URL": fake.base_url}
    a = spawn_daphne(env, "redis-a")
    b = spawn_daphne(env, "redis-b")
    try:
        words = [f"w{i} " for i in range(160)]
        fake.push(Stream(text_stream(words), delay=0.03))  # about 5 s
        on_a = Tab(a, session_key, conversation.code)
        on_a.send(message="keep talking")
        on_a.receive_until("w5 ")
        on_b = Tab(b, session_key, conversation.code)  # follows the reply generated in A, through Redis
        on_b.receive_until("w15 ")
        server.kill()  # Redis goes away mid-reply ...
        time.sleep(2)
        server.start()  # ... and comes back on the same port
        # A page opened right after the restart gets in at its first try, on either process (the
        # first subscription of a process used to fail on a connection of the old server).
        for process in (a, b):
            Tab(process, session_key, conversation.code).close()
        reply = Message.objects.get(role="assistant")
        wait_for(lambda: Message.objects.filter(pk=reply.pk).exclude(status="streaming").exists(), timeout=20)
        reply.refresh_from_db()
        assert reply.status == "complete" and reply.content.strip() == "".join(words).strip()
        for tab in (on_a, on_b):
            finished_on(tab, reply.pk, "complete")
            assert shown(tab, reply.pk) == render_html(reply.content)  # every page ends right
        # New chats work at once.
        fake.push(Stream(text_stream(["Back ", "again."]), delay=0.01))
        on_b.send(message="still there?")
        wait_for(lambda: Message.objects.filter(role="assistant", status="complete").count() == 2, timeout=10)
        second = Message.objects.filter(role="assistant").order_by("pk").last()
        finished_on(on_b, second.pk, "complete", timeout=10)
        assert second.content == "Back again."
        on_a.close()
        on_b.close()
    finally:
        a.stop()
        b.stop()
        server.stop()


def test_every_tab_learns_that_a_killed_process_left_its_reply_interrupted(owner, fake):
    session_key, conversation = owner
    env = {"REDIS_URL": redis_url(), "OPENAI_BASE_URL": fake.base_url, "STALE_GENERATION_SECONDS": "3"}
    a = spawn_daphne(env, "doomed")
    b = spawn_daphne(env, "survivor")
    try:
        fake.push(Stream(text_stream([f"w{i} " for i in range(500)]), delay=0.02))
        starter = Tab(a, session_key, conversation.code)
        starter.send(message="talk on")
        starter.receive_until("w5 ")
        first, second = Tab(b, session_key, conversation.code), Tab(b, session_key, conversation.code)
        first.receive_until("w100 ")  # past a checkpoint (one a second): the text so far is saved
        second.receive_until("w100 ")
        os.kill(a.process.pid, signal.SIGKILL)
        reply = Message.objects.get(role="assistant")
        # Whichever tab's watchdog marks it, both tabs are told.
        finished_on(first, reply.pk, "interrupted", timeout=20)
        finished_on(second, reply.pk, "interrupted", timeout=20)
        reply.refresh_from_db()
        assert reply.status == "interrupted" and reply.content.startswith("w0 w1 ")
        for tab in (first, second):
            assert shown(tab, reply.pk) == render_html(reply.content)
        first.close()
        second.close()
    finally:
        a.process.wait(5)
        b.stop()


def test_postgresql_down_across_the_end_of_a_reply_loses_nothing(owner, fake):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL=postgres://...): the test cuts the database's TCP connections")
    session_key, conversation = owner
    settings_dict = connection.settings_dict
    proxy = TcpProxy(settings_dict.get("HOST") or "127.0.0.1", int(settings_dict.get("PORT") or 5432)).start()
    user = settings_dict.get("USER") or "postgres"
    env = {
        "OPENAI_BASE_URL": fake.base_url,
        "DATABASE_URL": f"postgres://{user}@127.0.0.1:{proxy.port}/{settings_dict['NAME']}",
    }
    server = spawn_daphne(env, "database-outage")
    try:
        words = [f"w{i} " for i in range(100)]
        fake.push(Stream(text_stream(words), delay=0.03))  # about 3 s
        tab = Tab(server, session_key, conversation.code)
        tab.send(message="write it down")
        tab.receive_until("w70 ", timeout=15)
        proxy.cut()  # the database goes down before the reply ends ...
        time.sleep(4)
        reply = Message.objects.get(role="assistant")  # (this test process reaches PostgreSQL directly)
        assert reply.status == "streaming"  # the end could not be saved yet
        proxy.restore()  # ... and comes back
        finished_on(tab, reply.pk, "complete", timeout=30)
        reply.refresh_from_db()
        assert reply.status == "complete" and reply.content.strip() == "".join(words).strip()
        assert shown(tab, reply.pk) == render_html(reply.content)
        tab.close()
    finally:
        server.stop()
        proxy.stop()
