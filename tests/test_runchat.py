"""`manage.py runchat --workers 2`: two Daphne processes on one socket, a chat across them, Ctrl-C stops all."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from conversations.models import Message

from .browser.live_server import ARTIFACTS, LiveServer, database_url, free_port, wait_until_up
from .fake_provider import Stream, text_stream
from .processes import Tab, redis_url

DONE = 'msg-assistant" data-status="complete"'  # a reply's final frame

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets and processes in /proc")


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:  # the field after the state is the parent's pid
                found.add(int(stat.parent.name))
    return found


def socket_inodes(local_port: int, remote_port: int | None = None) -> set[str]:
    """Inodes of the IPv4 sockets on local_port (listening when remote_port is None, else connected to it)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if int(local.split(":")[1], 16) != local_port:
            continue
        listening = state == "0A"
        if (remote_port is None and listening) or (remote_port == int(remote.split(":")[1], 16)):
            inodes.add(inode)
    return inodes


def holders(inodes: set[str], pids: set[int]) -> set[int]:
    """Which of pids hold one of these sockets open."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    found = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in wanted:
                    found.add(pid)
    return found


def serving_process(tab: Tab, port: int, pids: set[int]) -> int:
    """The Daphne process at the other end of this tab's websocket."""
    client_port = tab.socket.socket.getsockname()[1]
    deadline = time.monotonic() + 5
    while not (found := holders(socket_inodes(port, client_port), pids)):
        assert time.monotonic() < deadline, f"no worker holds the connection from port {client_port}"
        time.sleep(0.05)
    (pid,) = found
    return pid


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_two_workers_share_one_port_chat_across_them_and_stop_on_ctrl_c(owner, fake):
    url = redis_url()
    session_key, conversation = owner
    from django.db import connection

    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict), "REDIS_URL": url}
    env.update(OPENAI_BASE_URL=fake.base_url, DEBUG="True", PYTHONUNBUFFERED="1")
    for unset in ("ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "SECRET_KEY"):
        env.pop(unset, None)
    connection.close()
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "runchat-workers.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runchat", "--workers", "2", "--no-model", "--port", str(port)],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path, port=port)
    workers: set[int] = set()
    tabs: list[Tab] = []
    try:
        wait_until_up(server)
        announced = re.search(r"with 2 Daphne processes \(pids (\d+), (\d+)\)", server.log())
        assert announced, server.log()
        workers = {int(announced[1]), int(announced[2])}
        assert children_of(process.pid) == workers
        for pid in workers:
            assert "daphne" in Path(f"/proc/{pid}/cmdline").read_text()
        # Both hold the one listening socket that runchat bound.
        assert holders(socket_inodes(port), workers) == workers

        # Websockets opened one after another land on both processes (the kernel hands each
        # connection to whichever worker accepts it first).
        by_worker: dict[int, Tab] = {}
        for _ in range(40):
            tab = Tab(server, session_key, conversation.code)
            tabs.append(tab)
            by_worker.setdefault(serving_process(tab, port, workers), tab)
            if len(by_worker) == 2:
                break
            time.sleep(0.05)
        assert set(by_worker) == workers, f"every connection went to {set(by_worker)}"

        # A chat end to end: sent on one process, it streams there and to the tab on the other.
        sender, follower = by_worker.values()
        fake.push(Stream(text_stream([f"w{i} " for i in range(30)]), delay=0.02))
        sender.send(message="count")
        sender.receive_until(DONE)
        follower.receive_until(DONE)
        reply = Message.objects.get(role="assistant")
        assert reply.status == "complete"
        assert sender.text(reply.pk) == follower.text(reply.pk) == " ".join(f"w{i}" for i in range(30))
        for tab in tabs:
            tab.close()

        # Ctrl-C (SIGINT to runchat alone, as `kill -INT` does) stops every child.
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0, server.log()
        assert not any(alive(pid) for pid in workers), "a Daphne worker outlived runchat"
        assert not socket_inodes(port), "something still listens on the port"
    finally:
        for tab in tabs:
            with contextlib.suppress(Exception):
                tab.close()
        if process.poll() is None:
            process.kill()
            process.wait(5)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
