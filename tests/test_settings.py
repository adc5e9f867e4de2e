"""Settings from the environment: strict booleans, a required key in production, a clean deploy check."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DEBUG": "False",
    "SECRET_KEY": "a-production-secret-key-that-is-long-and-random-enough-0123456789abcdef",
    "ALLOWED_HOSTS": "chat.example.com",
}


def manage(*args, **env):
    full_env = {**os.environ, **env}
    full_env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60
    )


def test_the_deploy_check_is_clean_with_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_it_refuses_to_start_without_a_secret_key_in_production():
    result = manage("check", DEBUG="False", SECRET_KEY="", ALLOWED_HOSTS="x")
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


def test_a_boolean_must_be_true_or_false():
    result = manage("check", DEBUG="yes")
    assert result.returncode != 0 and 'DEBUG must be "True" or "False"' in result.stderr


def test_static_files_are_served_with_debug_off(tmp_path):
    static_root = tmp_path / "static"
    env = {**PRODUCTION, "ALLOWED_HOSTS": "testserver"}
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='chatsite.settings'; django.setup();"
        f"from django.conf import settings; settings.STATIC_ROOT={str(static_root)!r};"
        "from django.core.management import call_command;"
        "call_command('collectstatic', interactive=False, verbosity=0);"
        "from whitenoise.middleware import WhiteNoiseMiddleware;"
        "from django.templatetags.static import static;"
        "from django.test import Client;"
        "url = static('css/app.css');"
        "r = Client().get(url, secure=True); print(url, r.status_code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    url, status = result.stdout.split()
    assert url.startswith("/static/css/app.") and url != "/static/css/app.css"  # hashed, cacheable name
    assert status == "200"
