"""Real processes for tests: the app's Daphne, a tab's websocket, a private Redis, a proxy a test can cut."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from websockets.sync.client import connect

from .browser.live_server import ARTIFACTS, LiveServer, database_url, free_port, wait_until_up
from .frames import Page, plain, replay

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
        self._connect(server.url.replace("http://", "ws://") + f"/ws/c/{code}/", session_key, server.url)

    def _connect(self, url: str, session_key: str, origin: str, **options):
        self._stack = contextlib.ExitStack()
        self.socket = self._stack.enter_context(
            connect(
                url,
                additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={session_key}", "Origin": origin},
                open_timeout=10,
                **options,
            )
        )
        self.frames: list[str] = []
        self._page, self._applied = Page(), 0  # the frames so far, applied (receive_until)

    def send(self, **data):
        self.socket.send(json.dumps(data))

    def receive_until(self, needle: str, timeout: float = 10.0) -> str:
        """Read frames until one contains `needle`, or the text of a reply as the page shows it does.

        A streaming reply's text comes in appended pieces, so a word can be split between two frames.
        """
        deadline = time.monotonic() + timeout
        while not self._shows(needle):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no frame contained {needle!r}")
            try:
                self.frames.append(self.socket.recv(timeout=remaining))
            except TimeoutError:
                continue
        return "".join(self.frames)

    def _shows(self, needle: str) -> bool:
        if any(needle in frame for frame in self.frames):
            return True
        for frame in self.frames[self._applied :]:
            with contextlib.suppress(AssertionError, KeyError, ValueError):  # frames the model does not follow
                self._page.apply(frame)
        self._applied = len(self.frames)
        return any(needle in plain(element.inner()) for element in self._page.texts.values())

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


class RedisServer:
    """A private redis-server on a free loopback port, which a test may kill and start again."""

    def __init__(self):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed: the Redis restart test starts one of its own")
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping():
                    return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    stop = kill


class TcpProxy:
    """A loopback TCP proxy to `upstream` that a test can cut (every connection dropped, none accepted) and restore."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            if listener is not self._listener:
                client.close()
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self):
        """The database 'goes down': open connections reset, new ones refused."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in its thread
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self):
        self.start()

    def stop(self):
        self.cut()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 (valid a day), made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test's TLS certificate (apt-get install openssl)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
