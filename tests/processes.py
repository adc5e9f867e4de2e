"""Real Daphne processes of the app for tests: spawn one on the test database, open a tab's websocket on it."""

import contextlib
import json
import os
import subprocess
import sys
import time

import pytest
import redis
from django.conf import settings
from websockets.sync.client import connect

from .browser.live_server import ARTIFACTS, LiveServer, database_url, free_port, wait_until_up
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


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")
