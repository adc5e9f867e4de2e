"""The shipped docs/nginx.conf in a real nginx before two Daphne processes: TLS, websockets, streaming, spreading."""

import contextlib
import http.client
import os
import pwd
import re
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings

from conversations.models import Message

from .browser.live_server import free_port
from .fake_provider import Stream, text_stream
from .frames import plain, replay
from .processes import Tab, redis_url, self_signed_certificate, spawn_daphne

NGINX = Path("/usr/sbin/nginx")
SHIPPED = Path(settings.BASE_DIR) / "docs" / "nginx.conf"
DONE = 'msg-assistant" data-status="complete"'  # a reply's final frame

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(
        not NGINX.exists(), reason="nginx is not installed at /usr/sbin/nginx (apt-get install nginx; .ci/run does)"
    ),
]

# What a distribution's nginx.conf holds around the shipped file (it goes in conf.d/), with every
# path inside the test's directory so that no privilege is needed.
MAIN_CONF = """\
user {user};
worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/chat.conf;
}}
"""


def render(text: str, replacements: dict[str, str]) -> str:
    """The shipped file with ports and paths changed: each one must be there exactly once."""
    for old, new in replacements.items():
        assert text.count(old) == 1, f"docs/nginx.conf should contain {old!r} once"
        text = text.replace(old, new)
    return text


@dataclass
class Nginx:
    https_port: int
    http_port: int
    tls: ssl.SSLContext
    log: Path

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def https(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.https_port, context=self.tls, timeout=10)


@contextlib.contextmanager
def running_nginx(tmp: Path, upstream_ports: list[int]):
    cert, key = self_signed_certificate(tmp)
    static = tmp / "static"
    static.mkdir()
    (static / "probe.txt").write_text("served by nginx from disk")
    https_port, http_port = free_port(), free_port()
    site = render(
        SHIPPED.read_text(),
        {
            "server 127.0.0.1:8001;": f"server 127.0.0.1:{upstream_ports[0]};",
            "server 127.0.0.1:8002;": f"server 127.0.0.1:{upstream_ports[1]};",
            "listen 80;": f"listen 127.0.0.1:{http_port};",
            "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
            "/etc/ssl/certs/chat.example.com.pem": str(cert),
            "/etc/ssl/private/chat.example.com.key": str(key),
            "/srv/chat/staticfiles/": f"{static}/",
        },
    )
    (tmp / "chat.conf").write_text(site)
    conf = tmp / "nginx.conf"
    conf.write_text(MAIN_CONF.format(tmp=tmp, user=pwd.getpwuid(os.geteuid()).pw_name))
    log = tmp / "nginx.out"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(NGINX), "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise AssertionError(f"nginx exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", https_port), timeout=1):
                break
            assert time.monotonic() < deadline, f"nginx did not listen within 10 s:\n{log.read_text()}"
            time.sleep(0.05)
        yield Nginx(https_port, http_port, ssl.create_default_context(cafile=str(cert)), tmp / "error.log")
    finally:
        process.terminate()  # SIGTERM: nginx's fast shutdown, master and workers
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class TlsTab(Tab):
    """A browser tab's websocket through nginx (wss://), with the session cookie of a login through nginx."""

    def __init__(self, proxy: Nginx, session_key: str, code):
        self._connect(f"wss://127.0.0.1:{proxy.https_port}/ws/c/{code}/", session_key, proxy.origin, ssl=proxy.tls)


def log_in_through(proxy: Nginx, username: str, password: str) -> str:
    """Sign in with the login form over https; return the session key.

    Django accepts the post only if the Origin the browser sent matches the scheme and host it
    sees: nginx must forward the Host with its port and X-Forwarded-Proto (BEHIND_TLS_PROXY=True).
    """
    connection = proxy.https()
    connection.request("GET", "/accounts/login/")
    page = connection.getresponse()
    body = page.read().decode()
    assert page.status == 200
    csrf_cookie = re.search(r"csrftoken=([^;]+)", page.getheader("Set-Cookie") or "")
    form_token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    assert csrf_cookie and form_token
    connection.request(
        "POST",
        "/accounts/login/",
        body=urlencode({"username": username, "password": password, "csrfmiddlewaretoken": form_token[1]}),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": proxy.origin,
            "Cookie": f"csrftoken={csrf_cookie[1]}",
        },
    )
    answer = connection.getresponse()
    answer.read()
    connection.close()
    assert answer.status == 302, f"the login through nginx was refused ({answer.status})"
    session = re.search(rf"{settings.SESSION_COOKIE_NAME}=([^;]+)", ", ".join(answer.headers.get_all("Set-Cookie")))
    assert session
    return session[1]


