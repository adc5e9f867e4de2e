"""Start the site (one or several Daphne processes on one socket) and the bundled model when in use."""

import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from conversations.models import Message, Provider
from conversations.providers import bundled

STOP_TIMEOUT = 10.0  # seconds a child has to exit after SIGTERM before it is killed


def ipv4_listener(host: str, port: int) -> socket.socket | None:
    """A listening IPv4 socket on host:port that children inherit, or None when host has no IPv4 address.

    Daphne's --fd adopts the socket as IPv4 (Twisted's fd endpoint), so an IPv6-only host cannot be shared.
    """
    try:
        found = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror:
        return None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(found[0][4])
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise CommandError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def close_database_connections() -> None:
    """The parent only watches its children: it keeps no connection (nor a connection pool) open."""
    for connection in connections.all(initialized_only=True):
        connection.close()
        close_pool = getattr(connection, "close_pool", None)  # PostgreSQL with OPTIONS["pool"]
        if close_pool is not None:
            close_pool()


class Command(BaseCommand):
    help = (
        "Run the chat site with Daphne (--workers processes sharing one listening socket), starting the "
        "bundled local model when it is in use."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="Daphne processes serving the port (default: one per core when REDIS_URL is set, else 1).",
        )
        parser.add_argument("--no-model", action="store_true", help="Do not start the bundled model server.")

    def worker_count(self, workers: int | None) -> int:
        shared = bool(settings.REDIS_URL)  # without it the channel layer lives inside one process
        if workers is None:
            if shared:
                return os.cpu_count() or 1
            self.stdout.write("One Daphne process: several processes need a shared channel layer (set REDIS_URL).")
            return 1
        if workers < 1:
            raise CommandError("--workers must be at least 1.")
        if workers > 1 and not shared:
            raise CommandError(
                f"--workers {workers} needs a shared channel layer: set REDIS_URL. Without it each process "
                "sees only its own streams (a tab could not follow or stop a reply running in another)."
            )
        return workers

    def handle(self, *args, host, port, workers, no_model, **options):
        workers = self.worker_count(workers)
        listener = ipv4_listener(host, port)
        if listener is None and workers > 1:
            raise CommandError(f"--workers {workers} needs an IPv4 host (Daphne adopts only IPv4 sockets), not {host}.")
        Provider.sync_from_settings()
        stale = Message.objects.stale().mark_interrupted()
        if stale:
            self.stdout.write(f"Marked {stale} reply(ies) interrupted by an earlier stop.")
        use_model = not no_model and Provider.objects.enabled().filter(is_bundled=True).exists()
        close_database_connections()

        children: list[tuple[str, subprocess.Popen]] = []

        def stop_children():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave children behind
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            for _, child in children:
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT
            for _, child in children:
                try:
                    child.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()

        def on_stop_signal(*_):
            raise KeyboardInterrupt

        # SIGINT too: Python leaves it ignored when runchat starts in the background of a script,
        # and `kill -INT` must still stop everything.
        signal.signal(signal.SIGINT, on_stop_signal)
        signal.signal(signal.SIGTERM, on_stop_signal)
        try:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # Daphne's access log reaches the terminal as it happens
            if use_model:
                env["BUNDLED_MODEL_PORT"] = str(self.start_model(children))
            if listener is None:  # an IPv6 host, one process: Daphne binds it itself
                command = ["-b", host, "-p", str(port)]
                pass_fds: tuple[int, ...] = ()
            else:
                command = ["--fd", str(listener.fileno())]
                pass_fds = (listener.fileno(),)
            for number in range(1, workers + 1):
                daphne = subprocess.Popen(
                    [sys.executable, "-m", "daphne", *command, "chatsite.asgi:application"],
                    env=env,
                    pass_fds=pass_fds,
                )
                children.append((f"Daphne process {number}", daphne))
            if listener is not None:
                listener.close()  # the children hold the socket now
            pids = ", ".join(str(child.pid) for name, child in children if name.startswith("Daphne"))
            address = f"[{host}]" if ":" in host else host
            processes = "1 Daphne process (pid" if workers == 1 else f"{workers} Daphne processes (pids"
            self.stdout.write(
                self.style.SUCCESS(
                    f"Chat is running at http://{address}:{port}/ with {processes} {pids}) (Ctrl-C to stop)"
                )
            )
            self.watch(children)
        except KeyboardInterrupt:
            self.stdout.write("\nStopping ...")
        finally:
            if listener is not None:
                listener.close()
            stop_children()

    def start_model(self, children: list[tuple[str, subprocess.Popen]]) -> int:
        model_port = settings.BUNDLED_MODEL_PORT
        if not bundled.port_is_free(model_port):
            model_port = bundled.free_port()
            self.stdout.write(f"Port {settings.BUNDLED_MODEL_PORT} is taken; the bundled model uses {model_port}.")
        self.stdout.write(
            f"Starting the bundled model ({settings.BUNDLED_MODEL_ALIAS}) on http://127.0.0.1:{model_port}/v1 ..."
        )
        model = bundled.start(model_port, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        children.append(("The bundled model server", model))
        try:
            bundled.wait_until_ready(model_port, model)
        except bundled.BundledModelError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write("The bundled model is ready.")
        return model_port

    def watch(self, children: list[tuple[str, subprocess.Popen]]) -> None:
        """Return never: a child that exits on its own ends the command with an error (no restart).

        Restarting one process would hide a crash loop; a supervisor (systemd, a container runtime)
        restarts the whole command, which also reruns the start-up duties.
        """
        while True:
            for name, child in children:
                code = child.poll()
                if code is not None:
                    raise CommandError(
                        f"{name} (pid {child.pid}) {exit_description(code)} unexpectedly; stopping the others."
                    )
            time.sleep(0.2)
