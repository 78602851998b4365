"""Settings, read from the environment.

Production is the default: ``SECRET_KEY`` must be set, ``DEBUG`` is off and cookies
are secure. ``DJANGO_DEBUG=1`` is development mode: a throw-away secret key, debug
pages and plain-HTTP cookies. See the README's "Configuration" section for every
variable.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.utils.csp import CSP

from project.config import (
    ConfigError,
    data_dir,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_number,
    env_time_zone,
    redis_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ConfigError(
            "SECRET_KEY is not set: set it to a long random string, "
            "or set DJANGO_DEBUG=1 for development mode"
        )
    SECRET_KEY = "development-only-" + "x" * 40

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
_BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
if _BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Served over HTTPS only (on behind a TLS proxy): plain HTTP is redirected, and
# browsers are told to use HTTPS for HSTS_SECONDS (Strict-Transport-Security).
HTTPS_ONLY = env_bool("HTTPS_ONLY", _BEHIND_TLS_PROXY)
SECURE_SSL_REDIRECT = HTTPS_ONLY
SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 31_536_000) if HTTPS_ONLY else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# The pages load scripts and styles from their own origin only, and have no
# inline script (their JSON configuration is data, which CSP does not run).
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    # The pages' small stylesheet comes inside the page, with this request's nonce.
    "style-src": [CSP.SELF, CSP.NONCE],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Before "channels", so that its runworker command is the one that runs.
    "retrying_consumers",
    "channels",
    "realtime",
    # Login throttling (failed attempts are kept in the database).
    "axes",
    # This site's own deployment checks.
    "project",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    # Pages show payloads and errors: no shared or on-disk caches keep them.
    "project.middleware.NoStoreMiddleware",
    # Last, as django-axes asks: it answers a locked-out login with HTTP 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.csp",
            ],
        },
    },
]

# Database: DATABASE_URL (PostgreSQL in production), else SQLite in DATA_DIR.
# SQLite is tuned for several worker processes writing at once: WAL lets readers
# and one writer work together, and IMMEDIATE takes the write lock up front so
# concurrent writers wait on the busy timeout instead of failing as "locked".
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}
# Workers touch the database several times per task; reconnecting each time
# costs more than the work. Health checks drop dead connections.
_CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", 60)
try:
    DATABASES = {
        "default": dj_database_url.parse(
            os.environ.get("DATABASE_URL")
            or f"sqlite:///{data_dir(BASE_DIR) / 'db.sqlite3'}",
            conn_max_age=_CONN_MAX_AGE,
            conn_health_checks=True,
        )
    }
except ValueError as err:
    raise ConfigError(f"DATABASE_URL is not a valid database URL: {err}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        **SQLITE_OPTIONS,
        **DATABASES["default"].get("OPTIONS", {}),
    }
    # A file, not memory: end-to-end tests share it with real processes.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(DATABASES["default"]["NAME"]).with_name("test-db.sqlite3"))
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer: Redis through channels-redis.
# Unset, the private Redis of a `make run` on the same DATA_DIR (so that the
# README's `manage.py shell` rings its workers), else the local default.
REDIS_URL = redis_url(data_dir(BASE_DIR))
REDIS_CONNECT_TIMEOUT = env_number("REDIS_CONNECT_TIMEOUT", 10)
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 sets a 5 s socket timeout that races channels-redis's 5 s
            # BZPOPMIN and crashes idle workers; blocking reads must not time out.
            "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
            "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "asgi"),
            "capacity": env_int("CHANNEL_CAPACITY", 100, minimum=1),
        },
    }
}

# Django's task framework (django.tasks): @task functions run on Channels
# workers, each queue a worker channel (see README, "Using Django's task
# framework").
TASKS = {
    "default": {
        "BACKEND": "retrying_consumers.tasks_backend.ChannelsBackend",
        "QUEUES": ["default"],
    }
}

# Websocket connections one user may keep open on one server process.
REALTIME_MAX_SOCKETS_PER_USER = env_int("REALTIME_MAX_SOCKETS_PER_USER", 20, minimum=1)

# The worker channels that the bundled Procfile's runworker processes serve.
WORKER_CHANNELS = env_list("WORKER_CHANNELS", ["realtime-ping", "examples", "default"])

_VALIDATORS = "django.contrib.auth.password_validation"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"{_VALIDATORS}.UserAttributeSimilarityValidator"},
    {"NAME": f"{_VALIDATORS}.MinimumLengthValidator"},
    {"NAME": f"{_VALIDATORS}.CommonPasswordValidator"},
    {"NAME": f"{_VALIDATORS}.NumericPasswordValidator"},
]
# Login throttling: after LOGIN_FAILURE_LIMIT wrong passwords for one user
# from one address, that pair is locked out for LOGIN_LOCKOUT_MINUTES (a right
# password then fails too); a successful login resets the count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env_bool("LOGIN_THROTTLING", True)
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_time_zone("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Made when it is the default, so that WhiteNoise does not warn at every start.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or data_dir(BASE_DIR, "static"))
# Daphne serves no static files; WhiteNoise does, straight from the apps'
# static folders, so no collectstatic step is needed to run.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOG_LEVEL = env_choice(
    "LOG_LEVEL",
    "INFO",
    ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    "a log level",
)
# "text": readable key=value lines; "json": one JSON object per line.
LOG_FORMAT = env_choice("LOG_FORMAT", "text", ["text", "json"], "a log format")
# Django's default logging gave the "django" loggers a plain-text console
# handler of their own in development mode (each record printed twice, once
# not as JSON), and mailed ADMINS every ERROR, each failed @task included.
# Here every record is written once, by "console"; ADMINS get Django's mail
# for server errors (HTTP 500, security) as before, and about dead tasks only
# through NOTIFY_DEAD's summaries.
LOGGING_CONFIG = "retrying_consumers.logformat.configure_logging"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
        "not_tasks": {
            "()": "retrying_consumers.logformat.ExceptLoggers",
            "names": ["django.tasks"],
        },
    },
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "retrying_consumers.logformat.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
        "mail_admins": {
            "level": "ERROR",
            "filters": ["require_debug_false", "not_tasks"],
            "class": "django.utils.log.AdminEmailHandler",
        },
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        # Replaces Django's handlers; records go on to the root's "console".
        "django": {"handlers": ["mail_admins"], "level": "INFO"},
        # runserver's request lines (its 500s are mailed by django.request).
        "django.server": {
            "handlers": ["console"],
            "level": "INFO",
            "propagate": False,
        },
        "django.tasks": {"level": LOG_LEVEL},
        "retrying_consumers": {"level": LOG_LEVEL},
        "realtime": {"level": LOG_LEVEL},
        "django.channels": {"level": LOG_LEVEL},
    },
}

# Operations: retention in days (unset: keep), dead-task mail, the metrics token.
RETRYING_CONSUMERS = {
    "NOTIFY_DEAD": env_bool("NOTIFY_DEAD", False),
    "METRICS_TOKEN": os.environ.get("METRICS_TOKEN") or None,
    **{
        # At most 100 years, the longest the library takes.
        f"PURGE_{status}_AFTER": (
            env_number(f"PURGE_{status}_DAYS", 0, maximum=36500) * 86400 or None
        )
        for status in ("SUCCEEDED", "DEAD", "CANCELLED")
    },
}
# Dead-task mails go to ADMINS (comma-separated addresses) through this server.
ADMINS = env_list("ADMINS", [])
SERVER_EMAIL = os.environ.get("SERVER_EMAIL", "root@localhost")
MAILERS = {
    "default": {
        "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "OPTIONS": {
            "host": os.environ.get("EMAIL_HOST", "localhost"),
            "port": env_int("EMAIL_PORT", 25, minimum=1, maximum=65535),
            "username": os.environ.get("EMAIL_HOST_USER", ""),
            "password": os.environ.get("EMAIL_HOST_PASSWORD", ""),
            "use_tls": env_bool("EMAIL_USE_TLS", False),
            "timeout": 30,
        },
    }
}
