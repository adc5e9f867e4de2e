"""A real Daphne process on the test database, and a headless Chromium to drive it.

tests/browser/conftest.py imports the fixtures, so every browser test can ask for them.
Both are synchronous on purpose: Playwright's sync API refuses to run inside an asyncio loop.

`live_daphne` is function-scoped and built on `transactional_db`: the server process commits
to the same test database the test process sees, and it is stopped before pytest-django
flushes that database at the end of the test.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
ARTIFACTS = BASE_DIR / "test-artifacts"
STARTUP_TIMEOUT = 30.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        """Stop the Daphne process (SIGTERM, then SIGKILL after 10 s) and wait until it has exited."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def start(self, **env: str):
        """Start a new Daphne process on the same port and database (after `stop()`): a server restart.

        `env` adds or overrides environment variables of the new process. Its output is appended
        to the same log.
        """
        if self.process.poll() is None:
            raise RuntimeError("The server is still running; stop() it first")
        self.process = _spawn(self.port, {**self.env, **env}, self.log_path, append=True)
        wait_until_up(self)

    def restart(self, **env: str):
        self.stop()
        self.start(**env)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(settings_dict) -> str:
    """A DATABASE_URL pointing at the database this test process is using right now."""
    engine = settings_dict["ENGINE"]
    if engine == "django.db.backends.sqlite3":
        name = str(settings_dict["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise RuntimeError("A live server needs a file-based SQLite test database, not an in-memory one")
        return f"sqlite:///{name}"
    if engine.startswith("django.db.backends.postgresql"):
        user = quote(settings_dict.get("USER") or "", safe="")
        password = settings_dict.get("PASSWORD") or ""
        auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
        host = settings_dict.get("HOST") or "127.0.0.1"
        if host.startswith("/"):  # a Unix socket directory
            host = quote(host, safe="")
        port = settings_dict.get("PORT") or "5432"
        return f"postgres://{auth}{host}:{port}/{quote(settings_dict['NAME'], safe='')}"
    raise RuntimeError(f"No live-server support for the database engine {engine}")


def _spawn(port: int, env: dict[str, str], log_path: Path, *, append: bool = False) -> subprocess.Popen:
    log_file = open(log_path, "ab" if append else "wb")  # noqa: SIM115 (the child process writes to it)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"],
            cwd=BASE_DIR,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    finally:
        log_file.close()


def wait_until_up(server: LiveServer):
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"Daphne exited with {server.process.returncode}:\n{server.log()}")
        try:
            # Any HTTP answer will do (the login page is a plain 200).
            with urllib.request.urlopen(server.url + "/accounts/login/", timeout=2) as response:
                response.read()
            return
        except urllib.error.HTTPError:
            return
        except OSError as exc:  # connection refused, reset, timeout while it starts
            last_error = exc
            time.sleep(0.1)
    raise RuntimeError(f"Daphne did not answer within {STARTUP_TIMEOUT} s ({last_error}):\n{server.log()}")


@pytest.fixture
def live_daphne(request, transactional_db, fake):
    """Start Daphne on a free port, on the current test database, with the fake provider.

    Its output goes to test-artifacts/daphne-<test name>.log (kept, for debugging failures).
    A test can restart it on the same port with `live_daphne.stop()` then `live_daphne.start()`.
    """
    from django.db import connection

    port = free_port()
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        DATABASE_URL=database_url(connection.settings_dict),
        OPENAI_BASE_URL=fake.base_url,
        OPENAI_API_KEY="",
        DEBUG="True",
        PYTHONUNBUFFERED="1",
    )
    for name in ("ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "SECRET_KEY"):
        env.pop(name, None)  # the DEBUG defaults (127.0.0.1, no TLS) are what the browser needs
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    # Let the server's writes be visible to this process right away: close its connection so
    # it does not hold a read snapshot (SQLite WAL) across the test.
    connection.close()

    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"daphne-{re.sub(r'[^A-Za-z0-9_.-]+', '_', request.node.name)}.log"
    process = _spawn(port, env, log_path)
    server = LiveServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path, port=port, env=env)
    try:
        wait_until_up(server)
        yield server
    finally:
        server.stop()  # whichever process is current, after any restart


@pytest.fixture
def browser_page():
    """A fresh headless Chromium page (1280×800); everything is closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.set_default_timeout(10_000)
            page = context.new_page()
            yield page
            context.close()
        finally:
            browser.close()
