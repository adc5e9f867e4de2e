"""Start the site (Daphne) and, when it is in use, the bundled model; Ctrl-C stops both."""

import os
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from conversations.models import Message, Provider
from conversations.providers import bundled


class Command(BaseCommand):
    help = "Run the chat site with Daphne, starting the bundled local model when it is in use."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-model", action="store_true", help="Do not start the bundled model server.")

    def handle(self, *args, host, port, no_model, **options):
        Provider.sync_from_settings()
        stale = Message.objects.stale().mark_interrupted()
        if stale:
            self.stdout.write(f"Marked {stale} reply(ies) interrupted by an earlier stop.")
        children: list[subprocess.Popen] = []

        def stop_children(*_):
            for child in children:
                if child.poll() is None:
                    child.terminate()
            for child in children:
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()

        signal.signal(signal.SIGTERM, lambda *a: (stop_children(), sys.exit(0)))
        try:
            env = os.environ.copy()
            if not no_model and Provider.objects.enabled().filter(is_bundled=True).exists():
                model_port = settings.BUNDLED_MODEL_PORT
                if not bundled.port_is_free(model_port):
                    model_port = bundled.free_port()
                    self.stdout.write(
                        f"Port {settings.BUNDLED_MODEL_PORT} is taken; the bundled model uses {model_port}."
                    )
                env["BUNDLED_MODEL_PORT"] = str(model_port)
                self.stdout.write(
                    f"Starting the bundled model ({settings.BUNDLED_MODEL_ALIAS}) "
                    f"on http://127.0.0.1:{model_port}/v1 ..."
                )
                model = bundled.start(model_port, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
                children.append(model)
                try:
                    bundled.wait_until_ready(model_port, model)
                except bundled.BundledModelError as exc:
                    raise CommandError(str(exc)) from exc
                self.stdout.write("The bundled model is ready.")
            self.stdout.write(self.style.SUCCESS(f"Chat is running at http://{host}:{port}/ (Ctrl-C to stop)"))
            daphne = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), "chatsite.asgi:application"],
                env=env,
            )
            children.append(daphne)
            daphne.wait()
        except KeyboardInterrupt:
            self.stdout.write("\nStopping ...")
        finally:
            stop_children()
