"""Several real Daphne processes: a tab on B follows and stops a generation in A; kill -9 mid-stream."""

import contextlib
import os
import signal
import time
import urllib.request

from django.conf import settings

from conversations.models import Message
from conversations.rendering import render_html

from .fake_provider import Stream, text_stream
from .processes import Tab, redis_url, spawn_daphne


def test_a_tab_on_another_process_follows_and_stops_the_generation(owner, fake, tmp_path):
    url = redis_url()
    session_key, conversation = owner
    env = {"REDIS_URL": url, "OPENAI_BASE_URL": fake.base_url}
    a = spawn_daphne(env, "process-a")
    b = spawn_daphne(env, "process-b")
    try:
        fake.push(Stream(text_stream([f"w{i} " for i in range(400)]), delay=0.02))
        on_a = Tab(a, session_key, conversation.code)
        on_a.send(message="count slowly")
        on_a.receive_until("w10 ")
        on_b = Tab(b, session_key, conversation.code)
        on_b.receive_until("w30 ")  # B shows the stream generated in A
        reply = Message.objects.get(role="assistant")
        assert on_b.text(reply.pk).startswith("w0 w1 w2 ")
        on_b.send(action="stop")
        on_a.receive_until('data-status="stopped"')
        on_b.receive_until('data-status="stopped"')
        assert fake.completions()[0].disconnected.wait(3)  # A closed the upstream request
        reply.refresh_from_db()
        assert reply.status == "stopped" and reply.content.startswith("w0 w1 w2 ")
        assert on_b.html(reply.pk) == render_html(reply.content)  # no gap, no duplicate, across processes
        on_a.close()
        on_b.close()
    finally:
        a.stop()
        b.stop()


def test_a_killed_process_leaves_an_interrupted_reply_with_its_last_checkpoint(owner, fake):
    session_key, conversation = owner
    env = {"OPENAI_BASE_URL": fake.base_url, "STALE_GENERATION_SECONDS": "2"}
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    a = spawn_daphne(env, "killed")
    fake.push(Stream(text_stream([f"w{i} " for i in range(500)]), delay=0.01))
    tab = Tab(a, session_key, conversation.code)
    tab.send(message="talk")
    tab.receive_until("w5 ")
    reply = Message.objects.get(role="assistant")
    samples = []  # (time, length of the text the tab had seen)
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        with contextlib.suppress(TimeoutError):
            tab.frames.append(tab.socket.recv(timeout=0.05))
        samples.append((time.monotonic(), len(tab.text(reply.pk))))
    os.kill(a.process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    a.process.wait(5)
    reply.refresh_from_db()
    assert reply.status == "streaming"  # nobody has noticed yet
    seen_a_second_before = max(length for t, length in samples if t <= killed_at - 1.2)
    assert len(reply.content) >= seen_a_second_before  # the checkpoint is at most about a second behind
    assert tab.text(reply.pk).startswith(reply.content.strip())

    b = spawn_daphne(env, "restarted")
    try:
        time.sleep(2.2)
        request = urllib.request.Request(
            f"{b.url}/c/{conversation.code}/", headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={session_key}"}
        )
        html = urllib.request.urlopen(request, timeout=10).read().decode()
        reply.refresh_from_db()
        assert reply.status == "interrupted" and reply.content
        assert 'data-status="interrupted"' in html and "Retry" in html
    finally:
        b.stop()
