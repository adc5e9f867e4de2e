"""Several real Daphne processes: a tab on B follows and stops a generation in A; kill -9 mid-stream."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
import redis
from django.conf import settings
from django.test import Client
from websockets.sync.client import connect

from conversations.models import Conversation, Message
from conversations.rendering import render_html

from .browser.live_server import ARTIFACTS, LiveServer, database_url, free_port, wait_until_up
from .fake_provider import Stream, text_stream
from .frames import plain, replay

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def redis_url() -> str:
    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis reachable at {url} ({exc}): the multi-process test needs a shared channel layer")
    return url


Daphne = LiveServer  # it knows how to stop its process


def spawn_daphne(env: dict, name: str) -> Daphne:
    """A real Daphne process on the test database, with `env` added to its environment."""
    from django.db import connection

    port = free_port()
    full_env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict), "DEBUG": "True", **env}
    for unset in ("ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "SECRET_KEY"):
        full_env.pop(unset, None)
    connection.close()
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"daphne-{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"],
            cwd=settings.BASE_DIR,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Daphne(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    wait_until_up(server)
    return server


class Tab:
    """A browser tab's websocket, opened with the user's session cookie."""

    def __init__(self, server, session_key, code):
        self._stack = contextlib.ExitStack()
        self.socket = self._stack.enter_context(
            connect(
                server.url.replace("http://", "ws://") + f"/ws/c/{code}/",
                additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={session_key}", "Origin": server.url},
                open_timeout=10,
            )
        )
        self.frames: list[str] = []

    def send(self, **data):
        self.socket.send(json.dumps(data))

    def receive_until(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while not any(needle in frame for frame in self.frames):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no frame contained {needle!r}")
            try:
                self.frames.append(self.socket.recv(timeout=remaining))
            except TimeoutError:
                continue
        return "".join(self.frames)

    def html(self, message_id: int) -> str:
        """The reply's HTML as this tab's page has it (tests/frames.py swaps the frames in)."""
        return replay(self.frames, message_id)

    def text(self, message_id: int) -> str:
        return plain(self.html(message_id))

    def close(self):
        self._stack.close()


@pytest.fixture
def owner(transactional_db, alice, provider):
    client = Client()
    client.force_login(alice)
    conversation = Conversation.objects.create(owner=alice, provider=provider, model="fake-model")
    return client.session.session_key, conversation


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


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