def socket_connects(server) -> int:
    """Websockets this Daphne process accepted, from its access log."""
    return server.log().count('"WSCONNECT /ws/c/')


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_the_shipped_config_streams_spreads_and_fails_over(owner, fake, tmp_path):
    url = redis_url()
    _, conversation = owner
    env = {
        "REDIS_URL": url,
        "OPENAI_BASE_URL": fake.base_url,
        "BEHIND_TLS_PROXY": "True",
        "PYTHONUNBUFFERED": "1",  # the access log reaches its file at once
    }
    a = spawn_daphne(env, "nginx-a")
    b = spawn_daphne(env, "nginx-b")
    tabs: list[Tab] = []
    try:
        with running_nginx(tmp_path, [port_of(a), port_of(b)]) as proxy:
            plain_http = http.client.HTTPConnection("127.0.0.1", proxy.http_port, timeout=10)
            plain_http.request("GET", "/accounts/login/")
            redirect = plain_http.getresponse()
            assert redirect.status == 301 and redirect.getheader("Location", "").startswith("https://")

            static = proxy.https()
            static.request("GET", "/static/probe.txt")
            assert static.getresponse().read() == b"served by nginx from disk"

            session_key = log_in_through(proxy, "alice", "alice-password-123")

            # A reply streams through nginx as it is made: its words arrive in many frames over the
            # 3 s the provider takes, not in one lump at the end (the app coalesces tokens into a
            # frame per pacer window, up to 0.5 s; nginx must add no buffering of its own).
            fake.push(Stream(text_stream([f"w{i} " for i in range(60)]), delay=0.05))
            first = TlsTab(proxy, session_key, conversation.code)
            tabs.append(first)
            first.send(message="count slowly")
            arrivals: list[float] = []
            deadline = time.monotonic() + 20
            while not any(DONE in frame for frame in first.frames):
                assert time.monotonic() < deadline, "the reply did not finish through nginx"
                with contextlib.suppress(TimeoutError):
                    first.frames.append(first.socket.recv(timeout=1))
                    arrivals.append(time.monotonic())
            reply = Message.objects.get(role="assistant")
            lengths = [len(plain(replay(first.frames[: i + 1], reply.pk))) for i in range(len(first.frames))]
            grew = [t for t, before, after in zip(arrivals, [0, *lengths[:-1]], lengths, strict=True) if after > before]
            assert len(grew) >= 4, f"the text came in {len(grew)} frame(s)"
            assert grew[-1] - grew[0] >= 1.5, f"the text came within {grew[-1] - grew[0]:.2f} s of a 3 s stream"
            assert first.text(reply.pk) == " ".join(f"w{i}" for i in range(60))

            # Two tabs open at once land on different processes (least_conn, shared by both workers).
            second = TlsTab(proxy, session_key, conversation.code)
            tabs.append(second)
            deadline = time.monotonic() + 5
            while (spread := (socket_connects(a), socket_connects(b))) != (1, 1):
                assert time.monotonic() < deadline, f"websockets accepted per process: {spread}"
                time.sleep(0.05)

            # One process stops: nginx sends the next tab to the other, and a chat works there.
            a.stop()
            first.close()
            third = TlsTab(proxy, session_key, conversation.code)
            tabs.append(third)
            fake.push(Stream(text_stream(["still ", "here"]), delay=0.01))
            third.send(message="anyone there?")
            third.receive_until("still here")
            assert socket_connects(b) == 2
    finally:
        for tab in tabs:
            with contextlib.suppress(Exception):
                tab.close()
        a.stop()
        b.stop()
