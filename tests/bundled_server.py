"""The real bundled model (llama-cpp-python's server + SmolLM2-135M-Instruct) on a free port."""

import socket
import subprocess

import pytest

from conversations.providers import bundled


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def bundled_model_port():
    try:
        bundled.model_path()
    except bundled.BundledModelError as exc:
        pytest.skip(f"bundled model not installed: {exc}")
    port = free_port()
    process = bundled.start(port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bundled.wait_until_ready(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def bundled_provider(db, bundled_model_port, settings):
    from conversations.models import Provider

    settings.BUNDLED_MODEL_URL = f"http://127.0.0.1:{bundled_model_port}/v1"
    return Provider.objects.create(
        name="Bundled SmolLM2",
        base_url=settings.BUNDLED_MODEL_URL,
        is_bundled=True,
        is_default=True,
        default_model=settings.BUNDLED_MODEL_ALIAS,
        context_length=settings.BUNDLED_MODEL_CONTEXT,
    )
