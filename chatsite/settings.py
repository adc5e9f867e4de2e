"""Settings for the chat site: one file, driven by the environment, with working defaults.

Every variable is listed in the README's configuration table.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    """Read a strict boolean: anything but "True"/"False" is a configuration error."""
    value = os.environ.get(name, default)
    if value not in ("True", "False"):
        raise ImproperlyConfigured(f'{name} must be "True" or "False", not {value!r}')
    return value == "True"


def _envnumber(name: str, default: float, kind: type, what: str):
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be {what}, not {value!r}") from None


def envint(name: str, default: int) -> int:
    return _envnumber(name, default, int, "an integer")


def envfloat(name: str, default: float) -> float:
    return _envnumber(name, default, float, "a number")


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = envbool("DEBUG", "True")

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is False")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production-0123456789abcdef"

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "template_partials",
    "conversations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",  # the language cookie, then Accept-Language
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "conversations.i18n.UserLanguageMiddleware",  # a signed-in user's saved language wins
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: a SQLite file by default; DATABASE_URL (e.g. postgres://...) for anything bigger.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql") and envbool("DATABASE_POOL", "True"):
    # psycopg's connection pool, one per process. Without it every request (and every database call
    # of a websocket, which Channels wraps in close_old_connections) opens a new PostgreSQL connection
    # (persistent connections, CONN_MAX_AGE > 0, are unsafe under ASGI). A Daphne process holds one
    # connection for its websockets and generations (their database work runs on one thread) plus one
    # per HTTP request in flight; past DATABASE_POOL_MAX a request waits for a free one. Size it so
    # that processes x DATABASE_POOL_MAX stays under PostgreSQL's max_connections (100 by default).
    pool_min = envint("DATABASE_POOL_MIN", 2)
    pool_max = envint("DATABASE_POOL_MAX", 10)
    if not 0 <= pool_min <= pool_max or pool_max < 1:
        raise ImproperlyConfigured(
            f"DATABASE_POOL_MIN ({pool_min}) and DATABASE_POOL_MAX ({pool_max}) need 0 <= MIN <= MAX and MAX >= 1"
        )
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django refuses a pool with persistent connections
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": pool_min, "max_size": pool_max}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Many writers at once (one per streaming reply): WAL lets readers run beside the
    # writer, IMMEDIATE takes the write lock up front so transactions queue on the busy
    # timeout instead of failing with "database is locked" on upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Live-server tests run Daphne in another process, which must see the test database.
    (BASE_DIR / "var").mkdir(exist_ok=True)
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-db-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# How long (seconds) a thread may hold the GIL while another waits (Python's default is 0.005). A
# server process runs its event loop in one thread and its database work in another, which waits
# for the GIL after every statement: at 5 ms, a burst of 200 sends queued 2-3 s longer on the
# database thread (docs/performance.md). chatsite/asgi.py applies it.
GIL_SWITCH_INTERVAL = envfloat("GIL_SWITCH_INTERVAL", 0.001)
if not 0 < GIL_SWITCH_INTERVAL <= 1:
    raise ImproperlyConfigured(f"GIL_SWITCH_INTERVAL must be between 0 and 1 second, not {GIL_SWITCH_INTERVAL}")

REDIS_URL = os.environ.get("REDIS_URL", "")
# Messages one channel (a page's socket, a generation's control channel) may hold before the layer
# drops one: deltas are coalesced, so a page that keeps up never holds more than a few.
CHANNEL_CAPACITY = envint("CHANNEL_CAPACITY", 5000)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Redis pub/sub: a group message is one PUBLISH whatever the group's size, and each process
            # fans it out to its own sockets, so there is no shared per-process list to fill up (the
            # list-based layer capped every socket of a process together and dropped deltas silently).
            # A message published while Redis is down is lost: pages find out from the sequence
            # numbers and the final frame, and the database stays the truth.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        # redis-py caps a pool at 100 connections unless told otherwise.
                        "max_connections": envint("REDIS_MAX_CONNECTIONS", 1000),
                        "socket_connect_timeout": 2,
                        "socket_keepalive": True,
                        "health_check_interval": 10,
                        "retry_on_timeout": True,
                    }
                ],
            },
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "chatsite.layers.ProcessChannelLayer", "CONFIG": {"capacity": CHANNEL_CAPACITY}}
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
# English and Simplified Chinese: from the language switcher (saved per user), else Accept-Language.
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
# The compiled catalogue (locale/zh_Hans/LC_MESSAGES/django.mo) is committed: no gettext needed to run.
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Security: secure defaults whenever DEBUG is off; each can be relaxed from the environment
# (e.g. SECURE_SSL_REDIRECT=False behind a proxy that already redirects).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if envbool("BEHIND_TLS_PROXY", "False") else None
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", str(not DEBUG))
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", str(not DEBUG))
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", str(not DEBUG))
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", str(not DEBUG))
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "False")
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# HSTS preload is a submission to browser vendors that only the operator can decide on.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

# Providers. With OPENAI_BASE_URL unset and no provider in the admin, the bundled model is used.
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "").rstrip("/")
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
BUNDLED_MODEL_HOST = "127.0.0.1"
BUNDLED_MODEL_PORT = envint("BUNDLED_MODEL_PORT", 8079)
BUNDLED_MODEL_URL = f"http://{BUNDLED_MODEL_HOST}:{BUNDLED_MODEL_PORT}/v1"
BUNDLED_MODEL_ALIAS = "SmolLM2-135M-Instruct"
BUNDLED_MODEL_CONTEXT = 2048

LLM_CONNECT_TIMEOUT = envint("LLM_CONNECT_TIMEOUT", 10)
# Longest silence allowed between two bytes of a reply (first token included).
LLM_READ_TIMEOUT = envint("LLM_READ_TIMEOUT", 120)
MODELS_CACHE_SECONDS = envint("MODELS_CACHE_SECONDS", 60)
MAX_MESSAGE_CHARS = envint("MAX_MESSAGE_CHARS", 32000)
# Seconds between database checkpoints of a streaming reply (DESIGN rule 5).
CHECKPOINT_SECONDS = 1.0
# A streaming message whose heartbeat is older than this belongs to a dead process.
STALE_GENERATION_SECONDS = envint("STALE_GENERATION_SECONDS", 8)

# Accounts: "open" (anyone signs up), "closed" (only admins create accounts) or "approval" (new
# accounts stay inactive until an admin activates them).
SIGNUP_MODE = os.environ.get("SIGNUP_MODE", "open")
if SIGNUP_MODE not in ("open", "closed", "approval"):
    raise ImproperlyConfigured(f'SIGNUP_MODE must be "open", "closed" or "approval", not {SIGNUP_MODE!r}')
# Default per-user limits (0: no limit); each account can override them in the admin (Profile).
QUOTA_TOKENS_PER_DAY = envint("QUOTA_TOKENS_PER_DAY", 0)
QUOTA_TOKENS_PER_MONTH = envint("QUOTA_TOKENS_PER_MONTH", 0)
QUOTA_MESSAGES_PER_MINUTE = envint("QUOTA_MESSAGES_PER_MINUTE", 0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "conversations": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO"), "propagate": False},
    },
}
